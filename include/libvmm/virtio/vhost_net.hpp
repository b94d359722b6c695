// virtio-net with its data path in the host kernel (vhost-net, /dev/vhost-net): --net
// tap=NAME,vhost=on[,num_queues=N]. This process keeps the register window, the config space
// (MAC, link status, MTU, pairs) and, with more than one queue pair, the control queue; at
// DRIVER_OK it gives the kernel the guest RAM's layout, each ring's address, kick eventfd (the
// KVM ioeventfd of the queue's notify) and call eventfd (a KVM irqfd: on the device's line, or
// over virtio-pci the queue's MSI-X vector's), and the TAP. From then on frames move between the
// rings and the TAP in a kernel thread: no frame and no notification passes through this process.
//
// Multiqueue (VIRTIO_NET_F_MQ): each pair has its own /dev/vhost-net (its rings 0 and 1) and its
// own queue of a multiqueue TAP. The driver says on the control queue how many pairs it uses
// (VQ_PAIRS_SET, served here on the event loop); the TAP queues of the others are detached so
// the host steers no frame to a ring nobody fills.
//
// The guest is untrusted here too: rings must lie inside one guest memory region (else the
// device is not started and needs a reset), and a ring the kernel finds malformed is stopped
// by it and reported on the queue's error eventfd, which sets DEVICE_NEEDS_RESET with one
// log line. Malformed control commands get VIRTIO_NET_ERR and a rate-limited log line.
//
// Threads: start and stop run in the calls the transport makes with its lock held (a vCPU's
// Status or QueueReady write); each is a handful of ioctls that do not block. The event loop
// watches the error eventfds and the control queue, and attaches or detaches TAP queues.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "libvmm/core/unique_fd.hpp"
#include "libvmm/core/vhost_kernel_abi.hpp"
#include "libvmm/virtio/external_queue_device.hpp"
#include "libvmm/virtio/net_control.hpp"

namespace libvmm {

class EventLoop;
class GuestMemory;
class TapBackend;

// A refused vhost ioctl: "VHOST_SET_MEM_TABLE: Bad address".
class VhostKernelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The kernel's vhost-net character device (<linux/vhost.h>), one call per ioctl, so tests can
// stand in for the kernel. Each call throws VhostKernelError when the kernel refuses.
class VhostNetKernel {
 public:
  virtual ~VhostNetKernel() = default;
  virtual void set_owner() = 0;
  virtual uint64_t get_features() = 0;
  virtual void set_features(uint64_t features) = 0;
  virtual void set_mem_table(std::span<const vhost_kernel::MemoryRegion> regions) = 0;
  virtual void set_vring_num(uint32_t index, uint32_t num) = 0;
  virtual void set_vring_base(uint32_t index, uint32_t base) = 0;
  virtual uint32_t get_vring_base(uint32_t index) = 0;
  virtual void set_vring_addr(const vhost_kernel::VringAddr& addr) = 0;
  virtual void set_vring_kick(uint32_t index, int fd) = 0;
  virtual void set_vring_call(uint32_t index, int fd) = 0;
  virtual void set_vring_err(uint32_t index, int fd) = 0;
  // The TAP whose frames queue `index` moves; -1 detaches it (stops the ring).
  virtual void set_backend(uint32_t index, int fd) = 0;
  // How long the kernel polls ring `index` (and, for receive, the TAP) after draining it.
  virtual void set_vring_busyloop_timeout(uint32_t index, uint32_t us) = 0;
};

// /dev/vhost-net, opened. Throws UserError saying what is missing: the device (load the
// vhost_net module) or the permission to open it.
std::unique_ptr<VhostNetKernel> open_vhost_net();

struct VhostNetOptions {
  std::string name = "vhost-net0";  // for log lines and errors
  std::array<uint8_t, 6> mac{};
  uint16_t mtu = 1500;
  // poll_us=N: the kernel's worker polls each drained ring for up to N µs before it sleeps and
  // the driver must kick again (VHOST_SET_VRING_BUSYLOOP_TIMEOUT); 0, the kernel's default,
  // leaves it alone.
  uint32_t poll_us = 0;
};

// One queue pair's share of the host: its own vhost-net device and its queue of the TAP.
struct VhostNetPair {
  std::unique_ptr<VhostNetKernel> kernel;
  std::shared_ptr<TapBackend> tap;
};

class VhostNet final : public ExternalQueueDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kControlQueueSize = 64;
  static constexpr size_t kMaxQueuePairs = 16;
  // Claims each pair's vhost device for this process (SET_OWNER) and reads what it offers. Throws
  // UserError when one cannot serve a virtIO 1.x device, or for no pair or too many.
  VhostNet(VhostNetOptions options, std::vector<VhostNetPair> pairs, const GuestMemory& memory);
  ~VhostNet() override;

  // Watches the queues' error eventfds (on the loop thread); the control queue's notify from
  // DRIVER_OK on.
  void watch(EventLoop& loop);
  // How many pairs the driver uses (1 until it says otherwise on the control queue).
  size_t active_pairs();

  std::string name() const override { return options_.name; }
  uint32_t device_id() const override;
  uint64_t device_features() const override;
  std::span<const FeatureRequirement> feature_requirements() const override {
    return net_feature_requirements();
  }
  std::vector<uint16_t> queue_max_sizes() const override;
  uint32_t config_size() const override;
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  void reset() override;
  void queue_reset(uint16_t index) override;

  uint64_t transport_features() const override;
  bool start_queues(VirtioTransport& transport, uint64_t features,
                    std::span<const Virtqueue> queues, std::string& why) override;

 private:
  struct Pair {
    std::unique_ptr<VhostNetKernel> kernel;
    std::shared_ptr<TapBackend> tap;
    std::array<bool, 2> started{};  // receive, transmit: handed to the kernel
  };
  size_t queue_count() const;        // queue_max_sizes().size()
  uint16_t control_queue() const;    // lock held: net_control_queue_index() of this device
  void stop_queue(uint32_t index);   // lock held
  void queue_error(uint32_t index);  // loop thread
  // Lock held: the pairs the driver uses; their TAP queues attached on the loop thread.
  void set_active_pairs(size_t n);

  const VhostNetOptions options_;
  std::vector<Pair> pairs_;
  const GuestMemory& memory_;
  uint64_t kernel_features_ = 0;
  std::vector<UniqueFd> error_fds_;  // per data queue: the kernel signals one it stopped

  std::mutex mutex_;  // what follows, between vCPU threads and the loop thread
  uint64_t features_ = 0;
  size_t active_pairs_ = 1;
  bool failed_ = false;
  VirtioTransport* transport_ = nullptr;
  EventLoop* loop_ = nullptr;

  NetControlServer control_;  // with more than one pair
};

}  // namespace libvmm
