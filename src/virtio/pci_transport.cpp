#include "libvmm/virtio/pci_transport.hpp"

#define VIRTIO_RING_NO_LEGACY
#include <fmt/format.h>
#include <linux/virtio_config.h>
#include <linux/virtio_pci.h>
#include <linux/virtio_ring.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstring>
#include <stdexcept>

#include "device_status.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

using pci::MsixTable;

constexpr uint8_t kIsrQueue = 0x1;  // the ISR's queue interrupt bit (spec §4.1.4.5)

// Common configuration fields (struct virtio_pci_common_cfg): offset and width.
struct Field {
  uint32_t offset;
  uint32_t size;
  const char* name;
};
constexpr Field kFields[] = {
    {VIRTIO_PCI_COMMON_DFSELECT, 4, "device_feature_select"},
    {VIRTIO_PCI_COMMON_DF, 4, "device_feature"},
    {VIRTIO_PCI_COMMON_GFSELECT, 4, "driver_feature_select"},
    {VIRTIO_PCI_COMMON_GF, 4, "driver_feature"},
    {VIRTIO_PCI_COMMON_MSIX, 2, "config_msix_vector"},
    {VIRTIO_PCI_COMMON_NUMQ, 2, "num_queues"},
    {VIRTIO_PCI_COMMON_STATUS, 1, "device_status"},
    {VIRTIO_PCI_COMMON_CFGGENERATION, 1, "config_generation"},
    {VIRTIO_PCI_COMMON_Q_SELECT, 2, "queue_select"},
    {VIRTIO_PCI_COMMON_Q_SIZE, 2, "queue_size"},
    {VIRTIO_PCI_COMMON_Q_MSIX, 2, "queue_msix_vector"},
    {VIRTIO_PCI_COMMON_Q_ENABLE, 2, "queue_enable"},
    {VIRTIO_PCI_COMMON_Q_NOFF, 2, "queue_notify_off"},
    {VIRTIO_PCI_COMMON_Q_DESCLO, 8, "queue_desc"},
    {VIRTIO_PCI_COMMON_Q_AVAILLO, 8, "queue_driver"},
    {VIRTIO_PCI_COMMON_Q_USEDLO, 8, "queue_device"},
};
static_assert(VirtioPciTransport::kCommonSize == VIRTIO_PCI_COMMON_Q_USEDLO + 8);

// The field an access falls in, if the access is the whole field or a 4-byte half of a 64-bit
// one (drivers write 64-bit addresses as two 32-bit halves).
const Field* field_for(uint64_t offset, size_t size) {
  for (const Field& f : kFields) {
    if (offset < f.offset || offset >= f.offset + f.size) continue;
    if (offset == f.offset && size == f.size) return &f;
    if (f.size == 8 && size == 4 && (offset - f.offset) % 4 == 0) return &f;
    return nullptr;
  }
  return nullptr;
}

uint32_t pci_class(uint32_t device_id) {
  switch (device_id) {
    case 1:
      return 0x020000;  // network controller, Ethernet
    case 2:
      return 0x018000;  // mass storage, other
    case 3:
      return 0x078000;  // communication controller, other
    default:
      return 0xff0000;  // unassigned class
  }
}

uint64_t load(std::span<const uint8_t> data) {
  uint64_t v = 0;
  std::memcpy(&v, data.data(), std::min<size_t>(data.size(), 8));
  return v;
}
void store(std::span<uint8_t> data, uint64_t v) {
  std::memcpy(data.data(), &v, std::min<size_t>(data.size(), 8));
}

pci::Identity identity_of(const VirtioDevice* device) {
  const uint32_t id = device ? device->device_id() : 0;
  return pci::Identity{VirtioPciTransport::kVendorId,
                       static_cast<uint16_t>(VirtioPciTransport::kDeviceIdBase + id),
                       1,
                       pci_class(id),
                       VirtioPciTransport::kVendorId,
                       static_cast<uint16_t>(id)};
}

uint16_t vector_count(const VirtioDevice* device) {
  const size_t queues = device ? device->queue_max_sizes().size() : 0;
  return static_cast<uint16_t>(std::clamp<size_t>(queues + 1, 1, 64));
}

}  // namespace

uint16_t VirtioPciTransport::msix_vectors(const VirtioDevice& device) {
  return vector_count(&device);
}

VirtioPciTransport::VirtioPciTransport(std::shared_ptr<VirtioDevice> device,
                                       const GuestMemory& memory, std::shared_ptr<pci::MsiSink> msi,
                                       std::shared_ptr<IrqLine> intx)
    : pci::PciFunction(identity_of(device.get())),
      device_(std::move(device)),
      external_(device_ ? device_->external_queues() : nullptr),
      intx_(std::move(intx)),
      name_(device_ ? device_->name() : std::string()),
      offered_features_(device_ ? offered_features(*device_) : 0),
      config_size_(device_ ? device_->config_size() : 0),
      msix_(vector_count(device_.get()), std::move(msi), external_ != nullptr) {
  if (!device_) throw std::invalid_argument("virtio-pci: a device is needed");
  if (config_size_ > kDeviceConfigMax) {
    throw std::invalid_argument(
        fmt::format("{}: config space of {} bytes does not fit virtio-pci", name_, config_size_));
  }
  const auto sizes = device_->queue_max_sizes();
  if (sizes.empty()) throw std::invalid_argument(name_ + ": a virtIO device has queues");
  if (sizes.size() + 1 > 64 || kNotifyMultiplier * sizes.size() > kDeviceConfigMax) {
    throw std::invalid_argument(name_ + ": virtio-pci takes at most 63 queues");
  }
  queues_.reserve(sizes.size());
  for (const uint16_t max : sizes) {
    if (max == 0 || max > Virtqueue::kMaxSize || !std::has_single_bit(max)) {
      throw std::invalid_argument(
          fmt::format("{}: queue size {} is not a power of two up to 32768", name_, max));
    }
    queues_.emplace_back(memory, max);
  }
  queue_vectors_.assign(queues_.size(), MsixTable::kNoVector);

  config_.add_bar(kRegisterBar, {pci::BarKind::mem32, kRegisterBarSize, false});
  config_.add_bar(kMsixBar, {pci::BarKind::mem32, kMsixBarSize, false});
  // struct virtio_pci_cap: vndr, next, len, cfg_type, bar, id, padding[2], offset, length.
  const auto add_cap = [this](uint8_t type, uint64_t offset, uint64_t length, uint32_t len) {
    const uint32_t cap = config_.add_capability(pci::kCapVendor, len);
    config_.set_u8(cap + 2, static_cast<uint8_t>(len));
    config_.set_u8(cap + 3, type);
    config_.set_u8(cap + 4, kRegisterBar);
    config_.set_u32(cap + 8, static_cast<uint32_t>(offset));
    config_.set_u32(cap + 12, static_cast<uint32_t>(length));
    return cap;
  };
  add_cap(VIRTIO_PCI_CAP_COMMON_CFG, kCommonOffset, kCommonSize, 16);
  const uint32_t notify =
      add_cap(VIRTIO_PCI_CAP_NOTIFY_CFG, kNotifyOffset, kNotifyMultiplier * queues_.size(), 20);
  config_.set_u32(notify + 16, kNotifyMultiplier);
  add_cap(VIRTIO_PCI_CAP_ISR_CFG, kIsrOffset, 4, 16);
  if (config_size_ > 0) add_cap(VIRTIO_PCI_CAP_DEVICE_CFG, kDeviceConfigOffset, config_size_, 16);
  // The driver writes which BAR bytes pci_cfg_data shows: cap.bar, cap.offset, cap.length.
  window_cap_ = add_cap(VIRTIO_PCI_CAP_PCI_CFG, 0, 0, sizeof(virtio_pci_cfg_cap));
  config_.set_writable(window_cap_ + offsetof(virtio_pci_cap, bar), 1, 0xff);
  config_.set_writable(window_cap_ + offsetof(virtio_pci_cap, offset), 4, 0xffffffff);
  config_.set_writable(window_cap_ + offsetof(virtio_pci_cap, length), 4, 0xffffffff);
  msix_cap_ = msix_.add_capability(config_, kMsixBar, 0, kMsixBar, kMsixPbaOffset);
  static_assert(kMsixPbaOffset >= 64 * MsixTable::kEntrySize);
  config_.set_interrupt_pin(intx_ ? 1 : 0);
}

void VirtioPciTransport::set_intx(std::shared_ptr<IrqLine> intx) {
  intx_ = std::move(intx);
  config_.set_interrupt_pin(intx_ ? 1 : 0);
}

VirtioPciTransport::~VirtioPciTransport() {
  device_->pause_io();
}

std::string VirtioPciTransport::name() const {
  return name_;
}

void VirtioPciTransport::set_register_bar_listener(
    std::function<void(std::optional<uint64_t>, std::optional<uint64_t>)> listener) {
  bar_listener_ = std::move(listener);
}

void VirtioPciTransport::bar_moved(unsigned bar, std::optional<pci::BarMapping> old,
                                   std::optional<pci::BarMapping> now) {
  if (bar != kRegisterBar || !bar_listener_) return;
  bar_listener_(old ? std::optional(old->address) : std::nullopt,
                now ? std::optional(now->address) : std::nullopt);
}

void VirtioPciTransport::config_written(uint32_t offset, uint32_t size) {
  // Lock held on the configuration space; the transport's lock is not taken here.
  if (offset < msix_cap_ + 4 && offset + size > msix_cap_ + 2) {
    msix_.control_written(config_.u16(msix_cap_ + 2));
    update_intx([] {});  // no INTx while MSI-X is enabled (PCI 3.0 §6.8.2)
  }
  if (offset < pci::kCommand + 2 && offset + size > pci::kCommand) {
    const uint16_t command = config_.command();
    update_intx([&] { intx_disabled_ = (command & pci::kCommandIntxDisable) != 0; });
    bus_master_wanted_ = (command & pci::kCommandBusMaster) != 0;  // applied by config_write_done
  }
}

void VirtioPciTransport::config_write_done(uint32_t offset, uint32_t size) {
  static_cast<void>(offset);
  static_cast<void>(size);
  const bool want = bus_master_wanted_.load();
  if (want == bus_master_.load()) return;
  log::debug("{}: Bus Master Enable {}", name_, want ? "on" : "off");
  if (!want) {
    // The device's work in flight finishes first (its data is in guest memory already, its
    // used entries and interrupts go out), then no more: a request must not be left taken and
    // never returned. The guest's write is still in progress meanwhile.
    const PausedIo paused(*device_, true);
    std::lock_guard lock(mutex_);
    bus_master_ = bus_master_wanted_.load();
    return;
  }
  // Notifications that came while the bit was clear went unanswered, and the device left
  // buffers it had (received packets) where they were: every enabled queue is looked at again,
  // where its notifications are served (renotify), else here.
  std::lock_guard lock(mutex_);
  std::vector<bool> held;
  {
    std::lock_guard held_lock(held_mutex_);
    bus_master_ = bus_master_wanted_.load();
    held.swap(held_vectors_);
  }
  for (size_t v = 0; v < held.size(); ++v) {
    if (held[v] && msix_.enabled()) msix_.notify(static_cast<uint16_t>(v));
  }
  if (!live()) return;
  for (size_t q = 0; q < queues_.size(); ++q) {
    if (!queues_[q].ready()) continue;
    const auto index = static_cast<uint16_t>(q);
    if (!renotify(index)) notify_locked(index);
    // A server in another process is not paused: what it completed while the bit was off had
    // its interrupt dropped (external_used). One now, spurious at worst.
    if (external_ != nullptr) interrupt(queue_vectors_[q], kIsrQueue);
  }
}

void VirtioPciTransport::config_reading(uint32_t offset, uint32_t size) {
  // Lock held on the configuration space. Status bit 3 says an INTx interrupt is pending
  // whether or not INTx Disable keeps it off the line (PCI 3.0 §6.2.3): what drivers that mask
  // INTx through the command register (uio_pci_generic, VFIO) look at.
  if (intx_ && offset < pci::kStatus + 2 && offset + size > pci::kStatus) {
    config_.set_interrupt_status(isr_.load() != 0);
  }
}

void VirtioPciTransport::update_intx(const std::function<void()>& change) {
  std::lock_guard lock(intx_mutex_);
  change();
  const bool level = isr_.load() != 0 && !intx_disabled_.load() && !msix_.enabled();
  if (intx_ && level != intx_level_) {
    intx_->set_level(level);
    intx_level_ = level;
  }
}

// ---------------------------------------------------------------------------------------------
// The PCI_CFG window (spec §4.1.4.9): configuration accesses to pci_cfg_data become an access of
// cap.length bytes at cap.offset in BAR cap.bar. The BAR access runs outside the configuration
// lock (bar_read and bar_write take the transport's, which comes first).

namespace {
constexpr uint32_t kWindowData = offsetof(virtio_pci_cfg_cap, pci_cfg_data);
}

bool VirtioPciTransport::in_window(uint32_t offset, size_t size) const {
  // The data is 4-byte aligned: an access the configuration space accepts (1, 2 or 4 bytes,
  // naturally aligned) is wholly inside it or wholly outside.
  const uint32_t data = window_cap_ + kWindowData;
  return offset >= data && offset < data + 4 && (size == 1 || size == 2 || size == 4) &&
         offset % size == 0;
}

VirtioPciTransport::WindowTarget VirtioPciTransport::window_target_locked() const {
  return {config_.u8(window_cap_ + offsetof(virtio_pci_cap, bar)),
          config_.u32(window_cap_ + offsetof(virtio_pci_cap, offset)),
          config_.u32(window_cap_ + offsetof(virtio_pci_cap, length))};
}

bool VirtioPciTransport::window_target_ok(const WindowTarget& t, const char* access,
                                          const char* outcome) {
  const char* wrong = nullptr;
  if (t.length != 1 && t.length != 2 && t.length != 4) {
    wrong = "cap.length is not 1, 2 or 4";
  } else if (t.offset % t.length != 0) {
    wrong = "cap.offset is not a multiple of cap.length";
  } else if (t.bar != kRegisterBar) {
    wrong = "cap.bar is not the BAR of the virtIO structures (0)";
  } else if (t.offset >= kRegisterBarSize) {
    wrong = "cap.offset is beyond BAR 0";
  }
  if (wrong == nullptr) return true;
  guest_error(fmt::format("PCI_CFG window {} with bar {}, offset {:#x}, length {}: {}; {}", access,
                          t.bar, t.offset, t.length, wrong, outcome));
  return false;
}

bool VirtioPciTransport::intercept_config_read(uint32_t offset, std::span<uint8_t> data) {
  if (!in_window(offset, data.size())) return false;
  WindowTarget t;
  {
    std::lock_guard lock(config_mutex_);
    t = window_target_locked();
  }
  std::array<uint8_t, 4> window{};
  if (window_target_ok(t, "read", "read as 0"))
    bar_read(t.bar, t.offset, std::span(window).first(t.length));
  {
    std::lock_guard lock(config_mutex_);
    config_.set_u32(window_cap_ + kWindowData, static_cast<uint32_t>(load(window)));
  }
  std::memcpy(data.data(), window.data() + (offset - window_cap_ - kWindowData), data.size());
  return true;
}

bool VirtioPciTransport::intercept_config_write(uint32_t offset, std::span<const uint8_t> data) {
  if (!in_window(offset, data.size())) return false;
  WindowTarget t;
  std::array<uint8_t, 4> window{};
  {
    std::lock_guard lock(config_mutex_);
    store(window, config_.u32(window_cap_ + kWindowData));
    std::memcpy(window.data() + (offset - window_cap_ - kWindowData), data.data(), data.size());
    config_.set_u32(window_cap_ + kWindowData, static_cast<uint32_t>(load(window)));
    t = window_target_locked();
  }
  // The first cap.length bytes of pci_cfg_data, whatever width the driver wrote them with.
  if (window_target_ok(t, "write", "ignored"))
    bar_write(t.bar, t.offset, std::span(window).first(t.length));
  return true;
}

// ---------------------------------------------------------------------------------------------
// BAR access

void VirtioPciTransport::bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  std::string why;
  if (bar == kMsixBar) {
    const bool ok = offset >= kMsixPbaOffset ? msix_.pba_read(offset - kMsixPbaOffset, data, why)
                                             : msix_.table_read(offset, data, why);
    if (!ok) guest_error(why + "; read as 0");
    return;
  }
  if (bar != kRegisterBar) return;
  std::lock_guard lock(mutex_);
  if (offset < kCommonOffset + kCommonSize) return common_read(offset - kCommonOffset, data);
  if (offset >= kIsrOffset && offset < kIsrOffset + 4) {
    if (offset != kIsrOffset || data.size() != 1) {
      return guest_error(fmt::format("{}-byte read at ISR offset {:#x}: the ISR status is one byte",
                                     data.size(), offset - kIsrOffset));
    }
    update_intx([&] { data[0] = isr_.exchange(0); });  // reading acknowledges
    return;
  }
  if (offset >= kDeviceConfigOffset && offset < kDeviceConfigOffset + kDeviceConfigMax) {
    const uint64_t at = offset - kDeviceConfigOffset;
    if (!valid_config_access(at, data.size(), config_size_)) {
      return guest_error(fmt::format(
          "{}-byte read at config offset {:#x} is misaligned or beyond the {}-byte config "
          "space; read as 0",
          data.size(), at, config_size_));
    }
    return device_->read_config(static_cast<uint32_t>(at), data);
  }
  if (offset >= kNotifyOffset) return;  // notification registers read 0
  guest_error(fmt::format("read at BAR 0 offset {:#x}, where no register is; read as 0", offset));
}

void VirtioPciTransport::bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) {
  std::string why;
  if (bar == kMsixBar) {
    if (offset >= kMsixPbaOffset) {
      return guest_error("write to the MSI-X pending bits, which are read-only; ignored");
    }
    if (!msix_.table_write(offset, data, why)) guest_error(why + "; ignored");
    return;
  }
  if (bar != kRegisterBar) return;
  const bool common = offset < kCommonOffset + kCommonSize;
  // device_status may reset or activate the device, queue_enable start a queue.
  const PausedIo paused(*device_, common && (offset == VIRTIO_PCI_COMMON_STATUS ||
                                             offset == VIRTIO_PCI_COMMON_Q_ENABLE));
  std::lock_guard lock(mutex_);
  if (common) return common_write(offset - kCommonOffset, data);
  if (offset >= kNotifyOffset && offset < kNotifyOffset + kNotifyMultiplier * queues_.size()) {
    // A notification no ioeventfd caught (another access size, an address KVM refused) comes
    // here; the queue is the address's, whatever is written (VIRTIO_F_NOTIFICATION_DATA is not
    // offered). It goes to the queue's eventfd as if KVM had caught it, so the device works
    // where it always does (the event loop, its I/O thread, a back-end), never on this vCPU,
    // whose seccomp filter allows no host I/O.
    const auto queue = static_cast<uint16_t>((offset - kNotifyOffset) / kNotifyMultiplier);
    if (renotify(queue)) return;
    return notify_locked(queue);
  }
  if (offset >= kDeviceConfigOffset && offset < kDeviceConfigOffset + kDeviceConfigMax) {
    const uint64_t at = offset - kDeviceConfigOffset;
    if (!valid_config_access(at, data.size(), config_size_)) {
      return guest_error(fmt::format(
          "{}-byte write at config offset {:#x} is misaligned or beyond the {}-byte config "
          "space; ignored",
          data.size(), at, config_size_));
    }
    return device_->write_config(static_cast<uint32_t>(at), data);
  }
  guest_error(
      fmt::format("write at BAR 0 offset {:#x}, where no writable register is; ignored", offset));
}

// ---------------------------------------------------------------------------------------------
// Common configuration

Virtqueue* VirtioPciTransport::selected_queue(const char* field) {
  if (queue_select_ < queues_.size()) return &queues_[queue_select_];
  guest_error(fmt::format("{} written for queue {}, but the device has {} queues; ignored", field,
                          queue_select_, queues_.size()));
  return nullptr;
}

void VirtioPciTransport::common_read(uint64_t offset, std::span<uint8_t> data) {
  const Field* f = field_for(offset, data.size());
  if (f == nullptr) {
    return guest_error(
        fmt::format("{}-byte read at common configuration offset {:#x}: not a field; read as 0",
                    data.size(), offset));
  }
  const Virtqueue* q = queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
  uint64_t v = 0;
  switch (f->offset) {
    case VIRTIO_PCI_COMMON_DFSELECT:
      v = device_feature_select_;
      break;
    case VIRTIO_PCI_COMMON_DF:
      v = device_feature_select_ > 1 ? 0 : offered_features_ >> (32 * device_feature_select_);
      v &= 0xffffffffu;
      break;
    case VIRTIO_PCI_COMMON_GFSELECT:
      v = driver_feature_select_;
      break;
    case VIRTIO_PCI_COMMON_GF:
      v = driver_feature_select_ > 1 ? 0 : driver_features_ >> (32 * driver_feature_select_);
      v &= 0xffffffffu;
      break;
    case VIRTIO_PCI_COMMON_MSIX:
      v = config_vector_.load();
      break;
    case VIRTIO_PCI_COMMON_NUMQ:
      v = queues_.size();
      break;
    case VIRTIO_PCI_COMMON_STATUS:
      v = status_.load();
      break;
    case VIRTIO_PCI_COMMON_CFGGENERATION:
      v = config_generation_.load();
      break;
    case VIRTIO_PCI_COMMON_Q_SELECT:
      v = queue_select_;
      break;
    case VIRTIO_PCI_COMMON_Q_SIZE:
      v = q ? q->size() : 0;  // 0: no such queue
      break;
    case VIRTIO_PCI_COMMON_Q_MSIX:
      v = q ? queue_vectors_[queue_select_] : MsixTable::kNoVector;
      break;
    case VIRTIO_PCI_COMMON_Q_ENABLE:
      v = q && q->ready() ? 1 : 0;
      break;
    case VIRTIO_PCI_COMMON_Q_NOFF:
      v = q ? queue_select_ : 0;
      break;
    case VIRTIO_PCI_COMMON_Q_DESCLO:
      v = q ? q->desc_addr() : 0;
      break;
    case VIRTIO_PCI_COMMON_Q_AVAILLO:
      v = q ? q->avail_addr() : 0;
      break;
    case VIRTIO_PCI_COMMON_Q_USEDLO:
      v = q ? q->used_addr() : 0;
      break;
    default:
      break;
  }
  store(data, v >> (8 * (offset - f->offset)));
}

uint16_t VirtioPciTransport::accept_vector(uint16_t vector) const {
  // A vector the table does not have reads back as NO_VECTOR (spec §4.1.5.1.2).
  return vector < msix_.vectors() ? vector : MsixTable::kNoVector;
}

void VirtioPciTransport::common_write(uint64_t offset, std::span<const uint8_t> data) {
  const Field* f = field_for(offset, data.size());
  if (f == nullptr) {
    return guest_error(
        fmt::format("{}-byte write at common configuration offset {:#x}: not a field; ignored",
                    data.size(), offset));
  }
  const uint64_t value = load(data);
  const unsigned shift = static_cast<unsigned>(8 * (offset - f->offset));
  const auto merge = [&](uint64_t old) {
    const uint64_t mask = (data.size() == 8 ? ~0ull : (1ull << (8 * data.size())) - 1) << shift;
    return (old & ~mask) | ((value << shift) & mask);
  };
  switch (f->offset) {
    case VIRTIO_PCI_COMMON_DFSELECT:
      device_feature_select_ = static_cast<uint32_t>(value);
      return;
    case VIRTIO_PCI_COMMON_GFSELECT:
      driver_feature_select_ = static_cast<uint32_t>(value);
      return;
    case VIRTIO_PCI_COMMON_GF:
      if (status_ & VIRTIO_CONFIG_S_FEATURES_OK) {
        return guest_error("driver_feature written after FEATURES_OK; ignored");
      }
      if (driver_feature_select_ == 0) {
        driver_features_ = (driver_features_ & ~0xffffffffull) | (value & 0xffffffffu);
      } else if (driver_feature_select_ == 1) {
        driver_features_ = (driver_features_ & 0xffffffffull) | (value << 32);
      } else if (value != 0) {
        driver_features_beyond_64_ = true;
      }
      return;
    case VIRTIO_PCI_COMMON_MSIX:
      config_vector_ = accept_vector(static_cast<uint16_t>(value));
      return;
    case VIRTIO_PCI_COMMON_STATUS:
      return write_status(static_cast<uint8_t>(value));
    case VIRTIO_PCI_COMMON_Q_SELECT:
      queue_select_ = static_cast<uint16_t>(value);
      return;
    case VIRTIO_PCI_COMMON_Q_SIZE:
      if (Virtqueue* q = selected_queue("queue_size")) {
        if (q->ready()) {
          return guest_error(
              fmt::format("queue_size written while queue {} is enabled; ignored", queue_select_));
        }
        q->set_size(static_cast<uint16_t>(value));  // checked when the queue is enabled
      }
      return;
    case VIRTIO_PCI_COMMON_Q_MSIX:
      if (selected_queue("queue_msix_vector") != nullptr) {
        // A queue served elsewhere got its vector's eventfd at DRIVER_OK (spec: the driver
        // configures a queue before enabling it): until a reset it keeps that vector.
        if (external_ != nullptr && (status_ & VIRTIO_CONFIG_S_DRIVER_OK) &&
            queues_[queue_select_].ready()) {
          return guest_error(fmt::format(
              "queue_msix_vector written while queue {} is enabled and served elsewhere; it "
              "keeps vector {} until the device is reset",
              queue_select_, queue_vectors_[queue_select_]));
        }
        queue_vectors_[queue_select_] = accept_vector(static_cast<uint16_t>(value));
      }
      return;
    case VIRTIO_PCI_COMMON_Q_ENABLE:
      return write_queue_enable(static_cast<uint16_t>(value));
    case VIRTIO_PCI_COMMON_Q_DESCLO:
    case VIRTIO_PCI_COMMON_Q_AVAILLO:
    case VIRTIO_PCI_COMMON_Q_USEDLO: {
      Virtqueue* q = selected_queue(f->name);
      if (q == nullptr) return;
      if (q->ready()) {
        return guest_error(
            fmt::format("{} written while queue {} is enabled; ignored", f->name, queue_select_));
      }
      if (f->offset == VIRTIO_PCI_COMMON_Q_DESCLO) q->set_desc_addr(merge(q->desc_addr()));
      if (f->offset == VIRTIO_PCI_COMMON_Q_AVAILLO) q->set_avail_addr(merge(q->avail_addr()));
      if (f->offset == VIRTIO_PCI_COMMON_Q_USEDLO) q->set_used_addr(merge(q->used_addr()));
      return;
    }
    default:
      return guest_error(fmt::format("write to read-only field {}; ignored", f->name));
  }
}

void VirtioPciTransport::write_queue_enable(uint16_t value) {
  Virtqueue* q = selected_queue("queue_enable");
  if (q == nullptr) return;
  if (value != 1) {
    return guest_error(fmt::format(
        "queue_enable written with {} for queue {} (only 1 is allowed; a queue is taken down by "
        "a device reset); ignored",
        value, queue_select_));
  }
  if (q->ready()) return;
  if (!(status_ & VIRTIO_CONFIG_S_FEATURES_OK)) {
    return guest_error(fmt::format("queue {} enabled before FEATURES_OK; ignored", queue_select_));
  }
  std::string why;
  if (!q->enable(driver_features_, why)) {
    set_needs_reset(fmt::format("queue {} cannot be enabled: {}", queue_select_, why));
  }
}

void VirtioPciTransport::write_status(uint8_t value) {
  if (value == 0) return reset_device();
  const auto [next, activate, tell_needs_reset] = write_device_status(
      status_, value, "device_status",
      [this](std::string& why) {
        return features_acceptable(driver_features_, driver_features_beyond_64_, offered_features_,
                                   device_->feature_requirements(), why);
      },
      [this](const std::string& what) { guest_error(what); });
  status_ = next;
  if (tell_needs_reset) interrupt(config_vector_.load(), VIRTIO_PCI_ISR_CONFIG);
  if (activate) {
    log::debug("{}: driver ready, features {:#x}", name_, driver_features_);
    if (external_ != nullptr) {
      // Each queue's interrupts straight to its vector where the sink delivers it directly
      // (the vector is the one the driver chose before DRIVER_OK); else through the relay.
      std::vector<QueueEventfds> fds = external_fds_;
      for (size_t q = 0; q < fds.size() && q < queues_.size(); ++q) {
        const int direct = msix_.enabled() ? msix_.direct_eventfd(queue_vectors_[q]) : -1;
        if (direct < 0) continue;
        fds[q].call = direct;
        log::debug("{}: queue {} interrupts go straight to MSI-X vector {}", name_, q,
                   queue_vectors_[q]);
      }
      external_->set_queue_eventfds(std::move(fds));
      std::string why;
      if (!external_->start_queues(*this, driver_features_, queues_, why)) set_needs_reset(why);
      return;
    }
    device_->activate(*this, driver_features_);
    check_queues();
  }
}

void VirtioPciTransport::reset_device() {
  device_->reset();
  for (auto& q : queues_) q.reset();
  std::fill(queue_vectors_.begin(), queue_vectors_.end(), MsixTable::kNoVector);
  config_vector_ = MsixTable::kNoVector;
  status_ = 0;
  device_feature_select_ = driver_feature_select_ = 0;
  queue_select_ = 0;
  driver_features_ = 0;
  driver_features_beyond_64_ = false;
  update_intx([this] { isr_.store(0); });
  msix_.clear_pending();  // nor what it masked: the next driver would take it for its own
  std::lock_guard held_lock(held_mutex_);  // what the old driver was owed is no more
  held_vectors_.clear();
}

// ---------------------------------------------------------------------------------------------
// Notifications and interrupts

bool VirtioPciTransport::driver_live() const {
  const uint8_t s = status_;
  return (s & VIRTIO_CONFIG_S_DRIVER_OK) &&
         !(s & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED));
}

bool VirtioPciTransport::live() const {
  return driver_live() && bus_master_.load();
}

void VirtioPciTransport::notify(uint32_t queue_index) {
  std::lock_guard lock(mutex_);
  notify_locked(queue_index);
}

void VirtioPciTransport::notify_locked(uint32_t queue_index) {
  if (queue_index >= queues_.size()) return;
  if (status_ & VIRTIO_CONFIG_S_NEEDS_RESET) return;
  Virtqueue& q = queues_[queue_index];
  if (!driver_live() || !q.ready()) {
    return guest_error(
        fmt::format("notify for queue {}, which is not running; ignored", queue_index));
  }
  if (!bus_master_) {
    // Answered when the bit comes on (config_write_done).
    return log::debug("{}: notify for queue {} while Bus Master Enable is off; held", name_,
                      queue_index);
  }
  device_->queue_notify(static_cast<uint16_t>(queue_index), q);
  check_queues();
}

void VirtioPciTransport::check_queues() {
  for (size_t i = 0; i < queues_.size(); ++i) {
    if (queues_[i].broken()) {
      return set_needs_reset(fmt::format("queue {}: {}", i, queues_[i].error()));
    }
  }
}

void VirtioPciTransport::set_needs_reset(const std::string& why) {
  if (status_ & VIRTIO_CONFIG_S_NEEDS_RESET) return;
  guest_error(why + "; the device needs a reset");
  status_ |= VIRTIO_CONFIG_S_NEEDS_RESET;
  if (status_ & VIRTIO_CONFIG_S_DRIVER_OK) interrupt(config_vector_.load(), VIRTIO_PCI_ISR_CONFIG);
}

// With MSI-X enabled the vector alone (none: no interrupt); otherwise the ISR bit and INTx.
void VirtioPciTransport::interrupt(uint16_t vector, uint8_t isr_bit) {
  if (msix_.enabled()) {
    if (vector == MsixTable::kNoVector) return;
    if (!bus_master_) {
      // An MSI-X message is a memory write, which Bus Master Enable off forbids: held until it
      // comes on (config_write_done), unless it just has.
      std::lock_guard lock(held_mutex_);
      if (!bus_master_) {
        if (vector >= held_vectors_.size()) held_vectors_.resize(msix_.vectors());
        if (vector < held_vectors_.size()) held_vectors_[vector] = true;
        return;
      }
    }
    if (msix_.notify(vector)) return;
    // MSI-X was turned off since it was looked at: the ISR bit and INTx, as for a driver
    // without it.
  }
  update_intx([&] { isr_.fetch_or(isr_bit); });
}

void VirtioPciTransport::signal_used(uint16_t index) {
  if (index >= queues_.size() || !live()) return;
  if (queues_[index].needs_notification()) interrupt(queue_vectors_[index], kIsrQueue);
}

void VirtioPciTransport::set_external_eventfds(std::vector<QueueEventfds> fds) {
  std::lock_guard lock(mutex_);
  external_fds_ = std::move(fds);
}

void VirtioPciTransport::external_used(uint16_t index) {
  std::lock_guard lock(mutex_);
  // The server already applied the driver's suppression (EVENT_IDX, NO_INTERRUPT).
  if (index < queues_.size() && live()) interrupt(queue_vectors_[index], kIsrQueue);
}

void VirtioPciTransport::device_failed(const std::string& why) {
  std::lock_guard lock(mutex_);
  set_needs_reset(why);
}

void VirtioPciTransport::signal_config_change() {
  config_generation_.fetch_add(1);
  if (!(status_ & VIRTIO_CONFIG_S_DRIVER_OK)) return;
  interrupt(config_vector_.load(), VIRTIO_PCI_ISR_CONFIG);
}

bool VirtioPciTransport::with_queues(const std::function<void(std::span<Virtqueue>)>& fn) {
  std::lock_guard lock(mutex_);
  if (!live()) return false;
  fn(queues_);
  check_queues();
  return true;
}

}  // namespace libvmm
