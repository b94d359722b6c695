// MSI-X (PCI 3.0 §6.8.2): the capability in configuration space, the vector table and the
// pending bit array a function exposes in its BARs, and the delivery of a vector as a message
// (address, data) to the machine's interrupt controller (an MsiSink: KVM on a real VM, a
// recorder in tests). Thread-safe: the table is accessed from vCPU threads while devices send
// vectors from the event loop or their I/O threads.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "libvmm/pci/config_space.hpp"

namespace libvmm::pci {

// Where message-signalled interrupts go. A sink serves one table when it routes by vector.
class MsiSink {
 public:
  virtual ~MsiSink() = default;
  // Any thread: delivers one message. The sink validates the address (a guest may program any).
  virtual void send(uint64_t address, uint32_t data) = 0;
  // Sinks that route each vector ahead of time (a KVM GSI route and an irqfd per vector)
  // override these two; by default a vector is its message.
  // The guest wrote vector `vector`'s entry and it is unmasked: (address, data) is what its
  // next deliveries carry (called on the writing thread, before any delivery of that message).
  virtual void vector_programmed(uint16_t vector, uint64_t address, uint32_t data) {
    static_cast<void>(vector);
    static_cast<void>(address);
    static_cast<void>(data);
  }
  // Any thread: delivers vector `vector`, whose entry holds (address, data).
  virtual void send_vector(uint16_t vector, uint64_t address, uint32_t data) {
    static_cast<void>(vector);
    send(address, data);
  }

  // Direct delivery, for functions whose device signals its vectors itself (VFIO: the host
  // kernel writes an eventfd), past notify() and this process. A sink that offers it gives
  // vector `vector` an eventfd (-1: none, the function then calls notify() as usual); the
  // function reports each change of that vector's state (MsixTable::state) with
  // direct_state(), and reads its pending bit with direct_pending(). While a vector is not
  // deliverable, the signals it gets are held pending, and delivered once it is.
  virtual int direct_eventfd(uint16_t vector) {
    static_cast<void>(vector);
    return -1;
  }
  virtual void direct_state(uint16_t vector, bool deliverable, uint64_t address, uint32_t data) {
    static_cast<void>(vector);
    static_cast<void>(deliverable);
    static_cast<void>(address);
    static_cast<void>(data);
  }
  virtual bool direct_pending(uint16_t vector) {
    static_cast<void>(vector);
    return false;
  }
};

class MsixTable {
 public:
  static constexpr uint32_t kEntrySize = 16;
  static constexpr uint16_t kMaxVectors = 2048;
  static constexpr uint16_t kNoVector = 0xffff;  // virtIO's VIRTIO_MSI_NO_VECTOR

  // Throws std::invalid_argument for 0 or more than kMaxVectors vectors, or no sink.
  // `direct`: the table itself tells a sink that delivers directly (MsiSink::direct_eventfd)
  // every change of each vector's state and reads its pending bits into the PBA, so that
  // something other than notify() may signal the vectors' eventfds (a vhost back-end); a
  // function that tracks the states itself (VFIO) leaves it off.
  MsixTable(uint16_t vectors, std::shared_ptr<MsiSink> sink, bool direct = false);

  // Adds the capability to `config` (table and PBA in BARs, at 8-byte aligned offsets) and
  // returns its offset. The function passes control writes on with control_written().
  uint32_t add_capability(ConfigSpace& config, unsigned table_bar, uint32_t table_offset,
                          unsigned pba_bar, uint32_t pba_offset);
  uint16_t vectors() const { return static_cast<uint16_t>(entries_.size()); }
  uint64_t table_size() const { return uint64_t{kEntrySize} * entries_.size(); }
  uint64_t pba_size() const { return (entries_.size() + 63) / 64 * 8; }

  // The guest wrote the capability's Message Control: enable and function mask. Unmasking
  // delivers what is pending.
  void control_written(uint16_t control);
  bool enabled() const;

  // Guest accesses to the table and the PBA, at offsets within them: 4- or 8-byte aligned
  // accesses; others read 0 and write nothing (`why` says why; then false).
  bool table_read(uint64_t offset, std::span<uint8_t> data, std::string& why);
  bool table_write(uint64_t offset, std::span<const uint8_t> data, std::string& why);
  bool pba_read(uint64_t offset, std::span<uint8_t> data, std::string& why);

  // Sends `vector` now, or marks it pending while it or the function is masked. False when
  // MSI-X is disabled or there is no such vector (nothing is sent).
  bool notify(uint16_t vector);
  bool pending(uint16_t vector) const;
  // A vector as the guest has it now: deliverable (MSI-X enabled, neither the function nor the
  // vector masked) and its message. nullopt for no such vector.
  struct VectorState {
    bool deliverable = false;
    uint64_t address = 0;
    uint32_t data = 0;
    bool operator==(const VectorState&) const = default;
  };
  std::optional<VectorState> state(uint16_t vector) const;

  // Power-on state: disabled, every vector masked, nothing pending.
  void reset();
  // Forgets the messages held while masked (a device reset: they were the old driver's).
  void clear_pending();

  // A direct table's: the eventfd that signals `vector` straight to the guest where the sink
  // offers one (MsiSink::direct_eventfd), else -1.
  int direct_eventfd(uint16_t vector) const { return direct_ ? sink_->direct_eventfd(vector) : -1; }

 private:
  struct Entry {
    uint32_t address_low = 0;
    uint32_t address_high = 0;
    uint32_t data = 0;
    uint32_t control = 1;  // bit 0: masked
  };
  struct Message {
    uint16_t vector;
    uint64_t address;
    uint32_t data;
  };
  VectorState state_locked(const Entry& e) const;
  void deliver_pending_locked(std::vector<Message>& out);
  // Direct sinks: the vectors whose state changed since last reported.
  void changed_states_locked(std::vector<std::pair<uint16_t, VectorState>>& out);
  void report(const std::vector<std::pair<uint16_t, VectorState>>& changed);
  void send_all(const std::vector<Message>& messages);

  const std::shared_ptr<MsiSink> sink_;
  const bool direct_;
  mutable std::mutex mutex_;
  // Held by a table or control write from its change to its report (before mutex_): two vCPUs
  // changing one vector could otherwise report its states in the reverse order, leaving the
  // sink's irqfd attached to a masked vector (or detached from a live one) for good. notify()
  // holds it shared from reading the entry to sending its message, so that a mask or a new
  // message that a write made (and the guest's read after it flushed) never sees the old one
  // go out after it.
  std::shared_mutex report_mutex_;
  std::vector<Entry> entries_;
  std::vector<bool> pending_;
  std::vector<VectorState> reported_;  // direct sinks: what the sink was told last
  bool enabled_ = false;
  bool function_masked_ = false;
};

}  // namespace libvmm::pci
