// The kernel's vhost ioctls (<linux/vhost.h>, <linux/vhost_types.h>) restated for C++: those
// headers pull in <linux/virtio_ring.h>, whose inline C does not compile as C++. The layouts
// and request numbers are the kernel's; tests/unit/support/vhost_abi.c compares them with the C
// headers'.
#pragma once

#include <sys/ioctl.h>

#include <cstdint>

namespace libvmm::vhost_kernel {

struct MemoryRegion {  // struct vhost_memory_region
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t flags_padding = 0;
};
struct MemoryHeader {  // struct vhost_memory, without its trailing regions[]
  uint32_t nregions = 0;
  uint32_t padding = 0;
};
struct VringState {  // struct vhost_vring_state
  uint32_t index = 0;
  uint32_t num = 0;
};
struct VringFile {  // struct vhost_vring_file; fd -1 detaches
  uint32_t index = 0;
  int32_t fd = -1;
};
struct VringAddr {  // struct vhost_vring_addr: this process's addresses of the three rings
  uint32_t index = 0;
  uint32_t flags = 0;
  uint64_t desc_user_addr = 0;
  uint64_t used_user_addr = 0;
  uint64_t avail_user_addr = 0;
  uint64_t log_guest_addr = 0;
};

constexpr unsigned kType = 0xAF;  // VHOST_VIRTIO
constexpr unsigned long kGetFeatures = _IOR(kType, 0x00, uint64_t);
constexpr unsigned long kSetFeatures = _IOW(kType, 0x00, uint64_t);
constexpr unsigned long kSetOwner = _IO(kType, 0x01);
constexpr unsigned long kSetMemTable = _IOW(kType, 0x03, MemoryHeader);
constexpr unsigned long kSetVringNum = _IOW(kType, 0x10, VringState);
constexpr unsigned long kSetVringAddr = _IOW(kType, 0x11, VringAddr);
constexpr unsigned long kSetVringBase = _IOW(kType, 0x12, VringState);
constexpr unsigned long kGetVringBase = _IOWR(kType, 0x12, VringState);
constexpr unsigned long kSetVringKick = _IOW(kType, 0x20, VringFile);
constexpr unsigned long kSetVringCall = _IOW(kType, 0x21, VringFile);
constexpr unsigned long kSetVringErr = _IOW(kType, 0x22, VringFile);
// How long (µs) the kernel's worker keeps polling a ring it drained before it sleeps again.
constexpr unsigned long kSetVringBusyloopTimeout = _IOW(kType, 0x23, VringState);
constexpr unsigned long kNetSetBackend = _IOW(kType, 0x30, VringFile);

// VHOST_NET_F_VIRTIO_NET_HDR: the kernel adds and strips the virtio-net header itself.
constexpr unsigned kNetFeatureVirtioNetHeader = 27;

}  // namespace libvmm::vhost_kernel
