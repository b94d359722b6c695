#include "libvmm/arch/x86_64/acpi.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "guest_write.hpp"

namespace libvmm::x86 {
namespace {

// ACPI 6.x structures (spec §5.2), packed as the spec lays them out.
struct Rsdp {
  char signature[8];
  uint8_t checksum;
  char oem_id[6];
  uint8_t revision;
  uint32_t rsdt_address;
  uint32_t length;
  uint64_t xsdt_address;
  uint8_t extended_checksum;
  uint8_t reserved[3];
} __attribute__((packed));

struct SdtHeader {
  char signature[4];
  uint32_t length;
  uint8_t revision;
  uint8_t checksum;
  char oem_id[6];
  char oem_table_id[8];
  uint32_t oem_revision;
  char creator_id[4];
  uint32_t creator_revision;
} __attribute__((packed));

struct Gas {  // Generic Address Structure
  uint8_t space_id;
  uint8_t bit_width;
  uint8_t bit_offset;
  uint8_t access_size;
  uint64_t address;
} __attribute__((packed));

struct Fadt {
  SdtHeader header;
  uint32_t firmware_ctrl;
  uint32_t dsdt;
  uint8_t reserved0;
  uint8_t preferred_pm_profile;
  uint16_t sci_int;
  uint32_t smi_cmd;
  uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
  uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk, pm2_cnt_blk, pm_tmr_blk;
  uint32_t gpe0_blk, gpe1_blk;
  uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len, gpe0_blk_len, gpe1_blk_len;
  uint8_t gpe1_base, cst_cnt;
  uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
  uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
  uint16_t iapc_boot_arch;
  uint8_t reserved1;
  uint32_t flags;
  Gas reset_reg;
  uint8_t reset_value;
  uint16_t arm_boot_arch;
  uint8_t minor_version;
  uint64_t x_firmware_ctrl;
  uint64_t x_dsdt;
  Gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk, x_pm2_cnt_blk, x_pm_tmr_blk;
  Gas x_gpe0_blk, x_gpe1_blk;
  Gas sleep_control_reg, sleep_status_reg;
  uint64_t hypervisor_vendor_id;
} __attribute__((packed));

static_assert(sizeof(Rsdp) == 36 && sizeof(SdtHeader) == 36 && sizeof(Gas) == 12);
static_assert(sizeof(Fadt) == 276);

constexpr uint8_t kGasSystemIo = 1;
constexpr uint8_t kGasAccessByte = 1;
constexpr uint8_t kGasAccessWord = 2;
constexpr uint32_t kFadtResetRegSupported = 1u << 10;
constexpr uint32_t kFadtWbinvd = 1u << 0;         // WBINVD works: "systems are required to set it"
constexpr uint32_t kFadtNoSleepButton = 1u << 5;  // SLP_BUTTON; PWR_BUTTON (bit 4) clear: the
                                                  // power button is the fixed-feature one
constexpr uint16_t kBootArchVgaNotPresent = 1u << 2;
constexpr uint16_t kI8042CommandPort = 0x64;
constexpr uint8_t kI8042ResetCommand = 0xFE;

// PM1 control register bits.
constexpr uint16_t kPm1SciEnable = 1u << 0;
constexpr uint16_t kPm1SleepTypeShift = 10;
constexpr uint16_t kPm1SleepTypeMask = 0x7u << kPm1SleepTypeShift;
constexpr uint16_t kPm1SleepEnable = 1u << 13;
constexpr uint64_t kPm1ControlOffset = 4;
constexpr uint64_t kPm1EnableOffset = 2;
constexpr uint16_t kPm1PowerButton = 1u << 8;  // PWRBTN_STS / PWRBTN_EN

// Layout inside the table area.
constexpr uint64_t kXsdtOffset = 0x40;
constexpr uint64_t kFacsOffset = 0x80;  // 64-byte aligned, as the spec requires
constexpr uint64_t kMcfgOffset = 0xC0;  // 60 bytes for one ECAM area
constexpr uint64_t kFadtOffset = 0x100;
constexpr uint64_t kMadtOffset = 0x280;  // 72 + 8 bytes per vCPU: 328 bytes for 32
constexpr uint64_t kDsdtOffset = 0x400;  // last: its size depends on the devices

struct Facs {
  char signature[4];
  uint32_t length;
  uint32_t hardware_signature;
  uint32_t firmware_waking_vector;
  uint32_t global_lock;
  uint32_t flags;
  uint64_t x_firmware_waking_vector;
  uint8_t version;
  uint8_t reserved[3];
  uint32_t ospm_flags;
  uint8_t reserved2[24];
} __attribute__((packed));
static_assert(sizeof(Facs) == 64);

struct McfgAllocation {  // PCI Firmware Specification 3.2, table 4-3
  uint64_t base;
  uint16_t segment;
  uint8_t bus_start, bus_end;
  uint32_t reserved;
} __attribute__((packed));
static_assert(sizeof(McfgAllocation) == 16);
constexpr uint32_t kMcfgLength = sizeof(SdtHeader) + 8 + sizeof(McfgAllocation);
static_assert(kFacsOffset + sizeof(Facs) <= kMcfgOffset &&
              kMcfgOffset + kMcfgLength <= kFadtOffset);

struct MadtLocalApic {  // type 0
  uint8_t type, length, processor_uid, apic_id;
  uint32_t flags;
} __attribute__((packed));
struct MadtIoApic {  // type 1
  uint8_t type, length, ioapic_id, reserved;
  uint32_t address;
  uint32_t gsi_base;
} __attribute__((packed));
struct MadtLocalApicNmi {  // type 4
  uint8_t type, length, processor_uid;
  uint16_t flags;
  uint8_t lint;
} __attribute__((packed));
struct MadtSourceOverride {  // type 2
  uint8_t type, length, bus, source;
  uint32_t gsi;
  uint16_t flags;
} __attribute__((packed));
static_assert(sizeof(MadtLocalApic) == 8 && sizeof(MadtIoApic) == 12 &&
              sizeof(MadtLocalApicNmi) == 6 && sizeof(MadtSourceOverride) == 10);
// The SCI is level-triggered and active-high here (KVM's IOAPIC line as the PM device drives
// it), not ACPI's default for an SCI without an override (active-low).
constexpr uint16_t kMpsActiveHighLevel = 0x1 | 0x3 << 2;

constexpr uint32_t kLapicAddress = 0xFEE00000;
constexpr uint32_t kIoapicAddress = 0xFEC00000;
constexpr uint32_t kMadtPcatCompat = 1;  // dual 8259s present (KVM's PIC)

SdtHeader header(const char (&signature)[5], uint32_t length, uint8_t revision) {
  SdtHeader h{};
  std::memcpy(h.signature, signature, 4);
  h.length = length;
  h.revision = revision;
  std::memcpy(h.oem_id, "LIBVMM", 6);
  std::memcpy(h.oem_table_id, "LIBVMM  ", 8);
  h.oem_revision = 1;
  std::memcpy(h.creator_id, "LVMM", 4);
  h.creator_revision = 1;
  return h;
}

Gas io_register(uint16_t port, uint8_t bits, uint8_t access) {
  return Gas{kGasSystemIo, bits, 0, access, port};
}

template <typename T>
void put(std::vector<uint8_t>& out, uint64_t offset, const T& value) {
  std::memcpy(out.data() + offset, &value, sizeof value);
}

// Sets the checksum byte of the table of `len` bytes at `offset` (checksum at offset + 9).
void seal_table(std::vector<uint8_t>& out, uint64_t offset, uint64_t len) {
  out[offset + 9] = 0;
  out[offset + 9] = acpi_checksum(out.data() + offset, len);
}

}  // namespace

uint8_t acpi_checksum(const uint8_t* bytes, size_t len) {
  const uint8_t sum = std::accumulate(bytes, bytes + len, uint8_t{0}, [](uint8_t a, uint8_t b) {
    return static_cast<uint8_t>(a + b);
  });
  return static_cast<uint8_t>(-sum);
}

std::vector<uint8_t> build_dsdt(const std::vector<aml::Bytes>& devices) {
  // Name (_S5, Package () { S5, 0 }): the SLP_TYP values for PM1a_CNT and PM1b_CNT.
  std::vector<aml::Bytes> body{
      aml::name("_S5", aml::package({aml::integer(kAcpiS5SleepType), aml::integer(0)}))};
  if (!devices.empty()) body.push_back(aml::scope("_SB", devices));
  const uint64_t len = sizeof(SdtHeader) + std::accumulate(body.begin(), body.end(), size_t{0},
                                                           [](size_t n, const aml::Bytes& term) {
                                                             return n + term.size();
                                                           });
  std::vector<uint8_t> out(sizeof(SdtHeader));
  for (const aml::Bytes& term : body) out.insert(out.end(), term.begin(), term.end());
  // Revision 2: integers are 64 bits wide.
  put(out, 0, header("DSDT", static_cast<uint32_t>(len), 2));
  seal_table(out, 0, len);
  return out;
}

bool cmdline_disables_acpi(std::string_view cmdline) {
  bool off = false;
  size_t at = 0;
  while (at < cmdline.size()) {
    const size_t end = std::min(cmdline.find(' ', at), cmdline.size());
    const std::string_view word = cmdline.substr(at, end - at);
    if (word.starts_with("acpi=")) off = word == "acpi=off";
    at = end + 1;
  }
  return off;
}

aml::Bytes serial_port_node(std::string_view name, uint32_t uid, uint16_t port, uint32_t irq) {
  using namespace aml;
  return device(name, {
                          aml::name("_HID", eisa_id("PNP0501")),
                          aml::name("_UID", integer(uid)),
                          aml::name("_CRS", resource_template({
                                                io(port, port, 8, 8),
                                                extended_interrupt({irq}, {.edge = true}),
                                            })),
                      });
}

aml::Bytes virtio_mmio_node(uint32_t index, uint64_t base, uint64_t size, uint32_t irq) {
  using namespace aml;
  if (index > 0xFF) throw std::length_error("ACPI: more than 256 virtio-mmio devices");
  if (base > UINT32_MAX || size > UINT32_MAX || base + size > uint64_t{UINT32_MAX} + 1) {
    throw std::length_error(
        fmt::format("ACPI: virtio-mmio window [{:#x}, +{:#x}) is not below 4 GiB", base, size));
  }
  return device(
      fmt::format("VR{:02X}", index),
      {
          aml::name("_HID", string("LNRO0005")),
          aml::name("_UID", integer(index)),
          aml::name("_CCA", integer(1)),  // cache-coherent DMA, as on a PC
          aml::name("_CRS",
                    resource_template({
                        memory32_fixed(static_cast<uint32_t>(base), static_cast<uint32_t>(size)),
                        extended_interrupt({irq}, {.edge = true}),
                    })),
      });
}

std::vector<aml::Bytes> pci_host_bridge_nodes(const pci::HostBridgeLayout& layout,
                                              const std::vector<PciIntxRoute>& intx) {
  using namespace aml;
  const auto last = [](const pci::Window& w) { return w.base + w.size - 1; };
  if (layout.mmio32.size == 0 || last(layout.mmio32) > UINT32_MAX || layout.io.base > 0xFFFF ||
      (layout.io.size != 0 && last(layout.io) > 0xFFFF) || layout.ecam.size == 0 ||
      last(layout.ecam) > UINT32_MAX) {
    throw std::invalid_argument("ACPI: a PCI layout the x86 tables cannot describe");
  }
  std::vector<Bytes> resources{word_bus_number(0, 0),
                               io(static_cast<uint16_t>(pci::HostBridge::kLegacyConfigPort),
                                  static_cast<uint16_t>(pci::HostBridge::kLegacyConfigPort), 1,
                                  static_cast<uint8_t>(pci::HostBridge::kLegacyConfigPorts))};
  if (layout.io.size != 0) {
    resources.push_back(
        word_io(static_cast<uint16_t>(layout.io.base), static_cast<uint16_t>(last(layout.io))));
  }
  resources.push_back(dword_memory(static_cast<uint32_t>(layout.mmio32.base),
                                   static_cast<uint32_t>(last(layout.mmio32)),
                                   Cacheability::non_cacheable));
  if (layout.mmio64.size != 0) {
    resources.push_back(
        qword_memory(layout.mmio64.base, last(layout.mmio64), Cacheability::non_cacheable));
  }
  std::vector<Bytes> bridge{
      name("_HID", eisa_id("PNP0A08")), name("_CID", eisa_id("PNP0A03")),
      name("_SEG", integer(0)),         name("_BBN", integer(0)),
      name("_UID", integer(0)),         name("_CRS", resource_template(resources)),
  };
  if (!intx.empty()) {
    // Package {Address (device << 16 | 0xFFFF: any function), Pin, Source (0: a GSI), GSI}.
    std::vector<Bytes> routes;
    for (const PciIntxRoute& r : intx) {
      if (r.device >= pci::HostBridge::kMaxDevices || r.pin > 3) {
        throw std::invalid_argument("ACPI: a PCI interrupt route off the bus");
      }
      routes.push_back(package(
          {dword(uint32_t{r.device} << 16 | 0xFFFF), integer(r.pin), integer(0), integer(r.gsi)}));
    }
    bridge.push_back(name("_PRT", package(routes)));
  }
  // _OSC (PCI Firmware Specification 4.5): for the PCI Express UUID, grant the controls the OS
  // asks for (Arg3's third dword is returned as is); any other UUID is "unrecognized" (bit 2 of
  // the first dword). The bridge has no ports, hot plug or AER of its own to keep.
  bridge.push_back(
      method("_OSC", 4, false,
             {create_dword_field(arg(3), integer(0), "CDW1"),
              if_then(l_not(l_equal(arg(0), uuid("33DB4D5B-1FF7-401C-9657-7441C03DD766"))),
                      {or_op(name_string("CDW1"), integer(4), name_string("CDW1"))}),
              return_value(arg(3))}));
  return {
      device("PCI0", bridge),
      device("PCIM", {name("_HID", eisa_id("PNP0C02")), name("_UID", integer(1)),
                      name("_CRS", resource_template({memory32_fixed(
                                       static_cast<uint32_t>(layout.ecam.base),
                                       static_cast<uint32_t>(layout.ecam.size), true)}))}),
  };
}

std::vector<uint8_t> build_acpi_tables(uint64_t base, uint32_t num_cpus,
                                       const std::vector<aml::Bytes>& devices,
                                       std::optional<McfgEntry> ecam) {
  // In 64 bits: num_cpus comes from the caller, and its product must not wrap to a small
  // length that passes the check below.
  const uint64_t madt_bytes = sizeof(SdtHeader) + 8 + uint64_t{num_cpus} * sizeof(MadtLocalApic) +
                              sizeof(MadtIoApic) + sizeof(MadtSourceOverride) +
                              sizeof(MadtLocalApicNmi);
  if (num_cpus == 0 || kMadtOffset + madt_bytes > kDsdtOffset) {
    throw std::length_error(fmt::format("ACPI: a MADT for {} vCPUs does not fit", num_cpus));
  }
  const auto madt_len = static_cast<uint32_t>(madt_bytes);
  const std::vector<uint8_t> dsdt = build_dsdt(devices);
  if (kDsdtOffset + dsdt.size() > kAcpiTablesAreaSize) {
    throw std::length_error(fmt::format("ACPI: a DSDT of {} bytes does not fit in {:#x} bytes",
                                        dsdt.size(), kAcpiTablesAreaSize - kDsdtOffset));
  }
  std::vector<uint8_t> out(kDsdtOffset + dsdt.size(), 0);
  std::memcpy(out.data() + kDsdtOffset, dsdt.data(), dsdt.size());

  Facs facs{};
  std::memcpy(facs.signature, "FACS", 4);
  facs.length = sizeof(Facs);
  facs.version = 2;
  put(out, kFacsOffset, facs);

  // MADT: one local APIC per vCPU (APIC ID = index, as in the MP table and CPUID), the IOAPIC
  // with GSIs from 0 (KVM routes GSI i to pin i), LINT1 as NMI on every CPU.
  put(out, kMadtOffset, header("APIC", madt_len, 5));
  uint64_t at = kMadtOffset + sizeof(SdtHeader);
  put(out, at, kLapicAddress);
  put(out, at + 4, kMadtPcatCompat);
  at += 8;
  for (uint32_t i = 0; i < num_cpus; ++i, at += sizeof(MadtLocalApic)) {
    put(out, at,
        MadtLocalApic{0, sizeof(MadtLocalApic), static_cast<uint8_t>(i), static_cast<uint8_t>(i),
                      1});
  }
  put(out, at,
      MadtIoApic{1, sizeof(MadtIoApic), static_cast<uint8_t>(num_cpus), 0, kIoapicAddress, 0});
  at += sizeof(MadtIoApic);
  put(out, at,
      MadtSourceOverride{2, sizeof(MadtSourceOverride), 0, kAcpiSciIrq, kAcpiSciIrq,
                         kMpsActiveHighLevel});
  at += sizeof(MadtSourceOverride);
  put(out, at, MadtLocalApicNmi{4, sizeof(MadtLocalApicNmi), 0xFF, 0, 1});
  seal_table(out, kMadtOffset, madt_len);

  Fadt fadt{};
  fadt.header = header("FACP", sizeof(Fadt), 6);
  fadt.firmware_ctrl = static_cast<uint32_t>(base + kFacsOffset);
  fadt.x_firmware_ctrl = 0;  // only one of the two may be set
  fadt.dsdt = static_cast<uint32_t>(base + kDsdtOffset);
  fadt.x_dsdt = base + kDsdtOffset;
  fadt.sci_int = kAcpiSciIrq;
  fadt.smi_cmd = 0;  // no SMI: the machine is always in ACPI mode
  fadt.pm1a_evt_blk = kAcpiPmBasePort;
  fadt.pm1_evt_len = 4;
  fadt.pm1a_cnt_blk = kAcpiPmBasePort + kPm1ControlOffset;
  fadt.pm1_cnt_len = 2;
  fadt.x_pm1a_evt_blk = io_register(kAcpiPmBasePort, 32, kGasAccessWord);
  fadt.x_pm1a_cnt_blk = io_register(kAcpiPmBasePort + kPm1ControlOffset, 16, kGasAccessWord);
  fadt.iapc_boot_arch = kBootArchVgaNotPresent;
  fadt.flags = kFadtWbinvd | kFadtResetRegSupported | kFadtNoSleepButton;
  fadt.reset_reg = io_register(kI8042CommandPort, 8, kGasAccessByte);
  fadt.reset_value = kI8042ResetCommand;
  fadt.minor_version = 0;
  std::memcpy(&fadt.hypervisor_vendor_id, "libvmm\0\0", 8);
  put(out, kFadtOffset, fadt);
  seal_table(out, kFadtOffset, sizeof(Fadt));

  if (ecam) {
    // MCFG: the header, 8 reserved bytes, one allocation for segment 0.
    put(out, kMcfgOffset, header("MCFG", kMcfgLength, 1));
    put(out, kMcfgOffset + sizeof(SdtHeader) + 8,
        McfgAllocation{ecam->base, 0, ecam->bus_start, ecam->bus_end, 0});
    seal_table(out, kMcfgOffset, kMcfgLength);
  }

  const uint32_t xsdt_len = sizeof(SdtHeader) + (ecam ? 3 : 2) * 8;
  static_assert(kXsdtOffset + sizeof(SdtHeader) + 3 * 8 <= kFacsOffset);
  put(out, kXsdtOffset, header("XSDT", xsdt_len, 1));
  put(out, kXsdtOffset + sizeof(SdtHeader), uint64_t{base + kFadtOffset});
  put(out, kXsdtOffset + sizeof(SdtHeader) + 8, uint64_t{base + kMadtOffset});
  if (ecam) put(out, kXsdtOffset + sizeof(SdtHeader) + 16, uint64_t{base + kMcfgOffset});
  seal_table(out, kXsdtOffset, xsdt_len);

  Rsdp rsdp{};
  std::memcpy(rsdp.signature, "RSD PTR ", 8);
  std::memcpy(rsdp.oem_id, "LIBVMM", 6);
  rsdp.revision = 2;
  rsdp.length = sizeof(Rsdp);
  rsdp.xsdt_address = base + kXsdtOffset;
  rsdp.checksum = acpi_checksum(reinterpret_cast<const uint8_t*>(&rsdp), 20);
  rsdp.extended_checksum = acpi_checksum(reinterpret_cast<const uint8_t*>(&rsdp), sizeof(Rsdp));
  put(out, 0, rsdp);
  return out;
}

void write_acpi_tables(const GuestMemory& memory, uint32_t num_cpus,
                       const std::vector<aml::Bytes>& devices, std::optional<McfgEntry> ecam) {
  write_guest(memory, kAcpiTablesAddr, build_acpi_tables(kAcpiTablesAddr, num_cpus, devices, ecam),
              "ACPI tables");
}

AcpiPmDevice::AcpiPmDevice(std::function<void()> on_power_off, std::shared_ptr<IrqLine> sci)
    : on_power_off_(std::move(on_power_off)), sci_(std::move(sci)) {}

void AcpiPmDevice::update_sci() {
  uint16_t enable;
  std::memcpy(&enable, registers_ + kPm1EnableOffset, sizeof enable);
  const bool assert_sci = (status_ & enable) != 0;
  if (assert_sci != sci_asserted_ && sci_) sci_->set_level(assert_sci);
  sci_asserted_ = assert_sci;
}

bool AcpiPmDevice::press_power_button() {
  std::lock_guard lock(mutex_);
  uint16_t enable;
  std::memcpy(&enable, registers_ + kPm1EnableOffset, sizeof enable);
  if ((enable & kPm1PowerButton) == 0) return false;
  status_ |= kPm1PowerButton;
  update_sci();
  return true;
}

void AcpiPmDevice::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t reg = offset + i;
    if (reg < 2) {
      data[i] = static_cast<uint8_t>(status_ >> (8 * reg));  // PM1 status
    } else if (reg == kPm1ControlOffset) {
      data[i] = static_cast<uint8_t>(registers_[reg] | kPm1SciEnable);
    } else {
      data[i] = reg < kAcpiPmPortCount ? registers_[reg] : 0xFF;
    }
  }
}

void AcpiPmDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  bool power_off = false;
  {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size() && offset + i < kAcpiPmPortCount; ++i) {
      const uint64_t reg = offset + i;
      if (reg < 2) {
        status_ = static_cast<uint16_t>(status_ & ~(uint16_t{data[i]} << (8 * reg)));  // W1C
      } else {
        registers_[reg] = data[i];
      }
    }
    uint16_t control;
    std::memcpy(&control, registers_ + kPm1ControlOffset, sizeof control);
    if ((control & kPm1SleepEnable) != 0) {
      const auto type = static_cast<uint8_t>((control & kPm1SleepTypeMask) >> kPm1SleepTypeShift);
      power_off = type == kAcpiS5SleepType;
      control = static_cast<uint16_t>(control & ~kPm1SleepEnable);  // SLP_EN reads as 0
      std::memcpy(registers_ + kPm1ControlOffset, &control, sizeof control);
    }
    update_sci();
  }
  if (power_off) on_power_off_();
}

}  // namespace libvmm::x86
