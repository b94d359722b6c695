#include "unit/support/virtio_kit.hpp"

#include <fmt/format.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_pci.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <stdexcept>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm::test {

namespace {

[[noreturn]] void setup_error(const std::string& what) {
  throw std::runtime_error("virtio test kit: " + what);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TestMemory

TestMemory::TestMemory(uint64_t ram_size, uint64_t rom_base, uint64_t rom_size)
    : ram_size_(ram_size) {
  map(0, MemoryRegion::create("test-ram", ram_size), 0, ram_size);
  if (rom_size > 0) {
    map(rom_base, MemoryRegion::create("test-rom", rom_size), 0, rom_size, /*readonly=*/true);
  }
}

TestMemory::TestMemory(uint64_t ram_size, Unsealed) : ram_size_(ram_size) {
  UniqueFd fd(::memfd_create("test-ram-unsealed", MFD_CLOEXEC));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(ram_size)) != 0) {
    setup_error("memfd for unsealed test RAM");
  }
  map(0, MemoryRegion::from_fd("test-ram", std::move(fd), ram_size), 0, ram_size);
}

std::vector<uint8_t> TestMemory::bytes(uint64_t gpa, uint64_t len) const {
  std::vector<uint8_t> data(len);
  if (!read(gpa, data.data(), len)) {
    setup_error(fmt::format("[{:#x}, +{}) is not guest memory", gpa, len));
  }
  return data;
}

std::string TestMemory::text(uint64_t gpa, uint64_t len) const {
  const std::vector<uint8_t> data = bytes(gpa, len);
  return {data.begin(), data.end()};
}

// ---------------------------------------------------------------------------------------------
// DriverRing

DriverRing::DriverRing(const GuestMemory& memory, uint16_t size, RingLayout layout)
    : memory_(&memory), size_(size), layout_(layout), next_buffer_(layout.buffers) {}

void DriverRing::configure(Virtqueue& queue, uint64_t features) const {
  if (!queue.set_size(size_) || !queue.set_desc_addr(layout_.desc) ||
      !queue.set_avail_addr(layout_.avail) || !queue.set_used_addr(layout_.used)) {
    setup_error("the queue is ready already");
  }
  std::string error;
  if (!queue.enable(features, error)) setup_error("the queue refuses the ring: " + error);
}

void DriverRing::restart() {
  // The table, then the rings with their flags, index and event fields (spec §2.7).
  if (!memory_->fill(layout_.desc, 0, 16ull * size_) ||
      !memory_->fill(layout_.avail, 0, 6 + 2ull * size_) ||
      !memory_->fill(layout_.used, 0, 6 + 8ull * size_)) {
    setup_error("the ring is not writable guest memory");
  }
  next_desc_ = 0;
  avail_idx_ = 0;
}

uint64_t DriverRing::alloc(uint64_t len, uint64_t align) {
  const uint64_t gpa = (next_buffer_ + align - 1) / align * align;
  if (!memory_->contains(gpa, len)) {
    setup_error(fmt::format("no guest memory left for a buffer of {} bytes", len));
  }
  next_buffer_ = gpa + len;
  return gpa;
}

uint64_t DriverRing::place(std::span<const uint8_t> bytes, uint64_t align) {
  const uint64_t gpa = alloc(bytes.size(), align);
  if (!memory_->write(gpa, bytes.data(), bytes.size())) {
    setup_error(fmt::format("buffer at {:#x} is not writable", gpa));
  }
  return gpa;
}

void DriverRing::set_desc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags,
                          uint16_t next, std::optional<uint64_t> table) const {
  const uint64_t gpa = table.value_or(layout_.desc) + 16ull * index;
  if (!memory_->write_obj(gpa, vring_desc{addr, len, flags, next})) {
    setup_error(fmt::format("descriptor {} at {:#x} is not writable", index, gpa));
  }
}

uint16_t DriverRing::add_chain(std::span<const Buffer> buffers) {
  const uint16_t head = next_desc_;
  for (size_t i = 0; i < buffers.size(); ++i) {
    const uint16_t index = next_desc_;
    next_desc_ = static_cast<uint16_t>((next_desc_ + 1) % size_);
    uint16_t flags = buffers[i].writable ? VRING_DESC_F_WRITE : 0;
    if (i + 1 < buffers.size()) flags |= VRING_DESC_F_NEXT;
    set_desc(index, buffers[i].gpa, buffers[i].len, flags, next_desc_);
  }
  publish(head);
  return head;
}

uint16_t DriverRing::add_indirect_chain(uint64_t table, std::span<const Buffer> buffers) {
  for (size_t i = 0; i < buffers.size(); ++i) {
    uint16_t flags = buffers[i].writable ? VRING_DESC_F_WRITE : 0;
    if (i + 1 < buffers.size()) flags |= VRING_DESC_F_NEXT;
    set_desc(static_cast<uint16_t>(i), buffers[i].gpa, buffers[i].len, flags,
             static_cast<uint16_t>(i + 1), table);
  }
  const uint16_t head = next_desc_;
  next_desc_ = static_cast<uint16_t>((next_desc_ + 1) % size_);
  set_desc(head, table, static_cast<uint32_t>(16 * buffers.size()), VRING_DESC_F_INDIRECT);
  publish(head);
  return head;
}

void DriverRing::publish(uint16_t head) {
  // The entry first, then the index that makes it visible (release).
  if (!memory_->store_u16(layout_.avail + 4 + 2ull * (avail_idx_ % size_), head,
                          std::memory_order_relaxed)) {
    setup_error("the available ring is not writable guest memory");
  }
  set_avail_idx(static_cast<uint16_t>(avail_idx_ + 1));
}

void DriverRing::set_avail_idx(uint16_t idx) {
  avail_idx_ = idx;
  store(layout_.avail + 2, idx, "available index");
}

void DriverRing::set_avail_flags(uint16_t flags) const {
  store(layout_.avail, flags, "available ring flags");
}

void DriverRing::set_used_event(uint16_t value) const {
  store(layout_.avail + 4 + 2ull * size_, value, "used_event");
}

uint16_t DriverRing::used_idx() const {
  return load(layout_.used + 2, "used index");
}

uint16_t DriverRing::used_flags() const {
  return load(layout_.used, "used ring flags");
}

uint16_t DriverRing::avail_event() const {
  return load(layout_.used + 4 + 8ull * size_, "avail_event");
}

vring_used_elem DriverRing::used(uint16_t idx) const {
  const auto elem = memory_->read_obj<vring_used_elem>(layout_.used + 4 + 8ull * (idx % size_));
  if (!elem) setup_error("the used ring is not guest memory");
  return *elem;
}

void DriverRing::store(uint64_t gpa, uint16_t value, const char* what) const {
  if (!memory_->store_u16(gpa, value)) {
    setup_error(fmt::format("{} at {:#x} is not writable guest memory", what, gpa));
  }
}

uint16_t DriverRing::load(uint64_t gpa, const char* what) const {
  const auto value = memory_->load_u16(gpa);
  if (!value) setup_error(fmt::format("{} at {:#x} is not guest memory", what, gpa));
  return *value;
}

// ---------------------------------------------------------------------------------------------
// MmioDriver

uint32_t MmioDriver::reg(uint64_t offset) const {
  std::array<uint8_t, 4> data{};
  window_->read(offset, data);
  uint32_t value;
  std::memcpy(&value, data.data(), 4);
  return value;
}

void MmioDriver::set_reg(uint64_t offset, uint32_t value) const {
  std::array<uint8_t, 4> data;
  std::memcpy(data.data(), &value, 4);
  window_->write(offset, data);
}

uint64_t MmioDriver::device_features() const {
  set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  const uint64_t low = reg(VIRTIO_MMIO_DEVICE_FEATURES);
  set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  return low | uint64_t{reg(VIRTIO_MMIO_DEVICE_FEATURES)} << 32;
}

void MmioDriver::set_driver_features(uint64_t features) const {
  set_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  set_reg(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features));
  set_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  set_reg(VIRTIO_MMIO_DRIVER_FEATURES, static_cast<uint32_t>(features >> 32));
}

bool MmioDriver::negotiate(uint64_t features) const {
  set_reg(VIRTIO_MMIO_STATUS, 0);
  set_reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  set_reg(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  set_driver_features(features);
  set_reg(VIRTIO_MMIO_STATUS,
          VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  return status() & VIRTIO_CONFIG_S_FEATURES_OK;
}

void MmioDriver::setup_queue(uint32_t index, uint16_t size, const RingLayout& layout) const {
  set_reg(VIRTIO_MMIO_QUEUE_SEL, index);
  set_reg(VIRTIO_MMIO_QUEUE_NUM, size);
  set_reg(VIRTIO_MMIO_QUEUE_DESC_LOW, static_cast<uint32_t>(layout.desc));
  set_reg(VIRTIO_MMIO_QUEUE_DESC_HIGH, static_cast<uint32_t>(layout.desc >> 32));
  set_reg(VIRTIO_MMIO_QUEUE_AVAIL_LOW, static_cast<uint32_t>(layout.avail));
  set_reg(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, static_cast<uint32_t>(layout.avail >> 32));
  set_reg(VIRTIO_MMIO_QUEUE_USED_LOW, static_cast<uint32_t>(layout.used));
  set_reg(VIRTIO_MMIO_QUEUE_USED_HIGH, static_cast<uint32_t>(layout.used >> 32));
  set_reg(VIRTIO_MMIO_QUEUE_READY, 1);
}

void MmioDriver::driver_ok() const {
  set_reg(VIRTIO_MMIO_STATUS, status() | VIRTIO_CONFIG_S_DRIVER_OK);
}

void MmioDriver::notify(uint32_t queue) const {
  set_reg(VIRTIO_MMIO_QUEUE_NOTIFY, queue);
}

uint32_t MmioDriver::status() const {
  return reg(VIRTIO_MMIO_STATUS);
}

// ---------------------------------------------------------------------------------------------
// FakeTransport

void FakeTransport::signal_used(uint16_t index) {
  if (signals_.size() <= index) signals_.resize(index + 1u);
  ++signals_[index];
  if (on_signal) on_signal(index);
}

bool FakeTransport::with_queues(const std::function<void(std::span<Virtqueue>)>& fn) {
  if (!live || queues_.empty()) return false;
  fn(queues_);
  return true;
}

bool FakeTransport::renotify(uint16_t index) {
  if (renotifies_.size() <= index) renotifies_.resize(index + 1u);
  ++renotifies_[index];
  return can_renotify;
}

int FakeTransport::count(const std::vector<int>& counts, uint16_t index) {
  return index < counts.size() ? counts[index] : 0;
}

int FakeTransport::total(const std::vector<int>& counts) {
  int sum = 0;
  for (const int n : counts) sum += n;
  return sum;
}

// ---------------------------------------------------------------------------------------------
// PciDriver

PciDriver::PciDriver(pci::PciFunction& function) : function_(&function) {
  uint32_t cap = config(pci::kCapabilityPointer, 1);
  for (int hops = 0; cap != 0 && hops < 48; ++hops) {
    const uint32_t id = config(cap, 1);
    if (id == pci::kCapMsix) msix_capability = cap;
    if (id == pci::kCapVendor && config(cap + 3, 1) == VIRTIO_PCI_CAP_PCI_CFG) {
      window_capability = cap;
    }
    if (id == pci::kCapVendor && config(cap + 4, 1) == 0) {  // BAR 0
      const uint32_t offset = config(cap + 8);
      switch (config(cap + 3, 1)) {
        case VIRTIO_PCI_CAP_COMMON_CFG:
          common_offset = offset;
          break;
        case VIRTIO_PCI_CAP_NOTIFY_CFG:
          notify_offset = offset;
          notify_multiplier = config(cap + 16);
          break;
        case VIRTIO_PCI_CAP_ISR_CFG:
          isr_offset = offset;
          break;
        case VIRTIO_PCI_CAP_DEVICE_CFG:
          device_offset = offset;
          break;
        default:
          break;
      }
    }
    cap = config(cap + 1, 1);
  }
  if (common_offset == 0 && notify_offset == 0) {
    throw std::runtime_error("virtio-pci: no common or notify capability found");
  }
  // As Linux's probe does (pci_enable_device, pci_set_master): memory decoding and Bus Master
  // Enable, without which the device touches no memory.
  set_config(pci::kCommand, config(pci::kCommand, 2) | pci::kCommandMemory | pci::kCommandBusMaster,
             2);
}

uint32_t PciDriver::config(uint32_t offset, size_t size) const {
  std::array<uint8_t, 4> b{};
  function_->config_read(offset, std::span(b.data(), size));
  uint32_t v = 0;
  std::memcpy(&v, b.data(), size);
  return v;
}

void PciDriver::set_config(uint32_t offset, uint32_t value, size_t size) const {
  std::array<uint8_t, 4> b{};
  std::memcpy(b.data(), &value, 4);
  function_->config_write(offset, std::span(b.data(), size));
}

uint64_t PciDriver::common(uint32_t offset, size_t size) const {
  std::array<uint8_t, 8> b{};
  function_->bar_read(0, common_offset + offset, std::span(b.data(), size));
  uint64_t v = 0;
  std::memcpy(&v, b.data(), size);
  return v;
}

void PciDriver::set_common(uint32_t offset, uint64_t value, size_t size) const {
  std::array<uint8_t, 8> b{};
  std::memcpy(b.data(), &value, 8);
  function_->bar_write(0, common_offset + offset, std::span(b.data(), size));
}

uint8_t PciDriver::isr() const {
  std::array<uint8_t, 1> b{};
  function_->bar_read(0, isr_offset, b);
  return b[0];
}

uint64_t PciDriver::device_features() const {
  set_common(VIRTIO_PCI_COMMON_DFSELECT, 0, 4);
  const uint64_t low = common(VIRTIO_PCI_COMMON_DF, 4);
  set_common(VIRTIO_PCI_COMMON_DFSELECT, 1, 4);
  return low | common(VIRTIO_PCI_COMMON_DF, 4) << 32;
}

bool PciDriver::negotiate(uint64_t features) const {
  set_common(VIRTIO_PCI_COMMON_STATUS, 0, 1);
  set_common(VIRTIO_PCI_COMMON_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE, 1);
  set_common(VIRTIO_PCI_COMMON_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER, 1);
  set_common(VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
  set_common(VIRTIO_PCI_COMMON_GF, features & 0xffffffffu, 4);
  set_common(VIRTIO_PCI_COMMON_GFSELECT, 1, 4);
  set_common(VIRTIO_PCI_COMMON_GF, features >> 32, 4);
  set_common(VIRTIO_PCI_COMMON_STATUS,
             VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK, 1);
  return status() & VIRTIO_CONFIG_S_FEATURES_OK;
}

void PciDriver::setup_queue(uint16_t index, const DriverRing& ring, uint16_t vector) const {
  set_common(VIRTIO_PCI_COMMON_Q_SELECT, index, 2);
  set_common(VIRTIO_PCI_COMMON_Q_SIZE, ring.size(), 2);
  const RingLayout& l = ring.layout();
  const std::pair<uint32_t, uint64_t> addresses[] = {{VIRTIO_PCI_COMMON_Q_DESCLO, l.desc},
                                                     {VIRTIO_PCI_COMMON_Q_AVAILLO, l.avail},
                                                     {VIRTIO_PCI_COMMON_Q_USEDLO, l.used}};
  for (const auto& [field, gpa] : addresses) {
    set_common(field, gpa & 0xffffffffu, 4);
    set_common(field + 4, gpa >> 32, 4);
  }
  set_common(VIRTIO_PCI_COMMON_Q_MSIX, vector, 2);
  set_common(VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
}

void PciDriver::driver_ok() const {
  set_common(VIRTIO_PCI_COMMON_STATUS, status() | VIRTIO_CONFIG_S_DRIVER_OK, 1);
}

void PciDriver::notify(uint16_t queue) const {
  set_common(VIRTIO_PCI_COMMON_Q_SELECT, queue, 2);
  const uint64_t off = common(VIRTIO_PCI_COMMON_Q_NOFF, 2);
  std::array<uint8_t, 2> b{};
  std::memcpy(b.data(), &queue, 2);
  function_->bar_write(0, notify_offset + off * notify_multiplier, b);
}

uint8_t PciDriver::status() const {
  return static_cast<uint8_t>(common(VIRTIO_PCI_COMMON_STATUS, 1));
}

}  // namespace libvmm::test
