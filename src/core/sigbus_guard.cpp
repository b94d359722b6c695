#include "libvmm/core/sigbus_guard.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <stdexcept>

namespace libvmm {
namespace {

// Lock-free for the handler: a slot is published by `used` (release) after its fields are set,
// and cleared before its mapping goes away. Plain fields with the compiler's atomic built-ins
// rather than std::atomic, so that the handler can read them without a sanitizer's calls.
struct Slot {
  bool used = false;
  uintptr_t base = 0;
  size_t size = 0;
  int notify = -1;
  bool tripped = false;
};

std::array<Slot, SigbusGuard::kMaxGuards> g_slots;
std::mutex g_slots_mutex;  // claiming and releasing slots (not the handler)
struct sigaction g_previous {};
std::once_flag g_installed;

// The handler reads the slots with plain volatile accesses and makes its system calls directly:
// the fault may come from inside a sanitizer's own access (ThreadSanitizer's instrumented atomic
// store holds its lock), and the handler must not wait on that lock, nor on an interceptor's.
// no_sanitize("thread") leaves plain accesses uninstrumented (not atomic built-ins). Aligned
// word loads and stores are single accesses on the architectures vmm runs on; the slots are
// published with release stores after their fields (SigbusGuard::SigbusGuard).
template <typename T>
__attribute__((no_sanitize("thread"))) T plain_load(const T& field) {
  return *static_cast<const volatile T*>(&field);
}

// A SIGBUS that is no fault on an access goes where it would have gone without the guards,
// which stay: ignored, the program's own handler (with its siginfo), or the default, which ends
// the process (PID 1 of a namespace ignores a signal it sends itself: then it goes on).
void forward(siginfo_t* info, void* context) {
  const struct sigaction& previous = g_previous;
  const bool with_info = (previous.sa_flags & SA_SIGINFO) != 0;
  if (!with_info && previous.sa_handler == SIG_IGN) return;
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  struct sigaction ours {};
  ::sigaction(SIGBUS, &fallback, &ours);  // a handler that raises it again ends the process
  if (with_info && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(SIGBUS, info, context);
  } else if (!with_info && previous.sa_handler != SIG_DFL) {
    previous.sa_handler(SIGBUS);
  } else {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGBUS);
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    ::raise(SIGBUS);
  }
  ::sigaction(SIGBUS, &ours, nullptr);  // still here: the guards go on
}

__attribute__((no_sanitize("thread"))) void on_sigbus(int, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const auto address = reinterpret_cast<uintptr_t>(info->si_addr);
  // Only a fault on an access is a guard's to mend; a sent SIGBUS (kill, tgkill: code <= 0) or
  // a memory-failure notice that asks nothing (BUS_MCEERR_AO) would not come again: forwarded.
  const bool fault = info->si_code > 0 && info->si_code != BUS_MCEERR_AO;
  for (Slot& slot : g_slots) {
    if (!fault) break;
    if (!plain_load(slot.used)) continue;
    std::atomic_signal_fence(std::memory_order_acquire);
    const uintptr_t base = plain_load(slot.base);
    const size_t size = plain_load(slot.size);
    if (address - base >= size) continue;
    // The whole mapping at once: the peer shrank its file, any page of it may be next. Two
    // threads faulting at once may both map it: the same zero pages either way.
    const long zero = ::syscall(SYS_mmap, base, size, PROT_READ | PROT_WRITE,
                                MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (zero == -1) break;  // cannot recover: die as without the guard
    *static_cast<volatile bool*>(&slot.tripped) = true;
    const int notify = plain_load(slot.notify);
    if (notify >= 0) {
      const uint64_t one = 1;
      ::syscall(SYS_write, notify, &one, sizeof one);
    }
    errno = saved_errno;
    return;
  }
  if (!fault) {
    forward(info, context);
    errno = saved_errno;
    return;
  }
  // Not ours: the disposition from before the guards, and the access faults again into it.
  ::sigaction(SIGBUS, &g_previous, nullptr);
  errno = saved_errno;
}

void install_handler() {
  struct sigaction action {};
  action.sa_sigaction = on_sigbus;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  if (::sigaction(SIGBUS, &action, &g_previous) != 0) {
    throw std::runtime_error("SigbusGuard: cannot install the SIGBUS handler");
  }
}

}  // namespace

SigbusGuard::SigbusGuard(void* base, size_t size, int notify) {
  std::call_once(g_installed, install_handler);
  std::lock_guard lock(g_slots_mutex);
  for (size_t i = 0; i < g_slots.size(); ++i) {
    Slot& slot = g_slots[i];
    if (__atomic_load_n(&slot.used, __ATOMIC_RELAXED)) continue;
    __atomic_store_n(&slot.base, reinterpret_cast<uintptr_t>(base), __ATOMIC_RELAXED);
    __atomic_store_n(&slot.size, size, __ATOMIC_RELAXED);
    __atomic_store_n(&slot.notify, notify, __ATOMIC_RELAXED);
    __atomic_store_n(&slot.tripped, false, __ATOMIC_RELAXED);
    __atomic_store_n(&slot.used, true, __ATOMIC_RELEASE);
    slot_ = i;
    return;
  }
  throw std::runtime_error("SigbusGuard: too many guarded mappings");
}

SigbusGuard::~SigbusGuard() {
  std::lock_guard lock(g_slots_mutex);
  __atomic_store_n(&g_slots[slot_].used, false, __ATOMIC_RELEASE);
}

bool SigbusGuard::tripped() const {
  // Set by the handler on this thread or another: a volatile read, as the handler's store.
  return plain_load(g_slots[slot_].tripped);
}

}  // namespace libvmm
