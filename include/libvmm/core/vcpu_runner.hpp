// Runs one vCPU on its own thread: KVM_RUN, then dispatch of each exit to the buses, the fault
// reporter, or the machine's stop request.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "libvmm/core/kvm.hpp"
#include "libvmm/core/seccomp.hpp"

namespace libvmm {

class Bus;
class CoalescedWrites;
class FaultReporter;

// Why a VM stops.
enum class StopReason {
  reset,      // the guest asked for a reset (i8042, triple fault, PSCI SYSTEM_RESET)
  power_off,  // the guest powered off
  quit,       // the user asked (console escape, signal)
  fault,      // an unhandled guest access with --strict
  error,      // something went wrong (KVM internal error, failed entry, host error)
};

const char* to_string(StopReason reason);

// A KVM_EXIT_INTERNAL_ERROR in words: its suberror named and what usually causes it, then the
// data words KVM gave (e.g. the instruction bytes it could not emulate).
std::string describe_internal_error(const kvm_run& run);

class VcpuRunner {
 public:
  struct Context {
    const Bus* mmio = nullptr;
    const Bus* pio = nullptr;  // x86 port I/O; nullptr elsewhere
    FaultReporter* faults = nullptr;
    // Asks the VM to stop (thread-safe; the VM stops every vCPU).
    std::function<void(StopReason, std::string)> request_stop;
    // Reads the guest's instruction pointer, for reports.
    std::function<uint64_t(KvmVcpu&)> instruction_pointer;
    // Architecture exits the generic loop does not know (e.g. AArch64 PSCI); returns false
    // when not handled.
    std::function<bool(KvmVcpu&)> arch_exit;
    // The vCPU thread loads its seccomp filter (ThreadRole::vcpu) before its first KVM_RUN;
    // `vm_fd` pins its KVM_IRQ_LINE calls to this VM.
    SeccompMode seccomp = SeccompMode::off;
    int vm_fd = -1;
    // The machine's own calls on this thread (SeccompFds::machine), e.g. its register reads.
    std::function<std::vector<SeccompRule>(ThreadRole, const SeccompFds&)> machine_seccomp =
        nullptr;
    // The writes KVM queued instead of exiting, replayed before each port or MMIO exit is
    // handled; nullptr where none are queued. (Last: programs fill the fields above in order.)
    CoalescedWrites* coalesced = nullptr;
    // KVM has moved the instruction pointer past an MMIO write when it exits for it (x86): the
    // fault reports say so. (Added after `coalesced` for the same reason.)
    bool instruction_pointer_past_writes = false;
  };

  VcpuRunner(std::unique_ptr<KvmVcpu> vcpu, Context context);
  ~VcpuRunner();

  // The host CPU the thread is to run on (default: wherever the scheduler puts it); before
  // start(). A CPU the host does not have is reported and ignored.
  void set_host_cpu(uint32_t cpu) { host_cpu_ = cpu; }
  void start();
  // Kicks the vCPU out of KVM_RUN and makes the thread end. Thread-safe, idempotent.
  void stop();
  // Waits for the thread to end; call stop() first (a stop() that comes later kicks nothing).
  void join();

  KvmVcpu& vcpu() { return *vcpu_; }

 private:
  void loop();
  void pin_to(uint32_t cpu);
  bool handle_exit();  // false: leave the loop
  void handle_io();
  void handle_mmio();
  std::string describe_registers();
  std::string describe_shutdown();

  std::unique_ptr<KvmVcpu> vcpu_;
  std::optional<uint32_t> host_cpu_;
  Context ctx_;
  // Guards thread_: stop() may run on another vCPU's thread, or on this one before start()
  // has finished assigning thread_.
  std::mutex thread_mutex_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
};

}  // namespace libvmm
