// Explains guest accesses that hit neither RAM nor a device (the manual's "virtual memory
// faults"): where, what kind of access, which vCPU and instruction, the nearest thing the
// guest does have, and the three ways to fix it.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_set>

namespace libvmm {

class GuestMemory;
class Bus;

struct GuestAccess {
  uint32_t vcpu = 0;
  uint64_t address = 0;  // guest-physical
  uint32_t size = 0;
  bool write = false;
  uint64_t instruction_pointer = 0;
};

class FaultReporter {
 public:
  FaultReporter(const GuestMemory& memory, const Bus& mmio, bool strict);

  // Reports `access` (once per address) and returns true when the VM must stop (--strict).
  bool report(const GuestAccess& access);

  // The full multi-line report, without the "vmm: " prefixes. Pure; used by report().
  static std::string describe(const GuestAccess& access, const GuestMemory& memory, const Bus& mmio,
                              bool strict);

  bool strict() const { return strict_; }

 private:
  static constexpr size_t kMaxRemembered = 4096;  // a hostile guest must not grow this forever

  const GuestMemory& memory_;
  const Bus& mmio_;
  bool strict_;
  std::mutex mutex_;
  std::unordered_set<uint64_t> reported_;
  bool saturated_ = false;
};

}  // namespace libvmm
