#include "libvmm/core/vcpu_runner.hpp"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <set>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/coalesced_writes.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/fault_report.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

// A signal that only interrupts KVM_RUN; its handler does nothing.
int kick_signal() {
  return SIGRTMIN;
}

void install_kick_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(kick_signal(), &sa, nullptr);
  });
}

const char* system_event_name(uint32_t type) {
  switch (type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
      return "shutdown";
    case KVM_SYSTEM_EVENT_RESET:
      return "reset";
    case KVM_SYSTEM_EVENT_CRASH:
      return "crash";
    default:
      return "unknown";
  }
}

}  // namespace

const char* to_string(StopReason reason) {
  switch (reason) {
    case StopReason::reset:
      return "reset";
    case StopReason::power_off:
      return "power off";
    case StopReason::quit:
      return "quit";
    case StopReason::fault:
      return "fault";
    case StopReason::error:
      return "error";
  }
  return "?";
}

VcpuRunner::VcpuRunner(std::unique_ptr<KvmVcpu> vcpu, Context context)
    : vcpu_(std::move(vcpu)), ctx_(std::move(context)) {
  install_kick_handler();
}

VcpuRunner::~VcpuRunner() {
  stop();
  join();
}

namespace {

// Pins the calling thread to host CPU `cpu`: a description's <vcpu cpu="N"/>, where it exists.
void pin_to_cpu(uint32_t cpu, uint32_t vcpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
  const int err =
      cpu < CPU_SETSIZE ? pthread_setaffinity_np(pthread_self(), sizeof set, &set) : EINVAL;
  if (err != 0) {
    log::warn("vCPU {}: cannot run on host CPU {} ({}); it runs where the scheduler puts it", vcpu,
              cpu, err == EINVAL ? "this host has no such CPU" : std::strerror(err));
  }
}

}  // namespace

std::string describe_internal_error(const kvm_run& run) {
  const uint32_t suberror = run.internal.suberror;
  const char* what = "a kind this VMM does not know";
  switch (suberror) {
    case KVM_INTERNAL_ERROR_EMULATION:
      what =
          "KVM could not emulate an instruction: often the guest ran code where it has no RAM, "
          "or used an instruction KVM cannot emulate on a device";
      break;
    case KVM_INTERNAL_ERROR_SIMUL_EX:
      what = "an exception while delivering another: the guest's exception handling is broken";
      break;
    case KVM_INTERNAL_ERROR_DELIVERY_EV:
      what = "an event could not be delivered: the guest's IDT or stack is unusable";
      break;
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON:
      what = "the CPU exited for a reason KVM does not handle";
      break;
    default:
      break;
  }
  std::string text = fmt::format("suberror {} ({})", suberror, what);
  const uint32_t ndata = std::min<uint32_t>(run.internal.ndata, std::size(run.internal.data));
  for (uint32_t i = 0; i < ndata; ++i) {
    text += fmt::format("{}{:#x}", i == 0 ? "; data " : " ", run.internal.data[i]);
  }
  return text;
}

void VcpuRunner::pin_to(uint32_t cpu) {
  pin_to_cpu(cpu, vcpu_->index());
}

void VcpuRunner::start() {
  // The new thread may call stop() (a guest that halts at once) before the assignment ends;
  // stop() takes the lock, so it sees the finished thread_.
  const std::lock_guard lock(thread_mutex_);
  thread_ = std::thread([this] {
    const std::string name = fmt::format("vcpu{}", vcpu_->index());
    pthread_setname_np(pthread_self(), name.c_str());
    if (host_cpu_) pin_to(*host_cpu_);
    try {
      install_seccomp(ThreadRole::vcpu, ctx_.seccomp,
                      {vcpu_->fd(), ctx_.vm_fd, {}, ctx_.machine_seccomp}, name);
      seccomp_self_test(name);
      loop();
    } catch (const std::exception& e) {
      ctx_.request_stop(StopReason::error, fmt::format("vCPU {}: {}", vcpu_->index(), e.what()));
    }
  });
}

void VcpuRunner::stop() {
  if (stopping_.exchange(true)) return;
  // immediate_exit covers a kick that lands just before the thread enters KVM_RUN.
  // An atomic store: the vCPU thread's KVM_RUN (in the kernel) and its exits read the page.
  std::atomic_ref<uint8_t>(vcpu_->state().immediate_exit).store(1);
  const std::lock_guard lock(thread_mutex_);
  if (thread_.joinable()) pthread_kill(thread_.native_handle(), kick_signal());
}

void VcpuRunner::join() {
  // Not joined under the lock: the thread may be in stop(), waiting for it.
  std::thread thread;
  {
    const std::lock_guard lock(thread_mutex_);
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
}

void VcpuRunner::loop() {
  while (!stopping_.load()) {
    bool exited = false;
    try {
      exited = vcpu_->run();
    } catch (const SystemError& e) {
      // KVM gave up on the guest without an exit to explain it (RISC-V: a fetch from an
      // address without RAM; AArch64 without NISV exits: an access it cannot decode): where
      // the guest was is the best lead.
      ctx_.request_stop(StopReason::error, fmt::format("vCPU {}: {}; {}", vcpu_->index(), e.what(),
                                                       describe_registers()));
      return;
    }
    if (!exited) continue;  // interrupted: re-check stopping_
    if (!handle_exit()) return;
  }
}

bool VcpuRunner::handle_exit() {
  kvm_run& run = vcpu_->state();
  switch (run.exit_reason) {
    case KVM_EXIT_IO:
      handle_io();
      return true;
    case KVM_EXIT_MMIO:
      handle_mmio();
      return !stopping_.load();
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_HLT:
      ctx_.request_stop(StopReason::power_off, fmt::format("vCPU {} halted", vcpu_->index()));
      return false;
    case KVM_EXIT_SHUTDOWN: {
      // x86: a triple fault, a reset. Linux resets this way only after ACPI and the i8042 did
      // not, so with those working it means the guest crashed: said even when only errors are
      // logged (--quiet), although the exit status stays a reset's.
      const std::string where = describe_shutdown();
      log::error(
          "vCPU {}: triple fault at {}: the guest crashed (or reset itself the last-resort way)",
          vcpu_->index(), where);
      ctx_.request_stop(StopReason::reset,
                        fmt::format("vCPU {}: triple fault (guest reset)", vcpu_->index()));
      return false;
    }
    case KVM_EXIT_SYSTEM_EVENT: {
      const uint32_t type = run.system_event.type;
      const StopReason reason = type == KVM_SYSTEM_EVENT_RESET      ? StopReason::reset
                                : type == KVM_SYSTEM_EVENT_SHUTDOWN ? StopReason::power_off
                                                                    : StopReason::error;
      ctx_.request_stop(reason, fmt::format("vCPU {}: guest system event '{}'", vcpu_->index(),
                                            system_event_name(type)));
      return false;
    }
    case KVM_EXIT_INTERNAL_ERROR:
      ctx_.request_stop(StopReason::error,
                        fmt::format("vCPU {}: KVM internal error: {}; {}", vcpu_->index(),
                                    describe_internal_error(run), describe_registers()));
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      ctx_.request_stop(
          StopReason::error,
          fmt::format("vCPU {}: KVM could not enter the guest (hardware reason {:#x}); {}",
                      vcpu_->index(), run.fail_entry.hardware_entry_failure_reason,
                      describe_registers()));
      return false;
    default:
      if (ctx_.arch_exit && ctx_.arch_exit(*vcpu_)) return !stopping_.load();
      ctx_.request_stop(StopReason::error,
                        fmt::format("vCPU {}: unexpected KVM exit reason {}; {}", vcpu_->index(),
                                    run.exit_reason, describe_registers()));
      return false;
  }
}

void VcpuRunner::handle_io() {
  if (ctx_.coalesced != nullptr) ctx_.coalesced->replay(ctx_.pio, ctx_.mmio);
  kvm_run& run = vcpu_->state();
  auto* base = reinterpret_cast<uint8_t*>(&run);
  const uint32_t size = run.io.size;
  // String I/O (rep ins/outs) hands us `count` items back to back in the run page.
  for (uint32_t i = 0; i < run.io.count; ++i) {
    std::span<uint8_t> data(base + run.io.data_offset + static_cast<size_t>(i) * size, size);
    bool claimed;
    if (run.io.direction == KVM_EXIT_IO_OUT) {
      claimed = ctx_.pio != nullptr && ctx_.pio->write(run.io.port, data);
    } else {
      claimed = ctx_.pio != nullptr && ctx_.pio->read(run.io.port, data);
      if (!claimed) std::memset(data.data(), 0xff, data.size());  // a floating ISA bus
    }
    if (!claimed && log::level() >= log::Level::debug) {
      log::debug("vCPU {}: unclaimed port {} {:#x} ({} bytes)", vcpu_->index(),
                 run.io.direction == KVM_EXIT_IO_OUT ? "write to" : "read from", run.io.port, size);
    }
  }
}

void VcpuRunner::handle_mmio() {
  if (ctx_.coalesced != nullptr) ctx_.coalesced->replay(ctx_.pio, ctx_.mmio);
  kvm_run& run = vcpu_->state();
  const uint32_t len = std::min<uint32_t>(run.mmio.len, sizeof(run.mmio.data));
  std::span<uint8_t> data(run.mmio.data, len);
  bool claimed;
  if (run.mmio.is_write) {
    claimed = ctx_.mmio != nullptr && ctx_.mmio->write(run.mmio.phys_addr, data);
  } else {
    claimed = ctx_.mmio != nullptr && ctx_.mmio->read(run.mmio.phys_addr, data);
  }
  if (claimed) return;
  if (!run.mmio.is_write) std::memset(data.data(), 0xff, data.size());
  if (ctx_.faults == nullptr) return;
  const bool write = run.mmio.is_write != 0;
  const GuestAccess access{
      vcpu_->index(), run.mmio.phys_addr, len,
      write,          std::nullopt,       write && ctx_.instruction_pointer_past_writes};
  std::function<uint64_t()> read_instruction_pointer;
  if (ctx_.instruction_pointer) {
    read_instruction_pointer = [this] { return ctx_.instruction_pointer(*vcpu_); };
  }
  if (ctx_.faults->report(access, read_instruction_pointer)) {
    const FaultReporter::Options& o = ctx_.faults->options();
    ctx_.request_stop(
        StopReason::fault,
        fmt::format("{}vCPU {}: unhandled {} at {:#x} ({})", o.vm_prefix(), vcpu_->index(),
                    write ? "write" : "read", access.address, o.strict_setting));
  }
}

std::string VcpuRunner::describe_shutdown() {
  // On AMD, KVM answers the shutdown intercept by re-initialising the vCPU (the VMCB is
  // undefined after it), so the registers read here are the reset vector's, not the fault's.
  constexpr uint64_t reset_vector_offset = 0xfff0;
  try {
    if (ctx_.instruction_pointer && ctx_.instruction_pointer(*vcpu_) == reset_vector_offset) {
      return "an unknown place (the vCPU is already back at its reset vector, 0xfff0: on AMD "
             "hosts KVM re-initialises a vCPU after a triple fault)";
    }
  } catch (const std::exception&) {
    // describe_registers() says why the registers are unavailable.
  }
  return describe_registers();
}

std::string VcpuRunner::describe_registers() {
  if (!ctx_.instruction_pointer) return "no register dump";
  try {
    return fmt::format("instruction pointer {:#x}", ctx_.instruction_pointer(*vcpu_));
  } catch (const std::exception& e) {
    return fmt::format("registers unavailable ({})", e.what());
  }
}

}  // namespace libvmm
