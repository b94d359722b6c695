#include "libvmm/core/fault_report.hpp"

#include <fmt/format.h>

#include <limits>
#include <sstream>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

struct Known {
  std::string what;
  uint64_t base = 0;
  uint64_t end = 0;
};

// How far `addr` is from [k.base, k.end), and a phrase saying which side it is on (or that it
// is inside: a write to a read-only map faults there).
std::string relation(uint64_t addr, const Known& k, uint64_t& distance) {
  if (addr >= k.base && addr < k.end) {
    distance = 0;
    return fmt::format("{:#x} bytes into it", addr - k.base);
  }
  if (addr < k.base) {
    distance = k.base - addr;
    return fmt::format("{:#x} bytes below its start", distance);
  }
  distance = addr - k.end + 1;
  return fmt::format("{:#x} bytes past its end", distance);
}

}  // namespace

FaultReporter::FaultReporter(const GuestMemory& memory, const Bus& mmio, bool strict)
    : memory_(memory), mmio_(mmio), strict_(strict) {}

std::string FaultReporter::describe(const GuestAccess& a, const GuestMemory& memory,
                                    const Bus& mmio, bool strict) {
  std::vector<Known> known;
  for (const auto& m : memory.mappings()) {
    known.push_back({fmt::format("memory '{}'", m.region->name()), m.gpa, m.end()});
  }
  for (const auto& e : mmio.entries()) {
    known.push_back({fmt::format("device '{}'", e.device->name()), e.base, e.end()});
  }

  // The first thing sets `best` whatever its distance: one as far away as 2^64 - 1 bytes (a
  // byte at 0 seen from the top of the address space) is still the nearest one there is.
  std::string nearest = "nothing: the guest has no RAM or devices";
  uint64_t best = std::numeric_limits<uint64_t>::max();
  for (const auto& k : known) {
    uint64_t distance = 0;
    std::string rel = relation(a.address, k, distance);
    if (&k == &known.front() || distance < best) {
      best = distance;
      nearest = fmt::format("{} at [{:#x}, {:#x}), {}", k.what, k.base, k.end, rel);
    }
  }

  // A write to a read-only KVM slot exits like an access to nothing: say which it was.
  const GuestMapping* readonly = memory.find(a.address);
  const std::string why =
      readonly != nullptr && readonly->readonly
          ? fmt::format("memory '{}' is read-only for the guest", readonly->region->name())
          : "no RAM or device is mapped there";
  std::ostringstream out;
  out << fmt::format(
      "guest fault: vCPU {} {} {} byte{} at guest-physical {:#x} (instruction pointer {:#x}): {}\n",
      a.vcpu, a.write ? "wrote" : "read", a.size, a.size == 1 ? "" : "s", a.address,
      a.instruction_pointer, why);
  out << "  nearest: " << nearest << "\n";
  out << "  to fix it, either: (1) give the guest access to this address (a memory region or "
         "device "
         "mapped there, see the passthrough section of the docs); (2) disable the guest's device "
         "at this address (status = \"disabled\" in its device tree, or drop it from the kernel "
         "command line); (3) build the guest kernel without that device's driver\n";
  if (strict) {
    out << "  --strict: stopping the VM";
  } else {
    out << fmt::format("  {} reported once per address; the VM continues (--strict stops it)",
                       a.write ? "the write is dropped;" : "the read returns all-ones;");
  }
  return out.str();
}

bool FaultReporter::report(const GuestAccess& access) {
  {
    std::lock_guard lock(mutex_);
    if (!strict_) {
      if (reported_.contains(access.address)) return false;
      if (reported_.size() >= kMaxRemembered) {
        if (!saturated_) {
          saturated_ = true;
          log::warn("guest fault: more than {} faulting addresses; no longer reporting new ones",
                    kMaxRemembered);
        }
        return false;
      }
      reported_.insert(access.address);
    }
  }
  std::istringstream lines(describe(access, memory_, mmio_, strict_));
  bool first = true;
  for (std::string line; std::getline(lines, line); first = false) {
    // The headline carries the severity; the explanation lines follow it untagged.
    log::write(first ? (strict_ ? log::Level::error : log::Level::warn) : log::Level::info, line);
  }
  return strict_;
}

}  // namespace libvmm
