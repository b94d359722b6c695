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
//     and bus-master bits are passed on to the device), or, for a device without MSI-X, its
//     MSI capability (MsiCapability: 64-bit, per-vector masks emulated); other capabilities (power
//     management, PCI Express) are not offered to the guest; the command register's INTx
//     disable bit is the guest's where the device's INTx is passed through;
//   - the BARs' pages go straight into the guest where VFIO lets them be mmapped (the region's
//     MMAP flag, and its sparse-mmap areas where it lists them): each such area, less the pages
//     that hold the MSI-X table and PBA, is mmapped at open and installed as a KVM memory slot
//     (a BarMapper) where the guest places the BAR, while it decodes memory; removed when the
//     guest moves the BAR or turns memory decoding off (before the device hears of it). The
//     other accesses trap and are forwarded to the device's regions (pread/pwrite on the device
//     file, a VfioDeviceFile); the MSI-X table and PBA are emulated (MsixTable);
//   - every MSI-X vector of the device signals an eventfd (VFIO_DEVICE_SET_IRQS): where the
//     sink offers one (MsiSink::direct_eventfd: a KVM irqfd on the vector's GSI route), the host
//     kernel's interrupt reaches the guest without this process; the device tells the sink each
//     change of the vector's state the guest programs (route, masks) and reads the PBA's bits
//     from it. Other vectors signal an eventfd of ours that the event loop delivers through the
//     emulated table, which applies the guest's masks and addresses;
//   - MSI (a device without MSI-X): as MSI-X's vectors, each vector an eventfd VFIO signals
//     (direct to a KVM irqfd where the sink offers one), switched on in VFIO with as many
//     vectors as the guest enables, and off again (to INTx where wired) when it disables MSI;
//   - INTx, where the device has a pin: VFIO signals a level-triggered KVM irqfd on the line the
//     machine gives it (x86_64: in the host bridge's _PRT) and masks the line until the guest's
//     EOI signals KVM's resample eventfd, which VFIO takes as the unmask;
//   - the device is reset (VFIO_DEVICE_RESET) when opened and when closed.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/unique_fd.hpp"
#include "libvmm/pci/msi.hpp"
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

// Where a function's BAR pages go straight into the guest: KVM memory slots on a VM.
class BarMapper {
 public:
  virtual ~BarMapper() = default;
  // Maps host memory [host, host + size) at guest-physical `gpa` (both page aligned) and
  // returns a handle for unmap(); throws std::exception saying why it cannot (the pages then
  // keep trapping). `what` names the range in messages.
  virtual uint32_t map(uint64_t gpa, uint64_t size, void* host, const std::string& what) = 0;
  virtual void unmap(uint32_t handle) = 0;
};

// A range of a BAR, as offset and size within it.
struct BarRange {
  uint64_t offset = 0;
  uint64_t size = 0;
  bool operator==(const BarRange&) const = default;
};

// The parts of a BAR that go into the guest: the `mmappable` areas (VFIO's, in the BAR) less
// every page (of `page` bytes, a power of two) that a `trapped` range touches, clipped to the
// pages the areas cover whole. Sorted by offset; empty parts dropped.
std::vector<BarRange> direct_ranges(std::span<const BarRange> mmappable,
                                    std::span<const BarRange> trapped, uint64_t page);

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

class VfioDeviceFile;

class VfioPciDevice final : public PciFunction {
 public:
  // Opens device `address` of `group` (VfioContainer::group) and reads its configuration.
  // Throws UserError (label first) for what it cannot pass through.
  // `msi` makes the sink of its MSI-X vectors (given how many it has).
  using MsiSinkFactory = std::function<std::shared_ptr<MsiSink>(uint16_t vectors)>;
  static std::shared_ptr<VfioPciDevice> open(VfioContainer& container, unsigned group,
                                             const std::string& address, const std::string& label,
                                             const MsiSinkFactory& msi,
                                             std::shared_ptr<BarMapper> mapper = nullptr);
  // The same on a device file already open (the real one, or a test's fake), which the device
  // then owns; `address` names it.
  static std::shared_ptr<VfioPciDevice> open(std::unique_ptr<VfioDeviceFile> file,
                                             const std::string& address, const std::string& label,
                                             const MsiSinkFactory& msi,
                                             std::shared_ptr<BarMapper> mapper = nullptr);
  ~VfioPciDevice() override;

  std::string name() const override { return name_; }
  void bar_read(unsigned bar, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(unsigned bar, uint64_t offset, std::span<const uint8_t> data) override;

  // Hands the device's MSI-X vectors to eventfds the loop serves. Before the guest runs.
  void start(EventLoop& loop);
  // Whether the device has an INTx pin VFIO offers.
  bool has_intx() const { return has_intx_; }
  // Its INTx: VFIO signals `trigger` (a level-triggered irqfd) and masks the line; a signal on
  // `unmask` (the irqfd's resample eventfd, at the guest's EOI) unmasks it. The guest then sees
  // pin INTA#; VFIO is on INTx until the guest enables MSI-X, and back when it disables it.
  // False when the device has no INTx. Before start().
  bool set_intx(int trigger, int unmask);
  uint16_t msix_vectors() const { return msix_ ? msix_->vectors() : 0; }
  uint16_t msi_vectors() const { return msi_ ? msi_->vectors() : 0; }
  // Vectors the device signals straight to the sink (irqfds), after start().
  uint16_t direct_vectors() const { return static_cast<uint16_t>(direct_states_.size()); }
  void bar_moved(unsigned bar, std::optional<BarMapping> old,
                 std::optional<BarMapping> now) override;
  // BAR pages mmapped for the guest, and how many are in the guest now.
  size_t mmapped_ranges() const { return direct_.size(); }
  size_t ranges_in_guest() const;
  // Logs (debug) what took the slow path: BAR accesses that trapped, interrupts through the loop.
  void log_slow_paths() const;

 protected:
  void config_written(uint32_t offset, uint32_t size) override;
  void config_reading(uint32_t offset, uint32_t size) override;

 private:
  struct Region {
    uint64_t offset = 0;  // in the device fd
    uint64_t size = 0;
  };
  VfioPciDevice(const Identity& identity, std::string name, std::unique_ptr<VfioDeviceFile> file);
  bool in_msix_table(unsigned bar, uint64_t offset, uint64_t size) const;
  bool in_msix_pba(unsigned bar, uint64_t offset, uint64_t size) const;
  void write_device_command(uint16_t guest_command);
  // Reads the BAR regions' mmap areas and mmaps those that can go into the guest.
  void mmap_bars(const std::string& label);
  void unmap_direct_locked(unsigned bar);
  // Tells the sink of every direct vector whose state the guest changed (vectors_mutex_ held).
  void sync_direct_vectors_locked();
  // Which of the device's interrupts VFIO signals (one kind at a time).
  enum class IrqMode { none, intx, msi, msix };
  // Switches VFIO to `mode` (MSI: with `count` vectors) (vectors_mutex_ held); false with errno
  // when VFIO refuses (nothing is on then).
  bool use_irqs_locked(IrqMode mode, uint32_t count = 0);
  // The eventfds VFIO signals for `n` vectors of `kind` ("MSI", "MSI-X"), appended to `fds`:
  // the sink's irqfd where it offers one (the first vectors, while GSIs last), else one of ours
  // the loop reads and hands to `deliver`. Returns how many are the sink's.
  uint16_t make_vector_fds(EventLoop& loop, uint16_t n, const char* kind, std::vector<int32_t>& fds,
                           std::function<void(uint16_t)> deliver);
  // The guest changed the MSI capability: VFIO's vectors and the sink follow.
  void msi_written_locked();
  // One MSI vector signalled through the event loop: sent as the guest has programmed it, or
  // held pending while the guest masks it.
  void deliver_msi(uint8_t vector);

  std::string name_;
  std::unique_ptr<VfioDeviceFile> file_;
  bool can_reset_ = false;
  bool has_intx_ = false;
  bool intx_on_ = false;  // set_intx() wired it
  int intx_trigger_ = -1, intx_unmask_ = -1;
  // Which kind of interrupt VFIO has on now, with how many vectors (vectors_mutex_).
  IrqMode irq_mode_ = IrqMode::none;
  uint32_t irq_count_ = 0;
  std::vector<int32_t> msix_fds_;  // by vector: what VFIO signals
  // MSI, for a device without MSI-X: the capability, its fds by vector, and what the guest has
  // programmed (vectors_mutex_).
  std::unique_ptr<MsiCapability> msi_;
  std::vector<int32_t> msi_fds_;
  MsiCapability::State msi_state_{};
  bool msi_switch_failed_ = false;  // VFIO refused the last MSI switch: the next write retries
  uint32_t msi_pending_ = 0;        // vectors signalled through the loop while masked, by bit
  Region config_region_;
  std::array<Region, kBarCount> bars_{};
  std::unique_ptr<MsixTable> msix_;
  uint32_t msix_cap_ = 0;
  unsigned table_bar_ = 0, pba_bar_ = 0;
  uint64_t table_offset_ = 0, pba_offset_ = 0;
  uint16_t device_command_ = 0;  // the command register's value on the device at open
  std::vector<UniqueFd> vector_fds_;
  std::shared_ptr<MsiSink> sink_;
  std::mutex vectors_mutex_;  // a table or control write and its sync, one at a time
  std::vector<MsixTable::VectorState> direct_states_;  // by vector: what the sink was told

  // BAR pages that go straight into the guest.
  struct Direct {
    unsigned bar = 0;
    BarRange range;
    void* host = nullptr;            // mmapped at open
    std::optional<uint32_t> handle;  // the mapper's, while in the guest
    uint64_t gpa = 0;
  };
  std::shared_ptr<BarMapper> mapper_;
  mutable std::mutex direct_mutex_;  // after config_mutex_ where both are taken
  std::vector<Direct> direct_;
  std::atomic<uint32_t> direct_logs_{0};
  // What took the slow path, logged at exit (-v): BAR accesses that trapped (and of those, to
  // the MSI-X table and PBA), interrupts delivered by the event loop.
  std::atomic<uint64_t> trapped_{0}, trapped_msix_{0}, loop_interrupts_{0};
};

}  // namespace libvmm::pci
