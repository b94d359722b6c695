#include "libvmm/pci/vfio.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/vfio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/pci/vfio_device_file.hpp"

namespace libvmm::pci {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kVfioDriver = "vfio-pci";

bool is_hex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

// The driver a sysfs device directory is bound to ("" for none).
std::string driver_of(const fs::path& device) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(device / "driver", ec);
  return ec ? std::string() : target.filename().string();
}

std::string driver_override_commands(const std::string& address, const std::string& driver) {
  std::string commands =
      fmt::format("echo vfio-pci > /sys/bus/pci/devices/{0}/driver_override; ", address);
  if (!driver.empty()) {
    commands += fmt::format("echo {0} > /sys/bus/pci/devices/{0}/driver/unbind; ", address);
  }
  commands += fmt::format("echo {} > /sys/bus/pci/drivers_probe", address);
  return commands;
}

uint64_t rlimit_bytes(rlim_t value) {
  return value == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(value);
}

// CAP_IPC_LOCK (bit 14) in this process's effective set, from /proc/self/status.
bool has_ipc_lock() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    try {
      return (std::stoull(line.substr(7), nullptr, 16) >> 14) & 1;
    } catch (const std::exception&) {
      return false;
    }
  }
  return false;
}

uint16_t le16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | p[1] << 8);
}
uint32_t le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

}  // namespace

std::vector<BarRange> direct_ranges(std::span<const BarRange> mmappable,
                                    std::span<const BarRange> trapped, uint64_t page) {
  const uint64_t mask = page - 1;
  // The trapped pages, as [begin, end) offsets.
  std::vector<std::pair<uint64_t, uint64_t>> holes;
  for (const BarRange& t : trapped) {
    if (t.size == 0) continue;
    const uint64_t end = t.offset + t.size < t.offset ? UINT64_MAX : t.offset + t.size;
    holes.emplace_back(t.offset & ~mask,
                       end > UINT64_MAX - mask ? UINT64_MAX : (end + mask) & ~mask);
  }
  std::sort(holes.begin(), holes.end());
  std::vector<BarRange> out;
  for (const BarRange& a : mmappable) {
    if (a.size == 0 || a.offset > UINT64_MAX - mask || a.offset + a.size < a.offset) continue;
    uint64_t cursor = (a.offset + mask) & ~mask;  // whole pages only
    const uint64_t end = (a.offset + a.size) & ~mask;
    for (const auto& [h_begin, h_end] : holes) {
      if (h_end <= cursor) continue;
      if (h_begin >= end) break;
      if (h_begin > cursor) out.push_back({cursor, h_begin - cursor});
      cursor = h_end;
    }
    if (cursor < end) out.push_back({cursor, end - cursor});
  }
  std::sort(out.begin(), out.end(),
            [](const BarRange& x, const BarRange& y) { return x.offset < y.offset; });
  return out;
}

std::optional<std::string> parse_pci_address(std::string_view text) {
  // [DDDD:]BB:DD.F
  std::string_view domain = "0000";
  if (std::count(text.begin(), text.end(), ':') == 2) {
    domain = text.substr(0, text.find(':'));
    text.remove_prefix(domain.size() + 1);
  }
  if (domain.size() != 4 || !is_hex(domain) || text.size() != 7 || text[2] != ':' ||
      text[5] != '.' || !is_hex(text.substr(0, 2)) || !is_hex(text.substr(3, 2)) || text[6] < '0' ||
      text[6] > '7') {
    return std::nullopt;
  }
  const unsigned device =
      static_cast<unsigned>(std::stoul(std::string(text.substr(3, 2)), nullptr, 16));
  if (device > 31) return std::nullopt;
  std::string out = std::string(domain);
  out += ':';
  out += text;
  std::transform(out.begin(), out.end(), out.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  return out;
}

unsigned check_vfio_device(const VfioHost& host, const std::string& address,
                           const std::string& label) {
  const fs::path device = host.sysfs / "bus/pci/devices" / address;
  std::error_code ec;
  if (!fs::exists(device, ec)) {
    throw UserError(
        fmt::format("{}: no such PCI device on this host ({} is missing; lspci -D "
                    "lists the host's devices)",
                    label, device.string()));
  }
  const std::string driver = driver_of(device);
  if (driver != kVfioDriver) {
    throw UserError(fmt::format(
        "{}: the device is {}, not to vfio-pci; hand it to vfio-pci (as root): {}", label,
        driver.empty() ? std::string("bound to no driver")
                       : fmt::format("bound to driver {}", driver),
        driver_override_commands(address, driver)));
  }
  const fs::path group_link = fs::read_symlink(device / "iommu_group", ec);
  if (ec) {
    throw UserError(fmt::format(
        "{}: the device is in no IOMMU group: this host has no IOMMU enabled; turn on VT-d or "
        "AMD-Vi in the firmware and boot the host kernel with intel_iommu=on (Intel) or "
        "amd_iommu=on (AMD)",
        label));
  }
  const std::string group_name = group_link.filename().string();
  unsigned group = 0;
  try {
    size_t used = 0;
    group = static_cast<unsigned>(std::stoul(group_name, &used, 10));
    if (used != group_name.size()) throw std::invalid_argument("group");
  } catch (const std::exception&) {
    throw UserError(fmt::format("{}: cannot read its IOMMU group ({} points to '{}')", label,
                                (device / "iommu_group").string(), group_link.string()));
  }
  // Every other device of the group must leave it to VFIO: bound to vfio-pci or to nothing
  // (a PCIe port's own driver is allowed too, as the kernel does).
  std::vector<std::string> others;
  const fs::path members = host.sysfs / "kernel/iommu_groups" / group_name / "devices";
  for (const auto& entry : fs::directory_iterator(members, ec)) {
    const std::string other = entry.path().filename().string();
    if (other == address) continue;
    const std::string other_driver = driver_of(entry.path());
    if (other_driver.empty() || other_driver == kVfioDriver || other_driver == "pcieport") {
      continue;
    }
    others.push_back(fmt::format("{} (driver {})", other, other_driver));
  }
  if (!others.empty()) {
    std::sort(others.begin(), others.end());
    std::string list;
    for (const std::string& o : others) {
      if (!list.empty()) list += ", ";
      list += o;
    }
    throw UserError(fmt::format(
        "{}: IOMMU group {} is not viable: {} {} in the same group and still bound to a host "
        "driver; bind every device of the group to vfio-pci (or unbind it) first",
        label, group, list, others.size() == 1 ? "is" : "are"));
  }
  return group;
}

std::string vfio_group_open_error(const std::string& label, const fs::path& path, int err) {
  if (err == EACCES || err == EPERM) {
    return fmt::format(
        "{}: cannot open {}: permission denied; run vmm as root or give this user the group's "
        "device (chown USER {}) and a RLIMIT_MEMLOCK for guest RAM",
        label, path.string(), path.string());
  }
  if (err == ENOENT) {
    return fmt::format("{}: {} is missing: load the vfio-pci module (modprobe vfio-pci)", label,
                       path.string());
  }
  if (err == EBUSY) {
    return fmt::format(
        "{}: {} is busy: another process (another VM?) has the device's IOMMU "
        "group open",
        label, path.string());
  }
  return fmt::format("{}: cannot open {}: {}", label, path.string(), std::strerror(err));
}

std::string vfio_memlock_error(const std::string& label, uint64_t needed, uint64_t limit) {
  return fmt::format(
      "{}: guest RAM must be pinned for the device's DMA: {} bytes ({}) are needed but "
      "RLIMIT_MEMLOCK allows {} bytes; raise it (ulimit -l {}, or LimitMEMLOCK= in a systemd "
      "unit) or run vmm as root",
      label, needed, format_size(needed), limit, (needed + 1023) / 1024);
}

bool can_pin(uint64_t bytes, uint64_t& limit) {
  struct rlimit rl {};
  limit = ::getrlimit(RLIMIT_MEMLOCK, &rl) == 0 ? rlimit_bytes(rl.rlim_cur) : 0;
  return limit >= bytes || has_ipc_lock();
}

// ---------------------------------------------------------------------------------------------
// The container

VfioContainer::VfioContainer(VfioHost host) : host_(std::move(host)) {}

VfioContainer::~VfioContainer() = default;  // closing the container unmaps and unpins

int VfioContainer::group(unsigned number, const std::string& label) {
  if (auto it = groups_.find(number); it != groups_.end()) return it->second.get();
  if (!container_) {
    const fs::path path = host_.dev / "vfio/vfio";
    container_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!container_) throw UserError(vfio_group_open_error(label, path, errno));
    if (::ioctl(container_.get(), VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
      throw UserError(label + ": this host's VFIO speaks another API version");
    }
    if (::ioctl(container_.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0 &&
        ::ioctl(container_.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0) {
      throw UserError(label +
                      ": this host's VFIO has no type1 IOMMU (load vfio_iommu_type1 and boot "
                      "with intel_iommu=on or amd_iommu=on)");
    }
  }
  const fs::path path = host_.dev / "vfio" / std::to_string(number);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) throw UserError(vfio_group_open_error(label, path, errno));
  vfio_group_status status{};
  status.argsz = sizeof status;
  if (::ioctl(fd.get(), VFIO_GROUP_GET_STATUS, &status) != 0) {
    throw UserError(fmt::format("{}: VFIO_GROUP_GET_STATUS on {}: {}", label, path.string(),
                                std::strerror(errno)));
  }
  if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    throw UserError(fmt::format(
        "{}: IOMMU group {} is not viable: a device in /sys/kernel/iommu_groups/{}/devices is "
        "bound to a host driver; bind each to vfio-pci first",
        label, number, number));
  }
  int c = container_.get();
  if (::ioctl(fd.get(), VFIO_GROUP_SET_CONTAINER, &c) != 0) {
    throw UserError(fmt::format("{}: cannot add IOMMU group {} to the VFIO container: {}", label,
                                number, std::strerror(errno)));
  }
  if (!iommu_set_) {
    const int type = ::ioctl(container_.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0
                         ? VFIO_TYPE1v2_IOMMU
                         : VFIO_TYPE1_IOMMU;
    if (::ioctl(container_.get(), VFIO_SET_IOMMU, type) != 0) {
      const int err = errno;
      throw UserError(fmt::format(
          "{}: the type1 IOMMU refused the group: {}{}", label, std::strerror(err),
          err == EPERM ? " (the host's IOMMU cannot isolate the device's interrupts: no "
                         "interrupt remapping; vfio_iommu_type1's allow_unsafe_interrupts=1 "
                         "overrides this at the host's risk)"
                       : ""));
    }
    iommu_set_ = true;
  }
  const int raw = fd.get();
  groups_.emplace(number, std::move(fd));
  return raw;
}

void VfioContainer::map_dma(uint64_t iova, void* host, uint64_t size, bool readonly,
                            const std::string& label) {
  if (!iommu_set_) throw std::logic_error("VfioContainer::map_dma before a group");
  vfio_iommu_type1_dma_map map{};
  map.argsz = sizeof map;
  map.flags = VFIO_DMA_MAP_FLAG_READ | (readonly ? 0 : VFIO_DMA_MAP_FLAG_WRITE);
  map.vaddr = reinterpret_cast<uint64_t>(host);
  map.iova = iova;
  map.size = size;
  if (::ioctl(container_.get(), VFIO_IOMMU_MAP_DMA, &map) != 0) {
    const int err = errno;
    if (err == ENOMEM) {
      uint64_t limit = 0;
      static_cast<void>(can_pin(0, limit));
      throw UserError(vfio_memlock_error(label, mapped_ + size, limit));
    }
    throw UserError(fmt::format("{}: mapping guest memory [{:#x}, {:#x}) for DMA: {}", label, iova,
                                iova + size, std::strerror(err)));
  }
  mapped_ += size;
  log::debug("VFIO: guest memory [{:#x}, {:#x}) mapped for DMA", iova, iova + size);
}

// ---------------------------------------------------------------------------------------------
// The device

VfioPciDevice::VfioPciDevice(const Identity& identity, std::string name,
                             std::unique_ptr<VfioDeviceFile> file)
    : PciFunction(identity), name_(std::move(name)), file_(std::move(file)) {}

std::shared_ptr<VfioPciDevice> VfioPciDevice::open(VfioContainer& container, unsigned group,
                                                   const std::string& address,
                                                   const std::string& label,
                                                   const MsiSinkFactory& msi,
                                                   std::shared_ptr<BarMapper> mapper) {
  const int group_fd = container.group(group, label);
  UniqueFd fd(::ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, address.c_str()));
  if (!fd) {
    throw UserError(
        fmt::format("{}: VFIO cannot open the device: {}", label, std::strerror(errno)));
  }
  return open(std::make_unique<VfioDeviceFd>(std::move(fd)), address, label, msi,
              std::move(mapper));
}

std::shared_ptr<VfioPciDevice> VfioPciDevice::open(std::unique_ptr<VfioDeviceFile> file,
                                                   const std::string& address,
                                                   const std::string& label,
                                                   const MsiSinkFactory& msi,
                                                   std::shared_ptr<BarMapper> mapper) {
  vfio_device_info info{};
  info.argsz = sizeof info;
  if (!file->device_info(info) || !(info.flags & VFIO_DEVICE_FLAGS_PCI)) {
    throw UserError(label + ": VFIO does not describe it as a PCI device");
  }
  VfioDeviceFile& dev_file = *file;  // owned by `file`, then by the device
  auto region = [&dev_file, &label](uint32_t index) {
    vfio_region_info r{};
    r.argsz = sizeof r;
    r.index = index;
    if (!dev_file.region_info(r)) {
      throw UserError(fmt::format("{}: VFIO_DEVICE_GET_REGION_INFO {}: {}", label, index,
                                  std::strerror(errno)));
    }
    return r;
  };
  const vfio_region_info cfg = region(VFIO_PCI_CONFIG_REGION_INDEX);
  std::array<uint8_t, kConfigSize> bytes{};
  if (file->read(cfg.offset, bytes) != static_cast<ssize_t>(bytes.size())) {
    throw UserError(label + ": cannot read the device's configuration space");
  }
  if ((bytes[kHeaderType] & 0x7f) != 0) {
    throw UserError(label + ": the device is a PCI bridge (header type " +
                    std::to_string(bytes[kHeaderType] & 0x7f) +
                    "); only endpoints can be passed through");
  }
  Identity id;
  id.vendor_id = le16(&bytes[kVendorId]);
  id.device_id = le16(&bytes[kDeviceId]);
  id.revision = bytes[kRevision];
  id.class_code = le32(&bytes[kRevision]) >> 8;
  id.subsystem_vendor_id = le16(&bytes[kSubsystemVendorId]);
  id.subsystem_id = le16(&bytes[kSubsystemId]);
  std::shared_ptr<VfioPciDevice> dev(
      new VfioPciDevice(id, fmt::format("vfio {}", address), std::move(file)));
  dev->can_reset_ = info.flags & VFIO_DEVICE_FLAGS_RESET;
  dev->config_region_ = {cfg.offset, cfg.size};
  dev->device_command_ = le16(&bytes[kCommand]);

  // The BARs: kind from the device's registers, size from VFIO.
  for (unsigned i = 0; i < kBarCount && i < info.num_regions; ++i) {
    const vfio_region_info r = region(VFIO_PCI_BAR0_REGION_INDEX + i);
    const uint32_t reg = le32(&bytes[kBar0 + 4 * i]);
    BarInfo bar;
    bar.kind = (reg & 1) ? BarKind::io : ((reg & 6) == 4 ? BarKind::mem64 : BarKind::mem32);
    bar.prefetchable = !(reg & 1) && (reg & 8);
    bar.size = r.size;
    if (r.size != 0) {
      // What ConfigSpace::add_bar takes (a 32-bit BAR holds at most 2 GiB): a device saying
      // otherwise is refused here, not by add_bar's std::invalid_argument.
      if ((r.size & (r.size - 1)) != 0 || r.size < (bar.kind == BarKind::io ? 4u : 16u) ||
          (bar.kind == BarKind::io && r.size > 256) ||
          (bar.kind == BarKind::mem32 && r.size > (uint64_t{1} << 31))) {
        throw UserError(fmt::format("{}: BAR {} has a size ({:#x} bytes) this VMM cannot place",
                                    label, i, r.size));
      }
      if (bar.kind == BarKind::mem64 && i + 1 == kBarCount) {
        throw UserError(fmt::format(
            "{}: BAR {} is 64-bit but has no register after it for its upper half", label, i));
      }
      dev->config_.add_bar(i, bar);
      dev->bars_[i] = {r.offset, r.size};
    }
    if (bar.kind == BarKind::mem64) ++i;  // the upper half
  }

  // MSI-X: the table and PBA where the device has them, emulated; else MSI, emulated. Other
  // capabilities (power management, PCI Express) are not offered. INTx where the machine wires
  // it (set_intx).
  uint32_t at = bytes[kCapabilityPointer] & 0xfc;
  std::optional<uint32_t> msix_at, msi_at;
  for (int guard = 0; at >= kFirstCapability && at + 4 <= kConfigSize && guard < 48; ++guard) {
    if (bytes[at] == kCapMsix) msix_at = at;
    if (bytes[at] == kCapMsi) msi_at = at;
    at = bytes[at + 1] & 0xfc;
  }
  // INTx: where the device has a pin and VFIO offers the interrupt.
  vfio_irq_info intx{};
  intx.argsz = sizeof intx;
  intx.index = VFIO_PCI_INTX_IRQ_INDEX;
  dev->has_intx_ = bytes[kInterruptPin] != 0 && dev_file.irq_info(intx) && intx.count == 1;
  if (!msix_at || *msix_at + 12 > kConfigSize) {
    // MSI: as many vectors as the device may ask for (Multiple Message Capable) and VFIO offers.
    vfio_irq_info msi_irq{};
    msi_irq.argsz = sizeof msi_irq;
    msi_irq.index = VFIO_PCI_MSI_IRQ_INDEX;
    if (msi_at && *msi_at + 4 <= kConfigSize && dev_file.irq_info(msi_irq) && msi_irq.count != 0) {
      const uint32_t capable = 1u << ((le16(&bytes[*msi_at + 2]) >> 1) & 7u);
      dev->msi_ = std::make_unique<MsiCapability>(std::min(capable, msi_irq.count));
      dev->sink_ = msi(dev->msi_->vectors());
      dev->msi_->add_to(dev->config_);
    } else if (!dev->has_intx_) {
      throw UserError(label +
                      ": the device has neither MSI-X, MSI nor an INTx pin VFIO offers; this "
                      "VMM passes through MSI-X, MSI and INTx interrupts");
    }
    dev->config_.set_interrupt_pin(0);  // until the machine gives the pin a line (set_intx)
    if (mapper) {
      dev->mapper_ = std::move(mapper);
      dev->mmap_bars(label);
    }
    if (dev->can_reset_ && !dev_file.reset()) {
      log::warn("{}: reset at start failed: {}", label, std::strerror(errno));
    }
    log::debug("{}: {:04x}:{:04x} class {:06x}, {}{}", dev->name_, id.vendor_id, id.device_id,
               id.class_code,
               dev->msi_ ? fmt::format("{} MSI vectors", dev->msi_->vectors()) : "INTx only",
               dev->can_reset_ ? ", resettable" : "");
    return dev;
  }
  const uint16_t vectors = static_cast<uint16_t>((le16(&bytes[*msix_at + 2]) & 0x7ff) + 1);
  const uint32_t table = le32(&bytes[*msix_at + 4]);
  const uint32_t pba = le32(&bytes[*msix_at + 8]);
  dev->table_bar_ = table & 7;
  dev->pba_bar_ = pba & 7;
  dev->table_offset_ = table & ~7u;
  dev->pba_offset_ = pba & ~7u;
  if (dev->table_bar_ >= kBarCount || dev->pba_bar_ >= kBarCount ||
      dev->bars_[dev->table_bar_].size == 0 || dev->bars_[dev->pba_bar_].size == 0) {
    throw UserError(label + ": the device's MSI-X table or PBA is in a BAR it does not have");
  }
  vfio_irq_info irq{};
  irq.argsz = sizeof irq;
  irq.index = VFIO_PCI_MSIX_IRQ_INDEX;
  if (!dev_file.irq_info(irq) || irq.count == 0) {
    throw UserError(label + ": VFIO offers no MSI-X interrupts for the device");
  }
  const auto used = static_cast<uint16_t>(std::min<uint32_t>(vectors, irq.count));
  dev->sink_ = msi(used);
  dev->msix_ = std::make_unique<MsixTable>(used, dev->sink_);
  dev->msix_cap_ = dev->msix_->add_capability(
      dev->config_, dev->table_bar_, static_cast<uint32_t>(dev->table_offset_), dev->pba_bar_,
      static_cast<uint32_t>(dev->pba_offset_));
  dev->config_.set_interrupt_pin(0);
  if (mapper) {
    dev->mapper_ = std::move(mapper);
    dev->mmap_bars(label);
  }

  if (dev->can_reset_ && !dev_file.reset()) {
    log::warn("{}: reset at start failed: {}", label, std::strerror(errno));
  }
  log::debug("{}: {:04x}:{:04x} class {:06x}, {} MSI-X vectors (table BAR {} at {:#x}){}",
             dev->name_, id.vendor_id, id.device_id, id.class_code, dev->msix_->vectors(),
             dev->table_bar_, dev->table_offset_, dev->can_reset_ ? ", resettable" : "");
  return dev;
}

void VfioPciDevice::log_slow_paths() const {
  log::debug(
      "{}: {} BAR accesses trapped ({} to the MSI-X table and PBA), {} interrupts "
      "through the event loop",
      name_, trapped_.load(), trapped_msix_.load(), loop_interrupts_.load());
}

VfioPciDevice::~VfioPciDevice() {
  {
    std::lock_guard lock(direct_mutex_);
    // The slots go with the VM (KVM follows the unmapping); no KVM call here, on the thread
    // whose seccomp filter has none.
    for (Direct& d : direct_) file_->unmap(d.host, d.range.size);
  }
  // Interrupts off (the eventfds close with us), then the device back to its power-on state
  // before it returns to the host.
  {
    std::lock_guard lock(vectors_mutex_);
    if (!use_irqs_locked(IrqMode::none)) {
      log::warn("{}: VFIO did not turn the device's interrupts off at exit: {}", name_,
                std::strerror(errno));
    }
  }
  if (can_reset_ && !file_->reset()) {
    log::warn("{}: reset at exit failed: {}", name_, std::strerror(errno));
  } else if (can_reset_) {
    log::debug("{}: reset, back to the host", name_);
  }
}

void VfioPciDevice::mmap_bars(const std::string& label) {
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  for (unsigned bar = 0; bar < kBarCount; ++bar) {
    if (bars_[bar].size == 0 || config_.bar(bar).kind == BarKind::io) continue;
    // The region's info again, with its capabilities (the sparse-mmap areas).
    std::vector<uint8_t> reply;
    if (!file_->region_info_with_caps(VFIO_PCI_BAR0_REGION_INDEX + bar, reply) ||
        reply.size() < sizeof(vfio_region_info)) {
      continue;
    }
    vfio_region_info fixed{};
    std::memcpy(&fixed, reply.data(), sizeof fixed);
    const vfio_region_info* info = &fixed;
    const size_t have = reply.size();
    if (!(info->flags & VFIO_REGION_INFO_FLAG_MMAP) ||
        !(info->flags & VFIO_REGION_INFO_FLAG_READ) ||
        !(info->flags & VFIO_REGION_INFO_FLAG_WRITE)) {
      log::debug("{}: BAR {} cannot be mmapped: its accesses trap", name_, bar);
      continue;
    }
    // The BAR as open() sized it: a second answer that differs does not widen what is mapped.
    const uint64_t size = std::min<uint64_t>(info->size, bars_[bar].size);
    std::vector<BarRange> areas{{0, size}};
    if (info->flags & VFIO_REGION_INFO_FLAG_CAPS) {
      // Walk the capability chain (offsets from the start of the info), bounded.
      const uint8_t* bytes = reply.data();
      uint32_t at = info->cap_offset;
      for (int guard = 0; at != 0 && guard < 16; ++guard) {
        if (at % 4 != 0 || at < sizeof(vfio_region_info) ||
            at + sizeof(vfio_info_cap_header) > have) {
          break;
        }
        vfio_info_cap_header header{};
        std::memcpy(&header, bytes + at, sizeof header);
        if (header.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP &&
            at + sizeof(vfio_region_info_cap_sparse_mmap) <= have) {
          vfio_region_info_cap_sparse_mmap sparse{};
          std::memcpy(&sparse, bytes + at, sizeof sparse);
          areas.clear();
          for (uint32_t i = 0; i < sparse.nr_areas && i < 64; ++i) {
            const size_t area_at = at + sizeof sparse + i * sizeof(vfio_region_sparse_mmap_area);
            if (area_at + sizeof(vfio_region_sparse_mmap_area) > have) break;
            vfio_region_sparse_mmap_area area{};
            std::memcpy(&area, bytes + area_at, sizeof area);
            if (area.offset < size && area.size <= size - area.offset) {
              areas.push_back({area.offset, area.size});
            }
          }
        }
        at = header.next;
      }
    }
    std::vector<BarRange> trapped;
    if (msix_ && table_bar_ == bar) trapped.push_back({table_offset_, msix_->table_size()});
    if (msix_ && pba_bar_ == bar) trapped.push_back({pba_offset_, msix_->pba_size()});
    for (const BarRange& r : pci::direct_ranges(areas, trapped, page)) {
      void* host = file_->map(bars_[bar].offset + r.offset, r.size);
      if (host == nullptr) {
        log::warn("{}: BAR {} [{:#x}, {:#x}) cannot be mmapped ({}): its accesses trap", label, bar,
                  r.offset, r.offset + r.size, std::strerror(errno));
        continue;
      }
      direct_.push_back({bar, r, host, std::nullopt, 0});
      log::debug("{}: BAR {} [{:#x}, {:#x}) mmapped, to go straight into the guest", name_, bar,
                 r.offset, r.offset + r.size);
    }
  }
}

void VfioPciDevice::unmap_direct_locked(unsigned bar) {
  for (Direct& d : direct_) {
    if (d.bar != bar || !d.handle) continue;
    try {
      mapper_->unmap(*d.handle);
    } catch (const std::exception& e) {
      // KVM refused to delete the slot: the device must not decode memory the guest still
      // reaches directly while VFIO zaps it; say so loudly.
      log::error("{}: BAR {} at {:#x} left in the guest: {}", name_, bar, d.gpa, e.what());
      continue;
    }
    d.handle.reset();
    if (direct_logs_.fetch_add(1, std::memory_order_relaxed) < 16) {
      log::debug("{}: BAR {} [{:#x}, {:#x}) out of the guest (was at {:#x})", name_, bar,
                 d.range.offset, d.range.offset + d.range.size, d.gpa);
    }
  }
}

void VfioPciDevice::bar_moved(unsigned bar, std::optional<BarMapping> old,
                              std::optional<BarMapping> now) {
  static_cast<void>(old);
  if (!mapper_) return;
  std::lock_guard lock(direct_mutex_);
  unmap_direct_locked(bar);
  if (!now || now->kind == BarKind::io) return;
  for (Direct& d : direct_) {
    if (d.bar != bar) continue;
    // Its old slot could not be deleted (said above): a second slot would leak the first, and
    // its handle with it.
    if (d.handle) continue;
    const uint64_t gpa = now->address + d.range.offset;
    const std::string what =
        fmt::format("{} BAR {} [{:#x}, {:#x})", name_, bar, gpa, gpa + d.range.size);
    try {
      d.handle = mapper_->map(gpa, d.range.size, d.host, what);
      d.gpa = gpa;
    } catch (const std::exception& e) {
      guest_error(fmt::format("BAR {} pages stay trapped: {}", bar, e.what()));
      continue;
    }
    // Logged the first times (a guest may move BARs without end).
    if (direct_logs_.fetch_add(1, std::memory_order_relaxed) < 16) {
      log::debug("{}: BAR {} [{:#x}, {:#x}) in the guest at [{:#x}, {:#x}) (memory slot {})", name_,
                 bar, d.range.offset, d.range.offset + d.range.size, gpa, gpa + d.range.size,
                 *d.handle);
    }
  }
}

size_t VfioPciDevice::ranges_in_guest() const {
  std::lock_guard lock(direct_mutex_);
  return static_cast<size_t>(
      std::count_if(direct_.begin(), direct_.end(), [](const Direct& d) { return d.handle; }));
}

bool VfioPciDevice::set_intx(int trigger, int unmask) {
  if (!has_intx_) return false;
  intx_trigger_ = trigger;
  intx_unmask_ = unmask;
  intx_on_ = true;
  {
    std::lock_guard lock(config_mutex_);
    config_.set_interrupt_pin(1);  // INTA#
  }
  log::debug("{}: INTx signalled as a KVM irqfd with a resample eventfd", name_);
  return true;
}

bool VfioPciDevice::use_irqs_locked(IrqMode mode, uint32_t count) {
  // VFIO has one kind of interrupt on at a time: INTx, MSI or the MSI-X vectors (QEMU switches
  // the same way as its guest enables and disables them). The one on goes off first.
  if (mode == irq_mode_ && count == irq_count_) return true;
  const auto index_of = [](IrqMode m) {
    return m == IrqMode::intx  ? VFIO_PCI_INTX_IRQ_INDEX
           : m == IrqMode::msi ? VFIO_PCI_MSI_IRQ_INDEX
                               : VFIO_PCI_MSIX_IRQ_INDEX;
  };
  // If VFIO keeps the old kind on, the new one cannot go on (VFIO refuses a second kind), and
  // what we record must stay what VFIO has: the next switch tries the old kind again.
  if (irq_mode_ != IrqMode::none &&
      !file_->set_irqs(index_of(irq_mode_), VFIO_IRQ_SET_ACTION_TRIGGER, {})) {
    return false;
  }
  irq_mode_ = IrqMode::none;
  irq_count_ = 0;
  bool on = true;
  switch (mode) {
    case IrqMode::none:
      break;
    case IrqMode::intx: {
      // VFIO masks the line each time it fires (it is level-triggered); the guest's EOI,
      // through KVM's resample eventfd, unmasks it.
      const int32_t trigger = intx_trigger_, unmask = intx_unmask_;
      on = file_->set_irqs(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER, {&trigger, 1});
      if (on &&
          !file_->set_irqs(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK, {&unmask, 1})) {
        // Half on is not "none": VFIO would refuse the next kind while INTx stays enabled.
        if (!file_->set_irqs(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER, {})) {
          irq_mode_ = IrqMode::intx;
        }
        on = false;
      }
      break;
    }
    case IrqMode::msi:
      on = count != 0 && count <= msi_fds_.size() &&
           file_->set_irqs(VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER,
                           std::span<const int32_t>(msi_fds_.data(), count));
      break;
    case IrqMode::msix:
      on = file_->set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER, msix_fds_);
      break;
  }
  if (!on) return false;
  irq_mode_ = mode;
  irq_count_ = count;
  return true;
}

void VfioPciDevice::msi_written_locked() {
  const MsiCapability::State now = msi_->state(config_);
  if (now == msi_state_ && !msi_switch_failed_) return;
  msi_state_ = now;
  const IrqMode mode = now.enabled ? IrqMode::msi : (intx_on_ ? IrqMode::intx : IrqMode::none);
  msi_switch_failed_ = !use_irqs_locked(mode, mode == IrqMode::msi ? now.vectors : 0);
  if (msi_switch_failed_) {
    guest_error(fmt::format("VFIO refused to switch the device's interrupts to {}: {}",
                            now.enabled ? fmt::format("MSI ({} vectors)", now.vectors)
                                        : std::string(intx_on_ ? "INTx" : "none"),
                            std::strerror(errno)));
  }
  // The vectors that go straight to KVM follow the guest's message and mask bits (the sink
  // holds what is signalled while a vector is masked and delivers it at the unmask).
  for (uint16_t v = 0; v < direct_states_.size(); ++v) {
    const auto vector = static_cast<uint8_t>(v);
    const MsixTable::VectorState state{now.deliverable(vector), now.address,
                                       MsiCapability::message_data(now, vector)};
    if (state == direct_states_[v]) continue;
    direct_states_[v] = state;
    sink_->direct_state(v, state.deliverable, state.address, state.data);
  }
  // Those through the loop: what was held while masked goes out at the unmask; nothing is
  // pending once MSI is off.
  if (!now.enabled) msi_pending_ = 0;
  for (uint8_t v = static_cast<uint8_t>(direct_states_.size()); v < msi_->vectors(); ++v) {
    if (!(msi_pending_ >> v & 1u) || !now.deliverable(v)) continue;
    msi_pending_ &= ~(1u << v);
    sink_->send(now.address, MsiCapability::message_data(now, v));
  }
}

void VfioPciDevice::deliver_msi(uint8_t vector) {
  MsiCapability::State state;
  {
    std::lock_guard lock(vectors_mutex_);
    state = msi_state_;
    if (!state.enabled || vector >= state.vectors) return;  // VFIO signals only enabled vectors
    if (!state.deliverable(vector)) {
      msi_pending_ |= 1u << vector;
      return;
    }
  }
  sink_->send(state.address, MsiCapability::message_data(state, vector));
}

void VfioPciDevice::config_reading(uint32_t offset, uint32_t size) {
  // Lock held on the configuration space.
  if (!msi_ || !msi_->covers_pending(offset, size)) return;
  std::lock_guard lock(vectors_mutex_);
  uint32_t pending = msi_pending_;
  for (uint16_t v = 0; v < direct_states_.size(); ++v) {
    if (sink_->direct_pending(v)) pending |= 1u << v;
  }
  msi_->set_pending(config_, pending);
}

uint16_t VfioPciDevice::make_vector_fds(EventLoop& loop, uint16_t n, const char* kind,
                                        std::vector<int32_t>& fds,
                                        std::function<void(uint16_t)> deliver) {
  uint16_t direct = 0;
  for (uint16_t v = 0; v < n; ++v) {
    // Straight to the guest where the sink has an irqfd for it (the first vectors, while GSIs
    // last); the rest through the loop.
    if (const int fd = sink_->direct_eventfd(v); fd >= 0 && direct == v) {
      fds.push_back(fd);
      ++direct;
      continue;
    }
    UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd) throw_errno(fmt::format("eventfd for an {} vector of {}", kind, name_));
    const int32_t raw = efd.get();
    fds.push_back(raw);
    std::atomic<uint64_t>* counter = &loop_interrupts_;
    loop.add(raw, EPOLLIN, [raw, v, counter, deliver](uint32_t) {
      uint64_t count;
      if (::read(raw, &count, sizeof count) == sizeof count) {
        counter->fetch_add(1, std::memory_order_relaxed);
        deliver(v);
      }
    });
    vector_fds_.push_back(std::move(efd));
  }
  return direct;
}

void VfioPciDevice::start(EventLoop& loop) {
  uint16_t direct = 0;
  if (msi_) {
    // VFIO gets them when the guest enables MSI.
    direct = make_vector_fds(loop, msi_->vectors(), "MSI", msi_fds_,
                             [this](uint16_t v) { deliver_msi(static_cast<uint8_t>(v)); });
    log::debug("{}: {} MSI vectors, {} of them as KVM irqfds", name_, msi_->vectors(), direct);
  } else if (msix_) {
    MsixTable* table = msix_.get();
    direct = make_vector_fds(loop, msix_->vectors(), "MSI-X", msix_fds_,
                             [table](uint16_t v) { table->notify(v); });
    const uint16_t n = msix_->vectors();
    if (direct != 0) {
      log::debug("{}: MSI-X vectors 0-{} signalled as KVM irqfds, {} through the event loop", name_,
                 direct - 1, n - direct);
    } else {
      log::debug("{}: MSI-X vectors 0-{} signalled through the event loop", name_, n - 1);
    }
  }
  // With INTx wired, VFIO starts on INTx and turns to MSI or MSI-X when the guest enables it;
  // else a device's MSI-X vectors are on in VFIO from now on (MSI waits for the guest).
  const IrqMode mode = intx_on_ ? IrqMode::intx : (msix_ ? IrqMode::msix : IrqMode::none);
  std::lock_guard lock(vectors_mutex_);
  direct_states_.assign(direct, MsixTable::VectorState{});
  if (!use_irqs_locked(mode, mode == IrqMode::msix ? msix_->vectors() : 0)) {
    throw UserError(fmt::format("{}: VFIO cannot give the device's {} eventfds: {}", name_,
                                mode == IrqMode::intx ? "INTx" : "MSI-X vectors",
                                std::strerror(errno)));
  }
}

void VfioPciDevice::sync_direct_vectors_locked() {
  for (uint16_t v = 0; v < direct_states_.size(); ++v) {
    const std::optional<MsixTable::VectorState> now = msix_->state(v);
    if (!now || *now == direct_states_[v]) continue;
    direct_states_[v] = *now;
    sink_->direct_state(v, now->deliverable, now->address, now->data);
  }
}

bool VfioPciDevice::in_msix_table(unsigned bar, uint64_t offset, uint64_t size) const {
  return msix_ && bar == table_bar_ && offset + size > table_offset_ &&
         offset < table_offset_ + msix_->table_size();
}

bool VfioPciDevice::in_msix_pba(unsigned bar, uint64_t offset, uint64_t size) const {
  return msix_ && bar == pba_bar_ && offset + size > pba_offset_ &&
         offset < pba_offset_ + msix_->pba_size();
}

void VfioPciDevice::bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  std::string why;
  trapped_.fetch_add(1, std::memory_order_relaxed);
  if (in_msix_table(bar, offset, data.size()) || in_msix_pba(bar, offset, data.size())) {
    trapped_msix_.fetch_add(1, std::memory_order_relaxed);
  }
  if (in_msix_table(bar, offset, data.size())) {
    if (offset < table_offset_ || !msix_->table_read(offset - table_offset_, data, why)) {
      guest_error(fmt::format("MSI-X table read: {}", why.empty() ? "straddles the table" : why));
    }
    return;
  }
  if (in_msix_pba(bar, offset, data.size())) {
    if (offset < pba_offset_ || !msix_->pba_read(offset - pba_offset_, data, why)) {
      guest_error(fmt::format("MSI-X PBA read: {}", why.empty() ? "straddles the PBA" : why));
      return;
    }
    // The direct vectors' pending bits are with the sink (signals held while masked).
    std::lock_guard lock(vectors_mutex_);
    const uint64_t first = (offset - pba_offset_) * 8;
    for (size_t i = 0; i < data.size() * 8; ++i) {
      if (first + i < direct_states_.size() &&
          sink_->direct_pending(static_cast<uint16_t>(first + i))) {
        data[i / 8] = static_cast<uint8_t>(data[i / 8] | 1u << (i % 8));
      }
    }
    return;
  }
  if (bar >= kBarCount || offset >= bars_[bar].size || data.size() > bars_[bar].size - offset) {
    return guest_error(fmt::format("read beyond BAR {}", bar));
  }
  if (file_->read(bars_[bar].offset + offset, data) != static_cast<ssize_t>(data.size())) {
    std::fill(data.begin(), data.end(), 0xff);
    guest_error(fmt::format("BAR {} read at {:#x} failed: {}", bar, offset, std::strerror(errno)));
  }
}

void VfioPciDevice::bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) {
  std::string why;
  trapped_.fetch_add(1, std::memory_order_relaxed);
  if (in_msix_table(bar, offset, data.size()) || in_msix_pba(bar, offset, data.size())) {
    trapped_msix_.fetch_add(1, std::memory_order_relaxed);
  }
  if (in_msix_table(bar, offset, data.size())) {
    std::lock_guard lock(vectors_mutex_);
    if (offset < table_offset_ || !msix_->table_write(offset - table_offset_, data, why)) {
      guest_error(fmt::format("MSI-X table write: {}", why.empty() ? "straddles the table" : why));
      return;
    }
    sync_direct_vectors_locked();
    return;
  }
  if (in_msix_pba(bar, offset, data.size())) {
    return guest_error("write to the MSI-X pending bits, which are read-only; ignored");
  }
  if (bar >= kBarCount || offset >= bars_[bar].size || data.size() > bars_[bar].size - offset) {
    return guest_error(fmt::format("write beyond BAR {}", bar));
  }
  if (file_->write(bars_[bar].offset + offset, data) != static_cast<ssize_t>(data.size())) {
    guest_error(fmt::format("BAR {} write at {:#x} failed: {}", bar, offset, std::strerror(errno)));
  }
}

void VfioPciDevice::write_device_command(uint16_t guest_command) {
  constexpr uint16_t kPassed = kCommandIo | kCommandMemory | kCommandBusMaster;
  // INTx disabled on the device unless the guest has the line (then the guest's bit).
  const uint16_t intx = intx_on_ ? (guest_command & kCommandIntxDisable) : kCommandIntxDisable;
  // The device's other bits as they are now (a reset may have cleared them since it was
  // opened), not as they were then.
  uint8_t now[2] = {};
  if (file_->read(config_region_.offset + kCommand, now) == 2) {
    device_command_ = static_cast<uint16_t>(now[0] | (now[1] << 8));
  }
  const uint16_t value = static_cast<uint16_t>((device_command_ & ~kPassed & ~kCommandIntxDisable) |
                                               (guest_command & kPassed) | intx);
  uint8_t b[2] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8)};
  if (file_->write(config_region_.offset + kCommand, b) != 2) {
    guest_error(
        fmt::format("command register write to the device failed: {}", std::strerror(errno)));
  }
}

void VfioPciDevice::config_written(uint32_t offset, uint32_t size) {
  // Lock held on the configuration space.
  if (msi_ && msi_->covers(offset, size)) {
    std::lock_guard lock(vectors_mutex_);
    msi_written_locked();
  }
  if (msix_ && offset < msix_cap_ + 4 && offset + size > msix_cap_ + 2) {
    std::lock_guard lock(vectors_mutex_);
    msix_->control_written(config_.u16(msix_cap_ + 2));
    if (intx_on_ && !use_irqs_locked(msix_->enabled() ? IrqMode::msix : IrqMode::intx,
                                     msix_->enabled() ? msix_->vectors() : 0)) {
      guest_error(fmt::format("VFIO refused to switch the device's interrupts to {}: {}",
                              msix_->enabled() ? "MSI-X" : "INTx", std::strerror(errno)));
    }
    sync_direct_vectors_locked();
  }
  if (offset < kCommand + 2 && offset + size > kCommand) {
    // Memory decoding off: the BAR pages leave the guest before the device stops decoding
    // (VFIO then revokes the mmaps, and a vCPU must not reach them through a memory slot).
    if (!(config_.command() & kCommandMemory) && mapper_) {
      std::lock_guard lock(direct_mutex_);
      for (unsigned bar = 0; bar < kBarCount; ++bar) unmap_direct_locked(bar);
    }
    write_device_command(config_.command());
  }
}

}  // namespace libvmm::pci
