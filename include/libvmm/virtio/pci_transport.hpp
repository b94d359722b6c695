// The virtIO 1.2 PCI transport, modern only (spec §4.1): a PCI function (vendor 0x1af4, device
// 0x1040 + virtIO device ID, revision 1) whose vendor-specific capabilities point at four
// register blocks in BAR 0: common configuration, notifications, ISR status and the device's
// configuration space; and MSI-X (BAR 1) with a vector per queue and one for configuration
// changes, or INTx where the driver enables no MSI-X; and the VIRTIO_PCI_CAP_PCI_CFG window
// (§4.1.4.9), through which a driver that cannot map BAR 0 (firmware) reaches its registers by
// configuration accesses alone. No legacy (0.9.5) interface.
//
// Queues served elsewhere (ExternalQueues: vhost-user, vhost-net) are handed over at DRIVER_OK.
// The server signals a call eventfd per queue: where the MSI sink delivers vectors directly
// (an irqfd per vector, detached while the guest masks it), the eventfd of the queue's MSI-X
// vector, so its interrupts reach the guest without this process; else one the machine relays
// to external_used(). Either way the guest's masking and pending bits hold.
//
// Bus Master Enable (command register bit 2, PCI 3.0 §6.2.2): while the guest keeps it clear the
// function makes no memory requests: no ring is read or written and no MSI-X message is sent;
// notifications wait, and every enabled queue is looked at again when the bit comes on. Linux
// clears it before kexec, so the next kernel's memory is not written by a device the previous
// one left running. Queues served elsewhere are not stopped (see README, virtio-pci).
//
// Locking: see virtio_device.hpp. BAR accesses come from any vCPU thread; notify() from the
// event loop thread (the notify ioeventfds). The configuration space has its own lock
// (PciFunction), taken after the transport's, never before it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "libvmm/core/irq.hpp"
#include "libvmm/pci/msix.hpp"
#include "libvmm/pci/pci_function.hpp"
#include "libvmm/virtio/virtio_device.hpp"
#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {

class GuestMemory;

class VirtioPciTransport final : public pci::PciFunction, public VirtioTransport {
 public:
  static constexpr uint16_t kVendorId = 0x1af4;
  static constexpr uint16_t kDeviceIdBase = 0x1040;
  // BAR 0: the register blocks.
  static constexpr unsigned kRegisterBar = 0;
  static constexpr uint64_t kRegisterBarSize = 0x4000;
  static constexpr uint64_t kCommonOffset = 0x0000;
  static constexpr uint64_t kCommonSize = 0x38;
  static constexpr uint64_t kIsrOffset = 0x1000;
  static constexpr uint64_t kDeviceConfigOffset = 0x2000;
  static constexpr uint64_t kDeviceConfigMax = 0x1000;
  static constexpr uint64_t kNotifyOffset = 0x3000;
  static constexpr uint32_t kNotifyMultiplier = 4;  // queue n notifies at kNotifyOffset + 4 n
  // BAR 1: the MSI-X table and pending bits.
  static constexpr unsigned kMsixBar = 1;
  static constexpr uint64_t kMsixBarSize = 0x1000;
  static constexpr uint64_t kMsixPbaOffset = 0x800;

  // The MSI-X vectors a transport for `device` has: one per queue and one for configuration
  // changes (at most 64).
  static uint16_t msix_vectors(const VirtioDevice& device);

  // `msi`: where MSI-X messages go; `intx`: the INTx line (INTA#), or null for MSI-X only.
  // Throws std::invalid_argument for a device that breaks the VirtioDevice contract.
  VirtioPciTransport(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory,
                     std::shared_ptr<pci::MsiSink> msi, std::shared_ptr<IrqLine> intx);
  ~VirtioPciTransport() override;  // pauses the device's I/O for good
  // Gives a transport made without one its INTx line (INTA#): where the machine wires the
  // lines only once every device is placed. Before the guest runs.
  void set_intx(std::shared_ptr<IrqLine> intx);

  // PciFunction.
  std::string name() const override;
  void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) override;
  void bar_moved(unsigned bar, std::optional<pci::BarMapping> old,
                 std::optional<pci::BarMapping> now) override;

  // The machine routes guest writes at notify_address(base, n) to a KVM ioeventfd per queue
  // (any length, no data match) and calls notify(n) when it fires. When the guest moves BAR 0,
  // `on_register_bar_moved(old, now)` moves them (nullopt: BAR 0 does not decode).
  static constexpr uint64_t notify_address(uint64_t bar_base, uint16_t queue) {
    return bar_base + kNotifyOffset + uint64_t{kNotifyMultiplier} * queue;
  }
  void set_register_bar_listener(
      std::function<void(std::optional<uint64_t>, std::optional<uint64_t>)> listener);
  void notify(uint32_t queue_index);
  uint16_t queue_count() const { return static_cast<uint16_t>(queues_.size()); }
  // How the machine has notify(index) called again later (the queue's notify eventfd); a
  // notify write that reaches BAR 0 (no ioeventfd caught it) goes through it too.
  void set_renotify(std::function<bool(uint16_t)> renotify) { renotify_ = std::move(renotify); }

  // VirtioTransport, for the device.
  void signal_used(uint16_t index) override;
  void signal_config_change() override;
  bool with_queues(const std::function<void(std::span<Virtqueue>)>& fn) override;
  bool renotify(uint16_t index) override { return renotify_ && renotify_(index); }
  void device_failed(const std::string& why) override;

  // Queues served elsewhere: the eventfds the machine made for them (kick: the queue's notify
  // ioeventfd; call: relayed to external_used()), one pair per queue. Before the guest runs.
  void set_external_eventfds(std::vector<QueueEventfds> fds);
  // The server used buffers of queue `index` and asked for an interrupt through the relayed
  // call eventfd. Any thread but the device's calls.
  void external_used(uint16_t index);

 protected:
  void config_written(uint32_t offset, uint32_t size) override;
  void config_write_done(uint32_t offset, uint32_t size) override;
  void config_reading(uint32_t offset, uint32_t size) override;
  bool intercept_config_read(uint32_t offset, std::span<uint8_t> data) override;
  bool intercept_config_write(uint32_t offset, std::span<const uint8_t> data) override;

 private:
  void common_read(uint64_t offset, std::span<uint8_t> data);  // helpers run under mutex_
  void common_write(uint64_t offset, std::span<const uint8_t> data);
  void write_status(uint8_t value);
  void write_queue_enable(uint16_t value);
  uint16_t accept_vector(uint16_t vector) const;
  void notify_locked(uint32_t queue_index);
  void reset_device();
  bool driver_live() const;  // DRIVER_OK, neither NEEDS_RESET nor FAILED
  bool live() const;         // and Bus Master Enable: the device may use its queues
  void check_queues();
  void set_needs_reset(const std::string& why);
  void interrupt(uint16_t vector, uint8_t isr_bit);
  // `change` (to the ISR or INTx Disable) and the INTx line set to what they say now, as one
  // step (intx_mutex_): a line raised after the ISR was read and cleared on another thread
  // stayed high with the ISR 0, an interrupt storm nobody would claim.
  void update_intx(const std::function<void()>& change);
  Virtqueue* selected_queue(const char* field);
  // The PCI_CFG window: whether an access falls in pci_cfg_data, and the BAR access its
  // cap.bar, cap.offset and cap.length describe (false, with a log line, when they do not
  // describe one a driver may make).
  bool in_window(uint32_t offset, size_t size) const;
  struct WindowTarget {
    unsigned bar = 0;
    uint64_t offset = 0;
    uint32_t length = 0;
  };
  WindowTarget window_target_locked() const;  // the configuration lock held
  bool window_target_ok(const WindowTarget& target, const char* access, const char* outcome);

  const std::shared_ptr<VirtioDevice> device_;
  ExternalQueues* const external_;  // the device's, when something else serves its queues
  std::vector<QueueEventfds> external_fds_;
  std::shared_ptr<IrqLine> intx_;  // set before the guest runs
  const std::string name_;
  const uint64_t offered_features_;
  const uint32_t config_size_;
  pci::MsixTable msix_;
  uint32_t msix_cap_ = 0;
  uint32_t window_cap_ = 0;  // the VIRTIO_PCI_CAP_PCI_CFG capability (struct virtio_pci_cfg_cap)
  std::function<bool(uint16_t)> renotify_;
  std::function<void(std::optional<uint64_t>, std::optional<uint64_t>)> bar_listener_;

  std::mutex mutex_;  // registers, queues, and every call into the device
  std::vector<Virtqueue> queues_;
  std::vector<uint16_t> queue_vectors_;
  std::atomic<uint8_t> status_{0};
  std::atomic<uint16_t> config_vector_{pci::MsixTable::kNoVector};  // read by any thread
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  bool driver_features_beyond_64_ = false;
  uint16_t queue_select_ = 0;
  std::atomic<uint8_t> isr_{0};
  std::atomic<uint8_t> config_generation_{0};
  std::atomic<bool> intx_disabled_{false};
  std::atomic<bool> bus_master_{false};         // as the device acts on it (set under mutex_)
  std::atomic<bool> bus_master_wanted_{false};  // the command register's bit, as last written
  // MSI-X vectors signalled while Bus Master Enable was off, sent when it comes on (a message is
  // a memory write the bit forbids, not an event to lose). bus_master_ turns on under this lock.
  std::mutex held_mutex_;
  std::vector<bool> held_vectors_;
  std::mutex intx_mutex_;    // isr_'s changes with the line (update_intx)
  bool intx_level_ = false;  // the line as last set (under intx_mutex_): changes only cost a call
};

}  // namespace libvmm
