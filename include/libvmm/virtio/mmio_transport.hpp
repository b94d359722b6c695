// The virtIO 1.2 MMIO transport, version 2 register layout (spec §4.2.2): the register window
// through which the guest's driver discovers a device, negotiates features, places the
// queues, and exchanges notifications and interrupts with it. No legacy (version 1) interface.
//
// Locking: see virtio_device.hpp. Register accesses come from any vCPU thread; notify() from
// the event loop thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/virtio_device.hpp"
#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {

class GuestMemory;

class VirtioMmioTransport final : public BusDevice, public VirtioTransport {
 public:
  static constexpr uint64_t kWindowSize = 0x200;     // registers, then config space from 0x100
  static constexpr uint32_t kVendorId = 0x4d4d564c;  // "LVMM" in guest byte order

  // Throws std::invalid_argument for a device that breaks the VirtioDevice contract (queue
  // sizes, config space larger than the window) or a missing interrupt line.
  VirtioMmioTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                      std::shared_ptr<IrqLine> irq);
  // Pauses the device's I/O (VirtioDevice::pause_io) for good before the queues go.
  ~VirtioMmioTransport() override;
  VirtioMmioTransport(const VirtioMmioTransport&) = delete;
  VirtioMmioTransport& operator=(const VirtioMmioTransport&) = delete;

  // BusDevice: the register window, attached on the MMIO bus with size kWindowSize.
  std::string name() const override;
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // The machine may route 4-byte guest writes at notify_offset() to a KVM ioeventfd per queue
  // (datamatch = queue index) and call notify(index) when it fires, sparing a vCPU exit.
  static constexpr uint64_t notify_offset() { return 0x50; }
  void notify(uint32_t queue_index);
  uint16_t queue_count() const { return static_cast<uint16_t>(queues_.size()); }
  // How the machine has notify(index) called again later, after other pending host work
  // (e.g. by signalling the queue's notify eventfd); see VirtioTransport::renotify(). Set it
  // before the guest runs. Without it, devices drain busy queues in one go. A QueueNotify
  // write that reaches the transport (no ioeventfd caught it) goes through it too.
  void set_renotify(std::function<bool(uint16_t)> renotify) { renotify_ = std::move(renotify); }

  // VirtioTransport, for the device.
  void signal_used(uint16_t index) override;
  void signal_config_change() override;
  bool with_queues(const std::function<void(std::span<Virtqueue>)>& fn) override;
  bool renotify(uint16_t index) override { return renotify_ && renotify_(index); }
  void device_failed(const std::string& why) override;

 private:
  uint32_t read_register(uint64_t offset);  // the read_*/write_* helpers run under mutex_
  void write_register(uint64_t offset, uint32_t value);
  void read_config(uint64_t offset, std::span<uint8_t> data);
  void write_config(uint64_t offset, std::span<const uint8_t> data);
  void write_status(uint32_t value);
  void write_queue_ready(uint32_t value);
  void write_queue_address(uint64_t offset, uint32_t value);
  void notify_locked(uint32_t queue_index);
  void reset_device();
  bool live() const;    // DRIVER_OK, and neither NEEDS_RESET nor FAILED
  void check_queues();  // after the device ran: a queue the driver broke needs a device reset
  void set_needs_reset(const std::string& why);
  void raise(uint32_t interrupt_bit);
  Virtqueue* selected_queue(const char* register_name);
  void guest_error(const std::string& message);  // rate-limited log line

  const std::shared_ptr<VirtioDevice> device_;
  const std::shared_ptr<IrqLine> irq_;
  ExternalQueues* const external_;  // the device's, when another process serves its queues
  const std::string name_;
  const uint32_t device_id_;
  const uint64_t offered_features_;
  const uint32_t config_size_;
  std::function<bool(uint16_t)> renotify_;

  std::mutex mutex_;  // registers, queues, and every call into the device
  std::vector<Virtqueue> queues_;
  std::atomic<uint32_t> status_{0};  // written under mutex_; read by signal_config_change()
  uint32_t device_features_sel_ = 0;
  uint32_t driver_features_sel_ = 0;
  uint64_t driver_features_ = 0;
  bool driver_features_beyond_64_ = false;  // a non-zero write to DriverFeatures with sel > 1
  uint32_t queue_sel_ = 0;
  std::atomic<uint32_t> interrupt_status_{0};
  std::atomic<uint32_t> config_generation_{0};
  log::RateLimited guest_errors_{"guest errors", 32};
};

}  // namespace libvmm
