// A system description: memory regions, the VMM's own maps, and virtual machines with their
// maps, interrupts and devices, in the spirit of the seL4 Microkit system description the
// libvmm manual starts from. Read from a `.system` XML file (docs/SYSTEM_FORMAT.md), built by
// the `vmm` flags, or built and adjusted in code; then validated and run by libvmm::System.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/error.hpp"
#include "libvmm/vm.hpp"

namespace libvmm {

// Where something was written: "file:line", or a flag such as "--memory" for descriptions the
// `vmm` flags built, or "" for ones built in code.
struct SourceLocation {
  std::string file;
  uint32_t line = 0;
  std::string str() const;  // "file:line", "file" or ""
};

struct MemoryRegionSpec {
  enum class Backing {
    memfd,      // private to this process tree: anonymous shared memory
    host_file,  // a host file (created if missing, grown to `size`): `path`
    shm,        // a POSIX shared-memory object (created if missing): `path` is its name, "/x"
  };
  std::string name;
  uint64_t size = 0;
  uint64_t page_size = 4 * KiB;       // 4 KiB, or 2 MiB for huge pages (memfd only)
  std::optional<uint64_t> phys_addr;  // fixes the guest-physical address of every guest map
  Backing backing = Backing::memfd;
  std::string path;
  SourceLocation where;
};

// A region mapped into a VM (at guest-physical `vaddr`) or into the VMM (setvar_vaddr names
// the mapping for the API; the VMM's virtual address itself cannot be chosen on Linux).
struct MapSpec {
  std::string region;
  std::optional<uint64_t> vaddr;  // default: the region's phys_addr
  std::optional<uint64_t> size;   // default: the whole region
  std::string perms = "rw";       // letters r, w, x; x cannot be enforced on KVM
  std::string setvar_vaddr;
  SourceLocation where;
  bool malformed = false;  // the parser reported a value of it: later checks leave it be
  bool readonly() const { return perms.find('w') == std::string::npos; }
  // What is wrong with `perms` ("" if nothing): letters other than r, w and x, or no r.
  std::string perms_problem() const;
  // What is wrong with `size` on its own ("" if nothing): size="0", a map of nothing.
  std::string size_problem() const;
};

// A guest interrupt raised whenever a host event source fires.
struct IrqSpec {
  enum class Source {
    eventfd,  // handed in by the program using the library (SystemDescription::bind_eventfd)
    fifo,     // a named pipe at `path` (created if missing); every write raises the IRQ
    socket,   // a Unix datagram socket bound at `path`; every datagram raises the IRQ
  };
  uint32_t irq = 0;
  Source source = Source::eventfd;
  std::string name;  // eventfd: the name a program binds its eventfd to
  std::string path;  // fifo, socket
  int eventfd = -1;  // eventfd: the descriptor (not owned), once bound
  SourceLocation where;
  bool malformed = false;  // the parser reported a value of it: later checks leave it be
};

// A real host device handed to the guest through VFIO (<vfio device="0000:01:00.0"/>); System
// moves it into its VM's config.vfio (resolve_vfio_devices).
struct VfioSpec {
  std::string device;  // e.g. a PCI address 0000:01:00.0
  SourceLocation where;
  // How messages name it: "file:line: <vfio device="0000:01:00.0">".
  std::string label() const;
};

// A map of a device of the real board (a Microkit description's UART, GIC virtual CPU
// interface, x86 COM1 ports): what it became on KVM. Set when a description is read for an
// architecture whose board has the device (SystemDescription::read).
struct BoardMapSpec {
  std::string region;   // the memory region, or "ioport 0x3f8" for port I/O
  std::string device;   // "the PL011 UART"
  std::string becomes;  // "the emulated PL011 (ttyAMA0)"
  uint64_t guest_addr = 0;
  uint64_t size = 0;
  std::optional<uint32_t> irq;  // its interrupt, when the protection domain names it
  SourceLocation where;
};

// A Microkit protection domain's <irq>: on seL4, a device interrupt delivered to the VMM. On
// KVM only the interrupt of a board device the VM is given has a meaning (its emulated
// device's); others are refused. AArch64 files write irq= (the INTID), x86_64 ones pin= (the
// IOAPIC pin).
struct DomainIrqSpec {
  std::optional<uint32_t> irq;
  std::optional<uint32_t> pin;
  SourceLocation where;
};

// A Microkit <ioport addr="0x3f8" size="8"/>: x86 port I/O handed to the VMM. COM1 becomes the
// emulated 16550; other ports are refused.
struct IoportSpec {
  uint64_t addr = 0;
  uint64_t size = 0;
  SourceLocation where;
  bool malformed = false;  // the parser reported a value of it: later checks leave it be
};

struct VirtualMachineSpec {
  // Name, vCPUs, images, command line, serial, virtIO devices and the machine's options
  // (AArch64: <gic>, <dtb>). memory_size is derived from the RAM region; ram_region/maps/
  // irq_sources are filled in by System.
  VmConfig config;
  uint32_t id = 0;
  std::string ram_region = "guest_ram";  // which mapped region is the guest's RAM
  std::vector<MapSpec> maps;
  std::vector<IrqSpec> irqs;
  std::vector<VfioSpec> vfio;
  std::vector<BoardMapSpec> board_maps;  // maps of the board's devices (Microkit)
  SourceLocation where;
  // Where each image or setting came from, for messages: "kernel", "initrd", "serial",
  // "vcpus". (Devices and machine options carry their own: DeviceSpec::where.)
  std::vector<std::pair<std::string, SourceLocation>> element_locations;
  SourceLocation location_of(std::string_view what) const;
};

struct ProtectionDomainSpec {
  std::string name;
  std::vector<MapSpec> maps;  // the VMM's own maps
  std::vector<VirtualMachineSpec> vms;
  SourceLocation where;
  // Microkit: <program_image path="vmm.elf"/> (the VMM is this vmm process: noted, not
  // loaded); cpu="N" (the host CPU the VMM's threads run on, where it exists); interrupts
  // and I/O ports of board devices.
  std::string program_image;
  std::optional<uint32_t> cpu;
  std::vector<DomainIrqSpec> irqs;
  std::vector<IoportSpec> ioports;
};

// How a description is checked.
struct CheckOptions {
  // A VM without <kernel> is a problem; false for `vmm check`, whose images may come from
  // `vmm run`'s flags.
  bool kernel_required = true;
};

class SystemDescription {
 public:
  std::string file;  // the file it came from, or "" when built from flags or in code
  // The architecture it is for ("x86_64", "aarch64"); "" for this vmm's. Checks, the layout
  // and the board devices of Microkit descriptions follow it.
  std::string arch;
  std::vector<MemoryRegionSpec> regions;
  std::vector<ProtectionDomainSpec> domains;

  // Parses and validates a `.system` file. Throws DescriptionError listing every problem.
  static SystemDescription load(const std::filesystem::path& path);
  // Reads a `.system` file for architecture `arch` ("" for this vmm's) without validating:
  // parses it and interprets the maps of the board's devices (Microkit descriptions);
  // problems are appended to `problems`. Images may then be set (vmm run's flags) before
  // problems() or validate().
  static SystemDescription read(const std::filesystem::path& path, const std::string& arch,
                                std::vector<std::string>& problems);
  // Parses `xml` (named `file` in messages) without validating; problems are appended to
  // `problems` as "file:line: what is wrong" and the rest is still parsed.
  static SystemDescription parse(std::string_view xml, const std::string& file,
                                 std::vector<std::string>& problems);
  // The `vmm` flags' shorthand: one VM with `config.memory_size` bytes of RAM.
  static SystemDescription from_vm_config(const VmConfig& config);

  // Every problem with the description, each "file:line: what is wrong"; empty when valid.
  // Files it names are examined through `files` (a test or fuzzer may stand in for the host).
  std::vector<std::string> problems(const HostFiles& files = HostFiles::real(),
                                    const CheckOptions& options = {}) const;
  // Throws DescriptionError when problems() is not empty.
  void validate() const;
  // The board devices a Microkit description maps, turned into what they are on KVM (the
  // emulated UART, the vGIC's version, ...): moves those maps into board_maps; problems for
  // device regions and interrupts that cannot be given to a guest. read() calls it.
  void interpret_board_devices(std::vector<std::string>& problems);

  // Hands a program's eventfd to every <irq eventfd="name">.
  void bind_eventfd(std::string_view name, int fd);

  const MemoryRegionSpec* find_region(std::string_view name) const;
  std::vector<VirtualMachineSpec*> vms();
  std::vector<const VirtualMachineSpec*> vms() const;

  // The resolved layout of a valid description, as `vmm check` prints it: regions, and per VM
  // its RAM, maps, devices with their addresses and IRQs, and interrupt sources.
  std::string layout() const;
};

// A description with problems: what() has one "file:line: what is wrong" line per problem.
class DescriptionError : public UserError {
 public:
  explicit DescriptionError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

}  // namespace libvmm
