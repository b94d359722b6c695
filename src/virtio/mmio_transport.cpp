#include "libvmm/virtio/mmio_transport.hpp"

#define VIRTIO_RING_NO_LEGACY
#include <fmt/format.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>

#include "device_status.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

constexpr uint32_t kMagic = 0x74726976;  // "virt"
constexpr uint32_t kVersion = 2;         // virtIO 1.x register layout; no legacy
constexpr uint64_t kConfigOffset = VIRTIO_MMIO_CONFIG;
constexpr uint64_t kQueueReset = 0x0c0;  // virtIO 1.2; newer than <linux/virtio_mmio.h> here

static_assert(VirtioMmioTransport::notify_offset() == VIRTIO_MMIO_QUEUE_NOTIFY);
static_assert(VirtioMmioTransport::kWindowSize == kConfigOffset + 0x100);
const char* register_name(uint64_t offset) {
  switch (offset) {
    case VIRTIO_MMIO_MAGIC_VALUE:
      return "MagicValue";
    case VIRTIO_MMIO_VERSION:
      return "Version";
    case VIRTIO_MMIO_DEVICE_ID:
      return "DeviceID";
    case VIRTIO_MMIO_VENDOR_ID:
      return "VendorID";
    case VIRTIO_MMIO_DEVICE_FEATURES:
      return "DeviceFeatures";
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
      return "QueueNumMax";
    case VIRTIO_MMIO_INTERRUPT_STATUS:
      return "InterruptStatus";
    case VIRTIO_MMIO_SHM_LEN_LOW:
      return "SHMLenLow";
    case VIRTIO_MMIO_SHM_LEN_HIGH:
      return "SHMLenHigh";
    case VIRTIO_MMIO_SHM_BASE_LOW:
      return "SHMBaseLow";
    case VIRTIO_MMIO_SHM_BASE_HIGH:
      return "SHMBaseHigh";
    case VIRTIO_MMIO_CONFIG_GENERATION:
      return "ConfigGeneration";
    default:
      return nullptr;
  }
}

// 1, 2, 4 or 8 bytes, naturally aligned (spec §4.2.2.2), inside the device's config space.
uint32_t low(uint64_t v) {
  return static_cast<uint32_t>(v);
}
uint32_t high(uint64_t v) {
  return static_cast<uint32_t>(v >> 32);
}
uint64_t with_low(uint64_t v, uint32_t lo) {
  return (v & ~0xffffffffull) | lo;
}
uint64_t with_high(uint64_t v, uint32_t hi) {
  return (v & 0xffffffffull) | uint64_t{hi} << 32;
}

}  // namespace

VirtioMmioTransport::VirtioMmioTransport(std::shared_ptr<VirtioDevice> device,
                                         const GuestMemory& memory, std::shared_ptr<IrqLine> irq)
    : device_(std::move(device)),
      irq_(std::move(irq)),
      external_(device_ ? device_->external_queues() : nullptr),
      name_(device_ ? device_->name() : std::string()),
      device_id_(device_ ? device_->device_id() : 0),
      offered_features_(device_ ? offered_features(*device_) : 0),
      config_size_(device_ ? device_->config_size() : 0) {
  if (!device_ || !irq_) throw std::invalid_argument("virtio-mmio: a device and an irq are needed");
  if (config_size_ > kWindowSize - kConfigOffset) {
    throw std::invalid_argument(
        fmt::format("{}: config space of {} bytes does not fit virtio-mmio", name_, config_size_));
  }
  const auto sizes = device_->queue_max_sizes();
  if (sizes.empty()) throw std::invalid_argument(name_ + ": a virtIO device has queues");
  queues_.reserve(sizes.size());
  for (const uint16_t max : sizes) {
    if (max == 0 || max > Virtqueue::kMaxSize || !std::has_single_bit(max)) {
      throw std::invalid_argument(
          fmt::format("{}: queue size {} is not a power of two up to 32768", name_, max));
    }
    queues_.emplace_back(memory, max);
  }
}

std::string VirtioMmioTransport::name() const {
  return name_;
}

void VirtioMmioTransport::guest_error(const std::string& message) {
  guest_errors_.warn(name_, message);
}

// ---------------------------------------------------------------------------------------------
// Bus access

void VirtioMmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  std::lock_guard lock(mutex_);
  if (offset >= kConfigOffset) return read_config(offset - kConfigOffset, data);
  if (data.size() != 4 || offset % 4 != 0) {
    return guest_error(
        fmt::format("{}-byte read at {:#x}: registers take aligned 4-byte "
                    "accesses; read as 0",
                    data.size(), offset));
  }
  const uint32_t value = read_register(offset);
  std::memcpy(data.data(), &value, sizeof(value));  // little-endian, like the guest
}

VirtioMmioTransport::~VirtioMmioTransport() {
  // A device I/O thread may be inside with_queues() on this transport: let it finish, and keep
  // it from starting again (virtio_device.hpp).
  device_->pause_io();
}

void VirtioMmioTransport::write(uint64_t offset, std::span<const uint8_t> data) {
  // Status may reset or activate the device, QueueReady take a queue down.
  const PausedIo paused(*device_,
                        offset == VIRTIO_MMIO_STATUS || offset == VIRTIO_MMIO_QUEUE_READY);
  std::lock_guard lock(mutex_);
  if (offset >= kConfigOffset) return write_config(offset - kConfigOffset, data);
  if (data.size() != 4 || offset % 4 != 0) {
    return guest_error(
        fmt::format("{}-byte write at {:#x}: registers take aligned 4-byte "
                    "accesses; ignored",
                    data.size(), offset));
  }
  uint32_t value = 0;
  std::memcpy(&value, data.data(), sizeof(value));
  write_register(offset, value);
}

void VirtioMmioTransport::read_config(uint64_t offset, std::span<uint8_t> data) {
  const uint64_t size = data.size();
  if (!valid_config_access(offset, size, config_size_)) {
    return guest_error(
        fmt::format("{}-byte read at config offset {:#x} is misaligned or beyond "
                    "the {}-byte config space; read as 0",
                    size, offset, config_size_));
  }
  device_->read_config(static_cast<uint32_t>(offset), data);
}

void VirtioMmioTransport::write_config(uint64_t offset, std::span<const uint8_t> data) {
  const uint64_t size = data.size();
  if (!valid_config_access(offset, size, config_size_)) {
    return guest_error(
        fmt::format("{}-byte write at config offset {:#x} is misaligned or beyond "
                    "the {}-byte config space; ignored",
                    size, offset, config_size_));
  }
  device_->write_config(static_cast<uint32_t>(offset), data);
}

// ---------------------------------------------------------------------------------------------
// Registers

Virtqueue* VirtioMmioTransport::selected_queue(const char* register_name) {
  if (queue_sel_ < queues_.size()) return &queues_[queue_sel_];
  guest_error(fmt::format("{} written for queue {}, but the device has {} queues; ignored",
                          register_name, queue_sel_, queues_.size()));
  return nullptr;
}

uint32_t VirtioMmioTransport::read_register(uint64_t offset) {
  const Virtqueue* q = queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
  switch (offset) {
    case VIRTIO_MMIO_MAGIC_VALUE:
      return kMagic;
    case VIRTIO_MMIO_VERSION:
      return kVersion;
    case VIRTIO_MMIO_DEVICE_ID:
      return device_id_;
    case VIRTIO_MMIO_VENDOR_ID:
      return kVendorId;
    case VIRTIO_MMIO_DEVICE_FEATURES:
      if (device_features_sel_ > 1) return 0;
      return device_features_sel_ == 0 ? low(offered_features_) : high(offered_features_);
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
      return q ? q->max_size() : 0;
    case VIRTIO_MMIO_QUEUE_NUM:
      return q ? q->size() : 0;
    case VIRTIO_MMIO_QUEUE_READY:
      return q && q->ready() ? 1 : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
      // Queues served elsewhere interrupt through their own irqfds, which cannot set a bit
      // here: while the device runs, every interrupt may be a used-buffer one (a driver
      // checks its rings and finds nothing new in the others).
      if (external_ != nullptr && live()) return interrupt_status_.load() | VIRTIO_MMIO_INT_VRING;
      return interrupt_status_.load();
    case VIRTIO_MMIO_STATUS:
      return status_.load();
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
      return q ? low(q->desc_addr()) : 0;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
      return q ? high(q->desc_addr()) : 0;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
      return q ? low(q->avail_addr()) : 0;
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
      return q ? high(q->avail_addr()) : 0;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
      return q ? low(q->used_addr()) : 0;
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
      return q ? high(q->used_addr()) : 0;
    // No shared memory regions: every SHMSel reads as length (and base) -1.
    case VIRTIO_MMIO_SHM_LEN_LOW:
    case VIRTIO_MMIO_SHM_LEN_HIGH:
    case VIRTIO_MMIO_SHM_BASE_LOW:
    case VIRTIO_MMIO_SHM_BASE_HIGH:
      return 0xffffffff;
    case kQueueReset:
      return 0;
    case VIRTIO_MMIO_CONFIG_GENERATION:
      return config_generation_.load();
    // Write-only registers read as 0.
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
    case VIRTIO_MMIO_DRIVER_FEATURES:
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
    case VIRTIO_MMIO_QUEUE_SEL:
    case VIRTIO_MMIO_QUEUE_NOTIFY:
    case VIRTIO_MMIO_INTERRUPT_ACK:
    case VIRTIO_MMIO_SHM_SEL:
      return 0;
    default:
      guest_error(fmt::format("read of unknown register {:#x}; read as 0", offset));
      return 0;
  }
}

void VirtioMmioTransport::write_register(uint64_t offset, uint32_t value) {
  switch (offset) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
      device_features_sel_ = value;
      return;
    case VIRTIO_MMIO_DRIVER_FEATURES:
      if (status_ & VIRTIO_CONFIG_S_FEATURES_OK) {
        return guest_error("DriverFeatures written after FEATURES_OK; ignored");
      }
      if (driver_features_sel_ == 0) {
        driver_features_ = with_low(driver_features_, value);
      } else if (driver_features_sel_ == 1) {
        driver_features_ = with_high(driver_features_, value);
      } else if (value != 0) {
        driver_features_beyond_64_ = true;  // refused at FEATURES_OK
      }
      return;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
      driver_features_sel_ = value;
      return;
    case VIRTIO_MMIO_QUEUE_SEL:
      queue_sel_ = value;
      return;
    case VIRTIO_MMIO_QUEUE_NUM:
      if (Virtqueue* q = selected_queue("QueueNum")) {
        if (q->ready())
          return guest_error(
              fmt::format("QueueNum written while queue {} is ready; "
                          "ignored",
                          queue_sel_));
        // An oversized value must fail at QueueReady, not wrap to something that passes.
        q->set_size(value > Virtqueue::kMaxSize ? 0 : static_cast<uint16_t>(value));
      }
      return;
    case VIRTIO_MMIO_QUEUE_READY:
      return write_queue_ready(value);
    case VIRTIO_MMIO_QUEUE_NOTIFY:
      // One no ioeventfd caught: to the queue's eventfd as if KVM had, so the device works
      // where it always does, never on this vCPU (its seccomp filter allows no host I/O).
      if (value < queues_.size() && renotify(static_cast<uint16_t>(value))) return;
      return notify_locked(value);
    case VIRTIO_MMIO_INTERRUPT_ACK:
      interrupt_status_.fetch_and(~value);
      return;
    case VIRTIO_MMIO_STATUS:
      return write_status(value);
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
    case VIRTIO_MMIO_QUEUE_USED_LOW:
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
      return write_queue_address(offset, value);
    case VIRTIO_MMIO_SHM_SEL:
      return;  // there are no regions to select
    case kQueueReset:
      return guest_error("QueueReset written, but VIRTIO_F_RING_RESET is not offered; ignored");
    default:
      if (const char* name = register_name(offset)) {
        return guest_error(fmt::format("write to read-only register {}; ignored", name));
      }
      return guest_error(fmt::format("write to unknown register {:#x}; ignored", offset));
  }
}

void VirtioMmioTransport::write_queue_address(uint64_t offset, uint32_t value) {
  Virtqueue* q = selected_queue("QueueDesc/Driver/Device");
  if (q == nullptr) return;
  if (q->ready()) {
    return guest_error(
        fmt::format("queue {} address written while it is ready; ignored", queue_sel_));
  }
  switch (offset) {
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
      q->set_desc_addr(with_low(q->desc_addr(), value));
      break;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
      q->set_desc_addr(with_high(q->desc_addr(), value));
      break;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
      q->set_avail_addr(with_low(q->avail_addr(), value));
      break;
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
      q->set_avail_addr(with_high(q->avail_addr(), value));
      break;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
      q->set_used_addr(with_low(q->used_addr(), value));
      break;
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
      q->set_used_addr(with_high(q->used_addr(), value));
      break;
    default:
      break;
  }
}

void VirtioMmioTransport::write_queue_ready(uint32_t value) {
  Virtqueue* q = selected_queue("QueueReady");
  if (q == nullptr) return;
  if (value == 0) {
    // The driver is taking the queue down: the device forgets the chains it holds of it, and
    // the queue its setup.
    if (q->ready()) device_->queue_reset(queue_sel_);
    q->reset();
    return;
  }
  if (!(status_ & VIRTIO_CONFIG_S_FEATURES_OK)) {
    return guest_error(fmt::format("queue {} made ready before FEATURES_OK; ignored", queue_sel_));
  }
  std::string why;
  if (!q->enable(driver_features_, why)) {
    set_needs_reset(fmt::format("queue {} cannot be made ready: {}", queue_sel_, why));
  }
}

void VirtioMmioTransport::write_status(uint32_t value) {
  if (value == 0) return reset_device();
  const auto [next, activate, tell_needs_reset] = write_device_status(
      static_cast<uint8_t>(status_), value, "Status",
      [this](std::string& why) {
        return features_acceptable(driver_features_, driver_features_beyond_64_, offered_features_,
                                   device_->feature_requirements(), why);
      },
      [this](const std::string& what) { guest_error(what); });
  status_ = next;
  if (tell_needs_reset) raise(VIRTIO_MMIO_INT_CONFIG);
  if (activate) {
    log::debug("{}: driver ready, features {:#x}", name_, driver_features_);
    if (external_ != nullptr) {
      std::string why;
      if (!external_->start_queues(*this, driver_features_, queues_, why)) set_needs_reset(why);
      return;
    }
    device_->activate(*this, driver_features_);
    check_queues();
  }
}

void VirtioMmioTransport::reset_device() {
  device_->reset();
  for (auto& q : queues_) q.reset();
  status_ = 0;
  device_features_sel_ = driver_features_sel_ = queue_sel_ = 0;
  driver_features_ = 0;
  driver_features_beyond_64_ = false;
  interrupt_status_ = 0;
}

// ---------------------------------------------------------------------------------------------
// Notifications and interrupts

bool VirtioMmioTransport::live() const {
  const uint32_t s = status_;
  return (s & VIRTIO_CONFIG_S_DRIVER_OK) &&
         !(s & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED));
}

void VirtioMmioTransport::notify(uint32_t queue_index) {
  std::lock_guard lock(mutex_);
  notify_locked(queue_index);
}

void VirtioMmioTransport::notify_locked(uint32_t queue_index) {
  if (queue_index >= queues_.size()) {
    return guest_error(fmt::format("notify for queue {}, but the device has {} queues; ignored",
                                   queue_index, queues_.size()));
  }
  if (status_ & VIRTIO_CONFIG_S_NEEDS_RESET) return;  // already reported
  Virtqueue& q = queues_[queue_index];
  if (!live() || !q.ready()) {
    return guest_error(
        fmt::format("notify for queue {}, which is not running; ignored", queue_index));
  }
  device_->queue_notify(static_cast<uint16_t>(queue_index), q);
  check_queues();
}

void VirtioMmioTransport::check_queues() {
  for (size_t i = 0; i < queues_.size(); ++i) {
    if (queues_[i].broken()) {
      return set_needs_reset(fmt::format("queue {}: {}", i, queues_[i].error()));
    }
  }
}

void VirtioMmioTransport::set_needs_reset(const std::string& why) {
  if (status_ & VIRTIO_CONFIG_S_NEEDS_RESET) return;
  guest_error(why + "; the device needs a reset");
  status_ |= VIRTIO_CONFIG_S_NEEDS_RESET;
  // After DRIVER_OK the driver learns of it through a config change interrupt (spec §2.1.2).
  if (status_ & VIRTIO_CONFIG_S_DRIVER_OK) raise(VIRTIO_MMIO_INT_CONFIG);
}

void VirtioMmioTransport::raise(uint32_t interrupt_bit) {
  interrupt_status_.fetch_or(interrupt_bit);  // set before the interrupt arrives
  irq_->pulse();
}

void VirtioMmioTransport::signal_used(uint16_t index) {
  if (index >= queues_.size() || !live()) return;
  if (queues_[index].needs_notification()) raise(VIRTIO_MMIO_INT_VRING);
}

void VirtioMmioTransport::signal_config_change() {
  config_generation_.fetch_add(1);
  if (status_ & VIRTIO_CONFIG_S_DRIVER_OK) raise(VIRTIO_MMIO_INT_CONFIG);
}

void VirtioMmioTransport::device_failed(const std::string& why) {
  std::lock_guard lock(mutex_);
  set_needs_reset(why);
}

bool VirtioMmioTransport::with_queues(const std::function<void(std::span<Virtqueue>)>& fn) {
  std::lock_guard lock(mutex_);
  if (!live()) return false;
  fn(queues_);
  check_queues();
  return true;
}

}  // namespace libvmm
