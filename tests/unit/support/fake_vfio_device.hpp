// A VFIO device file for the tests and fuzzers of VfioPciDevice (pci/vfio_device_file.hpp): an
// endpoint of a chosen shape (identity, BARs, MSI-X with its table and PBA in a BAR, or MSI, an
// INTx pin) whose regions are byte arrays at VFIO's offsets (index << 40), that mmaps anonymous
// memory where told to, and records what the device asks of VFIO (SET_IRQS, resets, region
// accesses). With it, a recording MSI sink and BAR mapper.
//
// No GoogleTest in here, so that the fuzzers use it too. Not thread-safe.
#pragma once

#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "libvmm/core/unique_fd.hpp"
#include "libvmm/pci/config_space.hpp"
#include "libvmm/pci/msix.hpp"
#include "libvmm/pci/vfio.hpp"
#include "libvmm/pci/vfio_device_file.hpp"

namespace libvmm::test {

// What the fake device looks like. The defaults: a 16 KiB 64-bit BAR 0 holding 4 MSI-X vectors
// (table at 0x2000, PBA at 0x3000), a 4 KiB 32-bit BAR 2, INTA#, resettable, BARs mmappable.
struct FakeVfioShape {
  uint16_t vendor_id = 0x1b36;
  uint16_t device_id = 0x0010;
  uint32_t class_code = 0x010802;  // NVMe
  uint8_t header_type = 0;
  uint16_t command = 0x0400;  // as the host left it: INTx disabled
  // BAR registers and VFIO region sizes: a mem64 BAR's upper half is the next index (size 0).
  std::array<pci::BarInfo, pci::kBarCount> bars{pci::BarInfo{pci::BarKind::mem64, 0x4000, false},
                                                pci::BarInfo{},
                                                pci::BarInfo{pci::BarKind::mem32, 0x1000, false}};
  bool msix = true;
  uint16_t msix_vectors = 4;  // in the capability
  uint8_t table_bar = 0;
  uint32_t table_offset = 0x2000;
  uint8_t pba_bar = 0;
  uint32_t pba_offset = 0x3000;
  bool msi = false;
  uint8_t msi_capable_log2 = 2;  // Multiple Message Capable: 4 vectors
  uint8_t interrupt_pin = 1;     // INTA#
  // What VFIO offers: MSI-X and MSI vectors (nullopt: as the capabilities say), resets, mmaps.
  std::optional<uint32_t> vfio_msix_count, vfio_msi_count;
  bool resettable = true;
  bool mmappable = true;
  // Listed as a sparse-mmap capability when not empty (else the whole region is mmappable).
  std::vector<pci::BarRange> sparse;
  // Raw capability-chain bytes after the fixed region info instead (for fuzzing), the chain
  // starting at `raw_cap_offset`.
  std::vector<uint8_t> raw_caps;
  uint32_t raw_cap_offset = sizeof(vfio_region_info);
  // Added to every region's size in the second query (region_info_with_caps): a device file
  // whose answers disagree.
  uint64_t second_answer_growth = 0;
};

// Region `index` of a VFIO PCI device starts at index << 40 in its file (as vfio-pci does).
constexpr uint64_t vfio_region_offset(uint32_t index) {
  return uint64_t{index} << 40;
}

class FakeVfioDevice : public pci::VfioDeviceFile,
                       public std::enable_shared_from_this<FakeVfioDevice> {
 public:
  static constexpr uint32_t kConfigIndex = VFIO_PCI_CONFIG_REGION_INDEX;
  static constexpr uint32_t kPmCap = 0x40, kMsiCap = 0x50, kMsixCap = 0x70;
  // Region bytes kept per BAR at most; accesses beyond fail (EIO), as a device that does not
  // answer.
  static constexpr uint64_t kBacked = 1 << 20;

  explicit FakeVfioDevice(FakeVfioShape shape = {}) : shape_(std::move(shape)) {
    std::vector<uint8_t>& c = regions_[kConfigIndex];
    c.assign(pci::kConfigSize, 0);
    put16(c, pci::kVendorId, shape_.vendor_id);
    put16(c, pci::kDeviceId, shape_.device_id);
    put16(c, pci::kCommand, shape_.command);
    put16(c, pci::kStatus, pci::kStatusCapabilities);
    put32(c, pci::kRevision, shape_.class_code << 8 | 0x02);
    c[pci::kHeaderType] = shape_.header_type;
    for (unsigned i = 0; i < pci::kBarCount; ++i) {
      const pci::BarInfo& b = shape_.bars[i];
      if (b.size == 0) continue;
      const uint32_t type = b.kind == pci::BarKind::io      ? 1u
                            : b.kind == pci::BarKind::mem64 ? 4u | (b.prefetchable ? 8u : 0u)
                                                            : (b.prefetchable ? 8u : 0u);
      put32(c, pci::kBar0 + 4 * i, type);
      regions_[VFIO_PCI_BAR0_REGION_INDEX + i].assign(std::min(b.size, kBacked), 0);
    }
    put16(c, pci::kSubsystemVendorId, shape_.vendor_id);
    put16(c, pci::kSubsystemId, 0x1100);
    c[pci::kInterruptPin] = shape_.interrupt_pin;
    // Power management first (a capability the guest is not offered), then MSI, then MSI-X.
    c[pci::kCapabilityPointer] = kPmCap;
    c[kPmCap] = 0x01;
    uint8_t* next = &c[kPmCap + 1];
    if (shape_.msi) {
      *next = kMsiCap;
      c[kMsiCap] = pci::kCapMsi;
      put16(c, kMsiCap + 2, static_cast<uint16_t>(0x80 | (shape_.msi_capable_log2 & 7) << 1));
      next = &c[kMsiCap + 1];
    }
    if (shape_.msix) {
      *next = kMsixCap;
      c[kMsixCap] = pci::kCapMsix;
      put16(c, kMsixCap + 2, static_cast<uint16_t>((shape_.msix_vectors - 1) & 0x7ff));
      put32(c, kMsixCap + 4, shape_.table_offset | (shape_.table_bar & 7));
      put32(c, kMsixCap + 8, shape_.pba_offset | (shape_.pba_bar & 7));
    }
  }
  ~FakeVfioDevice() override {
    for (const auto& [host, size] : maps) ::munmap(host, size);
  }

  // A device file for VfioPciDevice::open that shares this device (made by make_shared), so
  // that the test keeps looking at it, and at what the device did at close, after handing it
  // over.
  std::unique_ptr<pci::VfioDeviceFile> file() {
    return std::make_unique<Shared>(shared_from_this());
  }

  // What the device asked of VFIO.
  struct IrqSet {
    uint32_t index = 0;
    uint32_t action = 0;
    std::vector<int32_t> fds;
  };
  std::vector<IrqSet> irq_sets;
  // Eventfds on each interrupt index's trigger now (VFIO's own state).
  std::array<std::vector<int32_t>, VFIO_PCI_NUM_IRQS> triggers{};
  int resets = 0;
  struct Access {
    uint32_t region = 0;
    uint64_t offset = 0;  // in the region
    std::vector<uint8_t> bytes;
    bool write = false;
  };
  std::vector<Access> accesses;
  bool record_accesses = true;
  std::map<void*, size_t> maps;  // live mmaps
  size_t maps_made = 0;
  // Failures to make: every SET_IRQS that turns something on, every one that turns something
  // off (which VFIO does not refuse for an index it offers), region reads and writes (EIO).
  bool refuse_set_irqs = false;
  bool refuse_irqs_off = false;
  bool refuse_unmask = false;  // INTx's UNMASK (its resample eventfd) only
  bool fail_io = false;

  // The device's own registers.
  uint16_t command() const { return get16(regions_[kConfigIndex], pci::kCommand); }
  std::vector<uint8_t>& region(uint32_t index) { return regions_.at(index); }
  // How many kinds of interrupt have their trigger on in VFIO (at most 1, by VFIO's rules).
  size_t kinds_on() const {
    return static_cast<size_t>(std::count_if(triggers.begin(), triggers.end(),
                                             [](const auto& fds) { return !fds.empty(); }));
  }

  bool device_info(vfio_device_info& info) override {
    info.flags = VFIO_DEVICE_FLAGS_PCI | (shape_.resettable ? VFIO_DEVICE_FLAGS_RESET : 0);
    info.num_regions = VFIO_PCI_NUM_REGIONS;
    info.num_irqs = VFIO_PCI_NUM_IRQS;
    return true;
  }

  bool region_info(vfio_region_info& info) override {
    if (info.index >= VFIO_PCI_NUM_REGIONS) return fail(EINVAL);
    describe(info);
    const size_t needed = sizeof(vfio_region_info) + caps(info.index).size();
    if (needed > sizeof(vfio_region_info) && info.argsz < needed) {
      // As VFIO answers a query without room for the chain: it says how much it needs.
      info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
      info.argsz = static_cast<uint32_t>(needed);
      info.cap_offset = 0;
    }
    return true;
  }

  bool region_info_with_caps(uint32_t index, std::vector<uint8_t>& reply) override {
    if (index >= VFIO_PCI_NUM_REGIONS) return fail(EINVAL);
    vfio_region_info info{};
    info.index = index;
    describe(info);
    if (info.size != 0) info.size += shape_.second_answer_growth;
    const std::vector<uint8_t> chain = caps(index);
    info.argsz = static_cast<uint32_t>(sizeof info + chain.size());
    if (!chain.empty()) {
      info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
      info.cap_offset = shape_.raw_caps.empty() ? sizeof info : shape_.raw_cap_offset;
    }
    reply.resize(sizeof info);
    std::memcpy(reply.data(), &info, sizeof info);
    reply.insert(reply.end(), chain.begin(), chain.end());
    return true;
  }

  bool irq_info(vfio_irq_info& info) override {
    info.flags = VFIO_IRQ_INFO_EVENTFD;
    switch (info.index) {
      case VFIO_PCI_INTX_IRQ_INDEX:
        info.count = shape_.interrupt_pin != 0 ? 1 : 0;
        info.flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
        return true;
      case VFIO_PCI_MSI_IRQ_INDEX:
        info.count =
            shape_.vfio_msi_count.value_or(shape_.msi ? 1u << (shape_.msi_capable_log2 & 7) : 0u);
        info.flags |= VFIO_IRQ_INFO_NORESIZE;
        return true;
      case VFIO_PCI_MSIX_IRQ_INDEX:
        info.count = shape_.vfio_msix_count.value_or(shape_.msix ? shape_.msix_vectors : 0u);
        return true;
      default:
        return fail(EINVAL);
    }
  }

  bool set_irqs(uint32_t index, uint32_t action, std::span<const int32_t> fds) override {
    irq_sets.push_back({index, action, std::vector<int32_t>(fds.begin(), fds.end())});
    if ((refuse_set_irqs && !fds.empty()) || (refuse_irqs_off && fds.empty()) ||
        (refuse_unmask && action == VFIO_IRQ_SET_ACTION_UNMASK) || index >= VFIO_PCI_NUM_IRQS) {
      return fail(EINVAL);
    }
    if (action == VFIO_IRQ_SET_ACTION_TRIGGER) {
      // VFIO has one kind on at a time: turning a second one on is refused.
      if (!fds.empty() && triggers[index].empty() && kinds_on() != 0) return fail(EBUSY);
      triggers[index].assign(fds.begin(), fds.end());
    }
    return true;
  }

  bool reset() override {
    if (!shape_.resettable) return fail(ENOTTY);
    ++resets;
    put16(regions_[kConfigIndex], pci::kCommand, 0);
    return true;
  }

  ssize_t read(uint64_t offset, std::span<uint8_t> data) override {
    std::vector<uint8_t>* r = at(offset, data.size());
    if (r == nullptr) return -1;
    const uint64_t within = offset - vfio_region_offset(region_of(offset));
    std::memcpy(data.data(), r->data() + within, data.size());
    note(offset, data, false);
    return static_cast<ssize_t>(data.size());
  }

  ssize_t write(uint64_t offset, std::span<const uint8_t> data) override {
    std::vector<uint8_t>* r = at(offset, data.size());
    if (r == nullptr) return -1;
    const uint64_t within = offset - vfio_region_offset(region_of(offset));
    std::memcpy(r->data() + within, data.data(), data.size());
    note(offset, data, true);
    return static_cast<ssize_t>(data.size());
  }

  void* map(uint64_t offset, size_t size) override {
    const uint32_t index = region_of(offset);
    const uint64_t within = offset - vfio_region_offset(index);
    if (!shape_.mmappable || index >= VFIO_PCI_ROM_REGION_INDEX ||
        within + size > shape_.bars[index].size || size == 0) {
      errno = EINVAL;
      return nullptr;
    }
    void* host = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED) return nullptr;
    maps.emplace(host, size);
    ++maps_made;
    return host;
  }

  void unmap(void* host, size_t size) override {
    const auto it = maps.find(host);
    if (it == maps.end() || it->second != size) throw std::logic_error("unmap of no mapping");
    ::munmap(host, size);
    maps.erase(it);
  }

 private:
  // Hands every call to the shared device.
  class Shared final : public pci::VfioDeviceFile {
   public:
    explicit Shared(std::shared_ptr<FakeVfioDevice> device) : d_(std::move(device)) {}
    bool device_info(vfio_device_info& info) override { return d_->device_info(info); }
    bool region_info(vfio_region_info& info) override { return d_->region_info(info); }
    bool region_info_with_caps(uint32_t index, std::vector<uint8_t>& reply) override {
      return d_->region_info_with_caps(index, reply);
    }
    bool irq_info(vfio_irq_info& info) override { return d_->irq_info(info); }
    bool set_irqs(uint32_t index, uint32_t action, std::span<const int32_t> fds) override {
      return d_->set_irqs(index, action, fds);
    }
    bool reset() override { return d_->reset(); }
    ssize_t read(uint64_t offset, std::span<uint8_t> data) override {
      return d_->read(offset, data);
    }
    ssize_t write(uint64_t offset, std::span<const uint8_t> data) override {
      return d_->write(offset, data);
    }
    void* map(uint64_t offset, size_t size) override { return d_->map(offset, size); }
    void unmap(void* host, size_t size) override { d_->unmap(host, size); }

   private:
    std::shared_ptr<FakeVfioDevice> d_;
  };

  static bool fail(int err) {
    errno = err;
    return false;
  }
  static void put16(std::vector<uint8_t>& b, uint32_t at, uint16_t v) {
    b[at] = static_cast<uint8_t>(v);
    b[at + 1] = static_cast<uint8_t>(v >> 8);
  }
  static void put32(std::vector<uint8_t>& b, uint32_t at, uint32_t v) {
    put16(b, at, static_cast<uint16_t>(v));
    put16(b, at + 2, static_cast<uint16_t>(v >> 16));
  }
  static uint16_t get16(const std::vector<uint8_t>& b, uint32_t at) {
    return static_cast<uint16_t>(b[at] | b[at + 1] << 8);
  }
  static uint32_t region_of(uint64_t offset) { return static_cast<uint32_t>(offset >> 40); }

  void describe(vfio_region_info& info) const {
    info.offset = vfio_region_offset(info.index);
    info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    info.cap_offset = 0;
    if (info.index == kConfigIndex) {
      info.size = pci::kConfigSize;
    } else if (info.index < VFIO_PCI_ROM_REGION_INDEX) {
      const pci::BarInfo& b = shape_.bars[info.index];
      info.size = b.size;
      if (shape_.mmappable && b.size != 0 && b.kind != pci::BarKind::io) {
        info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
      }
    } else {
      info.size = 0;
      info.flags = 0;
    }
  }

  // The capability chain of region `index`'s info, as it follows the fixed part.
  std::vector<uint8_t> caps(uint32_t index) const {
    if (index >= VFIO_PCI_ROM_REGION_INDEX) return {};
    if (!shape_.raw_caps.empty()) return shape_.raw_caps;
    if (shape_.sparse.empty()) return {};
    vfio_region_info_cap_sparse_mmap sparse{};
    sparse.header.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
    sparse.header.version = 1;
    sparse.nr_areas = static_cast<uint32_t>(shape_.sparse.size());
    std::vector<uint8_t> out(sizeof sparse);
    std::memcpy(out.data(), &sparse, sizeof sparse);
    for (const pci::BarRange& a : shape_.sparse) {
      const vfio_region_sparse_mmap_area area{a.offset, a.size};
      const auto* p = reinterpret_cast<const uint8_t*>(&area);
      out.insert(out.end(), p, p + sizeof area);
    }
    return out;
  }

  // The region bytes [offset, offset + size) fall in, or nullptr (errno set).
  std::vector<uint8_t>* at(uint64_t offset, size_t size) {
    const uint32_t index = region_of(offset);
    const uint64_t within = offset - vfio_region_offset(index);
    if (fail_io || index >= VFIO_PCI_NUM_REGIONS || size > regions_[index].size() ||
        within > regions_[index].size() - size) {
      errno = EIO;
      return nullptr;
    }
    return &regions_[index];
  }

  void note(uint64_t offset, std::span<const uint8_t> data, bool write) {
    if (!record_accesses) return;
    const uint32_t index = region_of(offset);
    accesses.push_back({index, offset - vfio_region_offset(index),
                        std::vector<uint8_t>(data.begin(), data.end()), write});
  }

  FakeVfioShape shape_;
  std::array<std::vector<uint8_t>, VFIO_PCI_NUM_REGIONS> regions_{};
};

// An MSI sink that records what it is told; it offers eventfds for the first `direct` vectors
// (as KVM irqfds would be), and answers direct_pending() from `pending`.
class RecordingMsiSink final : public pci::MsiSink {
 public:
  explicit RecordingMsiSink(uint16_t direct = 0) {
    for (uint16_t v = 0; v < direct; ++v) {
      fds_.emplace_back(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fds_.back()) throw std::runtime_error("eventfd");
    }
  }
  struct Message {
    uint64_t address = 0;
    uint32_t data = 0;
    bool operator==(const Message&) const = default;
  };
  struct DirectState {
    uint16_t vector = 0;
    bool deliverable = false;
    uint64_t address = 0;
    uint32_t data = 0;
    bool operator==(const DirectState&) const = default;
  };
  void send(uint64_t address, uint32_t data) override { sent.push_back({address, data}); }
  int direct_eventfd(uint16_t vector) override {
    return vector < fds_.size() ? fds_[vector].get() : -1;
  }
  void direct_state(uint16_t vector, bool deliverable, uint64_t address, uint32_t data) override {
    states.push_back({vector, deliverable, address, data});
  }
  bool direct_pending(uint16_t vector) override {
    return vector < pending.size() && pending[vector];
  }

  std::vector<Message> sent;
  std::vector<DirectState> states;
  std::vector<bool> pending;

 private:
  std::vector<UniqueFd> fds_;
};

// A BarMapper that records the BAR pages in the guest; it refuses (throws) while `refuse`.
class RecordingBarMapper final : public pci::BarMapper {
 public:
  struct Slot {
    uint64_t gpa = 0;
    uint64_t size = 0;
    void* host = nullptr;
  };
  uint32_t map(uint64_t gpa, uint64_t size, void* host, const std::string& what) override {
    if (refuse) throw std::runtime_error("no slot for " + what);
    slots.emplace(next_, Slot{gpa, size, host});
    ++maps;
    return next_++;
  }
  void unmap(uint32_t handle) override {
    if (refuse_unmap) throw std::runtime_error("KVM refused to delete the slot");
    if (slots.erase(handle) != 1) throw std::logic_error("unmap of no slot");
  }

  std::map<uint32_t, Slot> slots;  // in the guest now
  int maps = 0;
  bool refuse = false;
  bool refuse_unmap = false;

 private:
  uint32_t next_ = 0;
};

}  // namespace libvmm::test
