// Explains guest accesses that hit neither RAM nor a device (the manual's "virtual memory
// faults"): where, what kind of access, which VM, vCPU and instruction, the nearest thing the
// guest does have, and the three ways to fix it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
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
  std::optional<uint64_t> instruction_pointer;  // nullopt: it could not be read
  // x86 MMIO writes: KVM has already moved the instruction pointer past the writing
  // instruction when it exits, so the pointer names the one after it.
  bool instruction_pointer_after = false;
};

class FaultReporter {
 public:
  struct Options {
    bool strict = false;  // the first fault stops the VM
    // Named in each report when several VMs may fault (a system description); empty: none.
    std::string vm_name;
    // What the user sets to stop the VM on a fault, for the hint ("--strict", or a description's
    // attribute).
    std::string strict_setting = "--strict";
    // "VM 'NAME' " where reports name the VM, else nothing: what starts a report's subject.
    std::string vm_prefix() const { return vm_name.empty() ? "" : "VM '" + vm_name + "' "; }
    static Options with_strict(bool strict) {
      Options options;
      options.strict = strict;
      return options;
    }
  };
  using Clock = std::chrono::steady_clock;
  // New reports: a burst of kBurst, then one per kInterval while faults keep coming (the next
  // one says how many were left out): a guest can neither flood the log nor silence it.
  // (64: a guest copying a short string into a read-only map faults once per byte, and the
  // last byte written may be the telling one.)
  static constexpr uint32_t kBurst = 64;
  static constexpr Clock::duration kInterval = std::chrono::seconds(10);

  FaultReporter(const GuestMemory& memory, const Bus& mmio, Options options);

  // Reports `access` (once per address and direction, as the rate allows) and returns true
  // when the VM must stop (strict). `instruction_pointer` is called only for an access that
  // is reported (it costs the vCPU an ioctl); if it throws, the pointer is "unavailable".
  bool report(GuestAccess access, const std::function<uint64_t()>& instruction_pointer = {});
  bool report_at(Clock::time_point now, GuestAccess access,
                 const std::function<uint64_t()>& instruction_pointer = {});

  // The full multi-line report, without the "vmm: " prefixes. Pure; used by report().
  static std::string describe(const GuestAccess& access, const GuestMemory& memory, const Bus& mmio,
                              const Options& options);

  const Options& options() const { return options_; }

 private:
  // Faulting addresses remembered to report each once; forgotten all at once when full (a
  // hostile guest must not grow this forever; the rate limit bounds what repeats then).
  static constexpr size_t kMaxRemembered = 4096;

  // Under mutex_: whether a report for a new fault is let through now; the count of those
  // left out before it goes to `left_out`.
  bool take_token(Clock::time_point now, uint64_t& left_out);

  const GuestMemory& memory_;
  const Bus& mmio_;
  const Options options_;
  std::mutex mutex_;
  std::unordered_set<uint64_t> reported_[2];  // [write]: addresses reported
  uint32_t tokens_ = kBurst;
  Clock::time_point refilled_{};
  bool started_ = false;
  bool limiting_ = false;    // reports were left out since the burst was last whole
  uint64_t left_out_ = 0;    // since the last report let through
  std::mutex output_mutex_;  // one report's lines stay together
};

}  // namespace libvmm
