// virtio-net with its data path in the host kernel (vhost-net, /dev/vhost-net): --net
// tap=NAME,vhost=on. This process keeps the register window and the config space (MAC, link
// status, MTU); at DRIVER_OK it gives the kernel the guest RAM's layout, each ring's address,
// kick eventfd (the KVM ioeventfd of the queue's notify) and call eventfd (a KVM irqfd: on the
// device's line, or over virtio-pci the queue's MSI-X vector's), and the TAP. From then on frames
// move between the rings and the TAP in a kernel thread: no frame and no notification passes
// through this process.
//
// The guest is untrusted here too: rings must lie inside one guest memory region (else the
// device is not started and needs a reset), and a ring the kernel finds malformed is stopped
// by it and reported on the queue's error eventfd, which sets DEVICE_NEEDS_RESET with one
// log line. One queue pair (no VIRTIO_NET_F_MQ: its control queue would be served here).
//
// Threads: start and stop run in the calls the transport makes with its lock held (a vCPU's
// Status or QueueReady write); each is a handful of ioctls that do not block. The event loop
// watches the error eventfds.
#pragma once

#include <array>
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

class VhostNet final : public ExternalQueueDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  // Claims the vhost device for this process (SET_OWNER) and reads what it offers. Throws
  // UserError when it cannot serve a virtIO 1.x device.
  VhostNet(VhostNetOptions options, std::unique_ptr<VhostNetKernel> kernel,
           std::shared_ptr<TapBackend> tap, const GuestMemory& memory);
  ~VhostNet() override;

  // Watches the queues' error eventfds (on the loop thread).
  void watch(EventLoop& loop);

  std::string name() const override { return options_.name; }
  uint32_t device_id() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  uint32_t config_size() const override;
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  void reset() override;
  void queue_reset(uint16_t index) override;

  uint64_t transport_features() const override;
  bool start_queues(VirtioTransport& transport, uint64_t features,
                    std::span<const Virtqueue> queues, std::string& why) override;

 private:
  void stop_queue(uint32_t index);   // lock held
  void queue_error(uint32_t index);  // loop thread

  const VhostNetOptions options_;
  const std::unique_ptr<VhostNetKernel> kernel_;
  const std::shared_ptr<TapBackend> tap_;
  const GuestMemory& memory_;
  uint64_t kernel_features_ = 0;
  std::array<UniqueFd, 2> error_fds_;  // the kernel signals a queue it stopped on bad input

  std::mutex mutex_;  // started_, failed_, transport_ (vCPU threads vs the loop thread)
  std::array<bool, 2> started_{};
  bool failed_ = false;
  VirtioTransport* transport_ = nullptr;
  EventLoop* loop_ = nullptr;
};

}  // namespace libvmm
