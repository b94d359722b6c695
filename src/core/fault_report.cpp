#include "libvmm/core/fault_report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

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

// How far `addr` is from [k.base, k.end) (to its nearest byte: 0 inside), and a phrase saying
// which side it is on (or that it is inside: a write to a read-only map faults there).
std::string relation(uint64_t addr, const Known& k, uint64_t& distance) {
  if (addr >= k.base && addr < k.end) {
    distance = 0;
    return fmt::format("{:#x} bytes into it", addr - k.base);
  }
  if (addr < k.base) {
    distance = k.base - addr;
    return fmt::format("{:#x} bytes below its start", distance);
  }
  distance = addr - k.end + 1;  // from its last byte
  if (addr == k.end) return "just past its end";
  return fmt::format("{:#x} bytes past its end", addr - k.end);  // end + that = the address
}

// Why nothing served the access: a read-only map, an access over the edge of a device (the
// bus serves only accesses that fit), or nothing there at all.
std::string why_unserved(const GuestAccess& a, const GuestMemory& memory,
                         const std::vector<Known>& known) {
  const GuestMapping* mapping = memory.find(a.address);
  if (mapping != nullptr && mapping->readonly) {
    return fmt::format("memory '{}' is read-only for the guest", mapping->region->name());
  }
  // The access's last byte, saturating: an access cannot wrap around the address space.
  const uint64_t span = a.size == 0 ? 0 : a.size - 1;
  const uint64_t last = a.address > UINT64_MAX - span ? UINT64_MAX : a.address + span;
  for (const Known& k : known) {
    if (k.end == k.base || a.address > k.end - 1 || last < k.base) continue;  // no overlap
    if (a.address >= k.base && last <= k.end - 1) {
      // Inside, yet unserved: memory the VM knows but KVM does not map for the guest.
      return fmt::format("it lies inside {} at [{:#x}, {:#x}), which did not serve it", k.what,
                         k.base, k.end);
    }
    if (a.address >= k.base) {
      return fmt::format("the access runs {:#x} byte{} past the end of {} at [{:#x}, {:#x})",
                         last - (k.end - 1), last - (k.end - 1) == 1 ? "" : "s", k.what, k.base,
                         k.end);
    }
    return fmt::format("the access starts {:#x} byte{} below {} at [{:#x}, {:#x})",
                       k.base - a.address, k.base - a.address == 1 ? "" : "s", k.what, k.base,
                       k.end);
  }
  return "no RAM or device is mapped there";
}

std::string instruction_pointer_text(const GuestAccess& a) {
  if (!a.instruction_pointer) return "instruction pointer unavailable";
  if (a.instruction_pointer_after) {
    return fmt::format("instruction pointer {:#x}, just past the writing instruction",
                       *a.instruction_pointer);
  }
  return fmt::format("instruction pointer {:#x}", *a.instruction_pointer);
}

}  // namespace

FaultReporter::FaultReporter(const GuestMemory& memory, const Bus& mmio, Options options)
    : memory_(memory), mmio_(mmio), options_(std::move(options)) {}

std::string FaultReporter::describe(const GuestAccess& a, const GuestMemory& memory,
                                    const Bus& mmio, const Options& options) {
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

  std::ostringstream out;
  out << fmt::format("guest fault: {}vCPU {} {} {} byte{} at guest-physical {:#x} ({}): {}\n",
                     options.vm_prefix(), a.vcpu, a.write ? "wrote" : "read", a.size,
                     a.size == 1 ? "" : "s", a.address, instruction_pointer_text(a),
                     why_unserved(a, memory, known));
  out << "  nearest: " << nearest << "\n";
  out << "  to fix it, either: (1) give the guest access to this address (a memory region or "
         "device "
         "mapped there, see the passthrough section of the docs); (2) disable the guest's device "
         "at this address (status = \"disabled\" in its device tree, or drop it from the kernel "
         "command line); (3) build the guest kernel without that device's driver\n";
  if (options.strict) {
    out << fmt::format("  {}: stopping the VM", options.strict_setting);
  } else {
    out << fmt::format("  {} reported once per address; the VM continues ({} stops it)",
                       a.write ? "the write is dropped;" : "the read returns all-ones;",
                       options.strict_setting);
  }
  return out.str();
}

bool FaultReporter::take_token(Clock::time_point now, uint64_t& left_out) {
  if (!started_) {
    started_ = true;
    refilled_ = now;
  }
  if (now > refilled_) {
    const auto periods = std::min<int64_t>((now - refilled_) / kInterval, kBurst);
    if (periods > 0) {
      tokens_ = std::min<uint32_t>(kBurst, tokens_ + static_cast<uint32_t>(periods));
      refilled_ = tokens_ == kBurst ? now : refilled_ + periods * kInterval;
    }
  }
  if (tokens_ == kBurst) limiting_ = false;
  if (tokens_ == 0) {
    ++left_out_;
    return false;
  }
  --tokens_;
  left_out = std::exchange(left_out_, 0);
  return true;
}

bool FaultReporter::report(GuestAccess access,
                           const std::function<uint64_t()>& instruction_pointer) {
  return report_at(Clock::now(), std::move(access), instruction_pointer);
}

bool FaultReporter::report_at(Clock::time_point now, GuestAccess access,
                              const std::function<uint64_t()>& instruction_pointer) {
  uint64_t left_out = 0;
  bool limit_starts = false;
  bool reported = false;
  {
    std::lock_guard lock(mutex_);
    if (!options_.strict) {
      std::unordered_set<uint64_t>& seen = reported_[access.write ? 1 : 0];
      if (seen.contains(access.address)) return false;
      if (!take_token(now, left_out)) {
        limit_starts = !std::exchange(limiting_, true);
      } else {
        if (reported_[0].size() + reported_[1].size() >= kMaxRemembered) {
          reported_[0].clear();
          reported_[1].clear();
        }
        seen.insert(access.address);
        reported = true;
      }
    }
  }
  if (limit_starts) {
    log::warn(
        "guest fault: more than {} new faults at once; reporting at most one per {} s "
        "while they go on",
        kBurst, std::chrono::duration_cast<std::chrono::seconds>(kInterval).count());
  }
  if (!options_.strict && !reported) return false;
  // --quiet shows errors only: a lenient report is a warning, a strict one an error.
  const log::Level headline = options_.strict ? log::Level::error : log::Level::warn;
  if (log::level() < headline) return options_.strict;
  if (instruction_pointer) {
    try {
      access.instruction_pointer = instruction_pointer();
    } catch (const std::exception&) {
      access.instruction_pointer.reset();  // said in the report; the fault is still the guest's
    }
  }
  std::istringstream lines(describe(access, memory_, mmio_, options_));
  std::lock_guard lock(output_mutex_);
  bool first = true;
  for (std::string line; std::getline(lines, line); first = false) {
    // The headline carries the severity; the explanation lines follow it untagged.
    if (first) {
      log::write(headline, line);
    } else if (log::level() >= log::Level::info) {
      log::write(log::Level::info, line);
    }
  }
  if (left_out > 0 && log::level() >= log::Level::info) {
    log::write(log::Level::info, fmt::format("  ({} other new fault{} left out before this one)",
                                             left_out, left_out == 1 ? " was" : "s were"));
  }
  return options_.strict;
}

}  // namespace libvmm
