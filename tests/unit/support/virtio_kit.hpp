// The shared virtIO test kit, for the device unit tests and the fuzzers: guest memory, the
// driver's side of a split virtqueue, a driver of the MMIO register window, and fakes of what a
// device talks to (its transport and interrupt line).
//
// No GoogleTest in here, so that the fuzzers link it too: a broken test setup (a ring or buffer
// outside guest memory, a queue that refuses its configuration) throws std::runtime_error,
// which GoogleTest reports as a failure of the test that did it. Not thread-safe unless said.
#pragma once

#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_ring.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/pci/pci_function.hpp"
#include "libvmm/virtio/virtio_device.hpp"
#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm::test {

// Guest memory for a test: RAM at guest-physical 0 and, if asked, a read-only region (a ROM)
// where devices must not write.
class TestMemory : public GuestMemory {
 public:
  explicit TestMemory(uint64_t ram_size, uint64_t rom_base = 0, uint64_t rom_size = 0);
  // RAM in a memfd without seals (a foreign front-end's, which may shrink it under a back-end).
  struct Unsealed {};
  TestMemory(uint64_t ram_size, Unsealed);

  uint64_t ram_size() const { return ram_size_; }
  // Copies of guest memory; throw if a byte is not guest memory.
  std::vector<uint8_t> bytes(uint64_t gpa, uint64_t len) const;
  std::string text(uint64_t gpa, uint64_t len) const;

 private:
  uint64_t ram_size_;
};

// One buffer of a descriptor chain, as the driver describes it.
struct Buffer {
  uint64_t gpa = 0;
  uint32_t len = 0;
  bool writable = false;  // VRING_DESC_F_WRITE: the device writes it
};

// Where the three parts of a split ring are, and where the driver's buffers start.
struct RingLayout {
  uint64_t desc = 0;
  uint64_t avail = 0;
  uint64_t used = 0;
  uint64_t buffers = 0;

  // The parts 4 KiB apart from `base` (room for 256 entries each), then the buffers.
  static RingLayout at(uint64_t base) {
    return {base, base + 0x1000, base + 0x2000, base + 0x3000};
  }
};

// The driver's side of one split virtqueue (spec §2.7) in guest memory: it writes descriptors
// and the available ring and reads the used ring, the way a guest's driver does, with ring
// indices as single 16-bit stores and loads. Chains go into consecutive descriptors from the
// first, wrapping around the table; buffers are allocated upwards from layout.buffers.
class DriverRing {
 public:
  DriverRing(const GuestMemory& memory, uint16_t size, RingLayout layout);

  uint16_t size() const { return size_; }
  const RingLayout& layout() const { return layout_; }
  // Gives `queue` this ring's size and addresses and enables it with `features`.
  void configure(Virtqueue& queue, uint64_t features = 0) const;
  // The driver sets the ring up afresh, as after a device reset: the descriptor table and both
  // rings zeroed, descriptors and the available index from 0 again. Buffers stay allocated.
  void restart();

  // --- Buffers
  // `len` bytes of guest memory for a buffer, aligned to `align`.
  uint64_t alloc(uint64_t len, uint64_t align = 16);
  // A buffer holding `bytes`.
  uint64_t place(std::span<const uint8_t> bytes, uint64_t align = 16);

  // --- Descriptors and the available ring
  // Writes descriptor `index` of the ring's table, or of the indirect table at `table`.
  void set_desc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags = 0, uint16_t next = 0,
                std::optional<uint64_t> table = std::nullopt) const;
  // Links `buffers` into a chain in the next free descriptors, publishes it, returns its head.
  uint16_t add_chain(std::span<const Buffer> buffers);
  uint16_t add_chain(std::initializer_list<Buffer> buffers) {
    return add_chain(std::span(buffers.begin(), buffers.size()));
  }
  // The same in an indirect table at `table`, published through one descriptor pointing at it.
  uint16_t add_indirect_chain(uint64_t table, std::span<const Buffer> buffers);
  // Makes the chain at `head` available: the next ring entry, then the index.
  void publish(uint16_t head);
  uint16_t avail_idx() const { return avail_idx_; }
  // Moves the available index anywhere (a driver that lies about it).
  void set_avail_idx(uint16_t idx);
  void set_avail_flags(uint16_t flags) const;
  void set_used_event(uint16_t value) const;  // VIRTIO_RING_F_EVENT_IDX
  uint16_t next_desc() const { return next_desc_; }

  // --- The used ring
  uint16_t used_idx() const;
  uint16_t used_flags() const;
  uint16_t avail_event() const;  // VIRTIO_RING_F_EVENT_IDX
  // The used ring entry for used index `idx` (modulo the ring size).
  vring_used_elem used(uint16_t idx) const;

 private:
  void store(uint64_t gpa, uint16_t value, const char* what) const;
  uint16_t load(uint64_t gpa, const char* what) const;

  const GuestMemory* memory_;
  uint16_t size_;
  RingLayout layout_;
  uint64_t next_buffer_;
  uint16_t next_desc_ = 0;
  uint16_t avail_idx_ = 0;
};

// A guest driver at a virtIO MMIO register window (spec §4.2.2): aligned 32-bit register
// accesses and the initialization steps of spec §3.1.1.
class MmioDriver {
 public:
  explicit MmioDriver(BusDevice& window) : window_(&window) {}

  uint32_t reg(uint64_t offset) const;
  void set_reg(uint64_t offset, uint32_t value) const;
  uint64_t device_features() const;
  void set_driver_features(uint64_t features) const;
  // Reset, ACKNOWLEDGE, DRIVER, the features, FEATURES_OK. True if FEATURES_OK stuck.
  bool negotiate(uint64_t features) const;
  // Queue `index`: its size, the ring's three addresses, QueueReady = 1.
  void setup_queue(uint32_t index, uint16_t size, const RingLayout& layout) const;
  void setup_queue(uint32_t index, const DriverRing& ring) const {
    setup_queue(index, ring.size(), ring.layout());
  }
  void driver_ok() const;
  void notify(uint32_t queue) const;
  uint32_t status() const;

 private:
  BusDevice* window_;
};

// A guest driver of a virtio-pci function (spec §4.1): finds the register blocks through the
// vendor capabilities in configuration space (as Linux's virtio_pci_modern does), then
// accesses them in BAR 0 with the field widths of struct virtio_pci_common_cfg.
class PciDriver {
 public:
  explicit PciDriver(pci::PciFunction& function);
  uint32_t config(uint32_t offset, size_t size = 4) const;  // configuration space
  void set_config(uint32_t offset, uint32_t value, size_t size = 4) const;
  // Common configuration field at `offset` (VIRTIO_PCI_COMMON_*), `size` bytes wide.
  uint64_t common(uint32_t offset, size_t size) const;
  void set_common(uint32_t offset, uint64_t value, size_t size) const;
  uint8_t isr() const;
  uint64_t device_features() const;
  bool negotiate(uint64_t features) const;
  // Queue `index`: size, addresses (two 32-bit halves each), MSI-X vector, queue_enable = 1.
  void setup_queue(uint16_t index, const DriverRing& ring, uint16_t vector = 0xffff) const;
  void driver_ok() const;
  void notify(uint16_t queue) const;  // a 16-bit write of the index at the queue's address
  uint8_t status() const;
  // Capability offsets in BAR 0 as found (0 when absent), and the notify multiplier.
  uint32_t common_offset = 0, notify_offset = 0, isr_offset = 0, device_offset = 0;
  uint32_t notify_multiplier = 0;
  uint32_t msix_capability = 0;
  uint32_t window_capability = 0;  // VIRTIO_PCI_CAP_PCI_CFG

 private:
  pci::PciFunction* function_;
};

// What a device gets from its transport, recording what the device asks of it. with_queues()
// runs on the queues given to serve() while `live`; without them it refuses, as a transport
// whose driver is not ready does.
class FakeTransport final : public VirtioTransport {
 public:
  void signal_used(uint16_t index) override;
  void signal_config_change() override { ++config_changes; }
  bool with_queues(const std::function<void(std::span<Virtqueue>)>& fn) override;
  bool renotify(uint16_t index) override;

  void serve(std::span<Virtqueue> queues) { queues_ = queues; }
  // How often the device signalled used buffers (renotified) on queue `index`, or on any.
  int signals(uint16_t index) const { return count(signals_, index); }
  int signals() const { return total(signals_); }
  int renotifies(uint16_t index) const { return count(renotifies_, index); }
  int renotifies() const { return total(renotifies_); }

  bool live = true;
  bool can_renotify = false;  // what renotify() answers
  int config_changes = 0;
  // Runs after each signal_used(): a driver acting between the device's batches.
  std::function<void(uint16_t index)> on_signal;

 private:
  static int count(const std::vector<int>& counts, uint16_t index);
  static int total(const std::vector<int>& counts);

  std::span<Virtqueue> queues_;
  std::vector<int> signals_;  // by queue index
  std::vector<int> renotifies_;
};

// An interrupt line that counts pulses (thread-safe) and records level changes.
class FakeIrq final : public IrqLine {
 public:
  explicit FakeIrq(uint32_t number = 5) : number_(number) {}
  uint32_t number() const override { return number_; }
  void set_level(bool asserted) override { levels.push_back(asserted); }
  void pulse() override { ++pulses; }
  bool level() const { return !levels.empty() && levels.back(); }

  std::atomic<int> pulses{0};
  std::vector<bool> levels;  // every set_level(), in order

 private:
  uint32_t number_;
};

}  // namespace libvmm::test
