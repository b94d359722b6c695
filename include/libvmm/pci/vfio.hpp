// VFIO passthrough of a host PCI function (Linux's vfio-pci with the type1 IOMMU, the
// group/container interface: Documentation/driver-api/vfio.rst).
//
// The host side is checked first, from sysfs, so that every refusal is one line naming the
// device and what to do (check_vfio_device): the device exists, is bound to vfio-pci, sits in
// an IOMMU group (else the host has no IOMMU), and every other device of that group is bound
// to vfio-pci or to no driver (else the group is not viable). Then a VfioContainer holds the
// groups and maps every guest RAM region for DMA at its guest-physical address, and each
// VfioPciDevice is a PciFunction on our host bridge:
//   - configuration space: identity and class from the device; the BARs, the command register
//     and the MSI-X capability emulated on our ConfigSpace (the command register's I/O, memory
//     and bus-master bits are passed on to the device); other capabilities (MSI, power
//     management, PCI Express) are not offered to the guest, nor INTx;
//   - BAR accesses are forwarded to the device's regions (pread/pwrite on the device fd), the
//     MSI-X table and PBA are emulated (MsixTable);
//   - every MSI-X vector of the device signals an eventfd (VFIO_DEVICE_SET_IRQS); the event loop
//     delivers it through the emulated table, which applies the guest's masks and addresses;
//   - the device is reset (VFIO_DEVICE_RESET) when opened and when closed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/unique_fd.hpp"
#include "libvmm/pci/msix.hpp"
#include "libvmm/pci/pci_function.hpp"

namespace libvmm {
class EventLoop;
}

namespace libvmm::pci {

// Where the host's sysfs and /dev are (tests point them at a fake tree).
struct VfioHost {
  std::filesystem::path sysfs = "/sys";
  std::filesystem::path dev = "/dev";
};

// "0000:01:00.0" (domain:bus:device.function, hexadecimal); a missing domain ("01:00.0") is
// taken as 0000. nullopt when `text` is no PCI address.
std::optional<std::string> parse_pci_address(std::string_view text);

// The sysfs checks: returns the IOMMU group number of device `address` (a canonical address),
// or throws UserError starting with `label` ("--vfio 0000:01:00.0") for a missing device, a
// device not bound to vfio-pci (with the driver_override commands), no IOMMU (with the kernel
// parameters), or a group that is not viable (naming the other devices and their drivers).
unsigned check_vfio_device(const VfioHost& host, const std::string& address,
                           const std::string& label);

// The message for a failed open of the group's /dev/vfio/N (errno `err`).
std::string vfio_group_open_error(const std::string& label, const std::filesystem::path& path,
                                  int err);
// The message when `needed` bytes of guest RAM cannot be pinned under a `limit`-byte
// RLIMIT_MEMLOCK.
std::string vfio_memlock_error(const std::string& label, uint64_t needed, uint64_t limit);
// Whether this process may pin `bytes` of memory: RLIMIT_MEMLOCK allows it, or it has
// CAP_IPC_LOCK (which lifts the limit). `limit` gets the current limit.
bool can_pin(uint64_t bytes, uint64_t& limit);

// The type1 IOMMU container and its groups; one per VM.
class VfioContainer {
 public:
  explicit VfioContainer(VfioHost host = {});
  ~VfioContainer();
  VfioContainer(const VfioContainer&) = delete;
  VfioContainer& operator=(const VfioContainer&) = delete;

  // The group's descriptor, opened (and added to the container) on first use; the first group
  // also sets the IOMMU type. Throws UserError (label first) when the host refuses.
  int group(unsigned number, const std::string& label);
  // Maps guest memory [iova, iova + size) backed by host memory `host` for the devices' DMA.
  // Only after the first group(). Throws UserError when pinning fails.
  void map_dma(uint64_t iova, void* host, uint64_t size, bool readonly, const std::string& label);
  bool has_iommu() const { return iommu_set_; }

 private:
  VfioHost host_;
  UniqueFd container_;
  std::map<unsigned, UniqueFd> groups_;
  bool iommu_set_ = false;
  uint64_t mapped_ = 0;
};

class VfioPciDevice final : public PciFunction {
 public:
  // Opens device `address` of `group` (VfioContainer::group) and reads its configuration.
  // Throws UserError (label first) for what it cannot pass through.
  static std::shared_ptr<VfioPciDevice> open(VfioContainer& container, unsigned group,
                                             const std::string& address, const std::string& label,
                                             std::shared_ptr<MsiSink> msi);
  ~VfioPciDevice() override;

  std::string name() const override { return name_; }
  void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) override;

  // Hands the device's MSI-X vectors to eventfds the loop serves. Before the guest runs.
  void start(EventLoop& loop);
  uint16_t msix_vectors() const { return msix_ ? msix_->vectors() : 0; }

 protected:
  void config_written(uint32_t offset, uint32_t size) override;

 private:
  struct Region {
    uint64_t offset = 0;  // in the device fd
    uint64_t size = 0;
  };
  VfioPciDevice(const Identity& identity, std::string name, UniqueFd fd);
  bool in_msix_table(unsigned bar, uint64_t offset, uint64_t size) const;
  bool in_msix_pba(unsigned bar, uint64_t offset, uint64_t size) const;
  void write_device_command(uint16_t guest_command);

  std::string name_;
  UniqueFd fd_;
  bool can_reset_ = false;
  Region config_region_;
  std::array<Region, kBarCount> bars_{};
  std::unique_ptr<MsixTable> msix_;
  uint32_t msix_cap_ = 0;
  unsigned table_bar_ = 0, pba_bar_ = 0;
  uint64_t table_offset_ = 0, pba_offset_ = 0;
  uint16_t device_command_ = 0;  // the command register's value on the device at open
  std::vector<UniqueFd> vector_fds_;
};

}  // namespace libvmm::pci
