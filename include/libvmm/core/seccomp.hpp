// A seccomp-bpf sandbox per thread (Debian's libseccomp): each thread of a VM loads an
// allow-list of the system calls its role really makes, on itself only (no TSYNC), before it
// serves the guest. vCPU threads load theirs before their first KVM_RUN; the event loop before
// it serves the first event. Threads created by a thread after it loaded a filter inherit it,
// so Vm starts its vCPU threads before the event loop loads its own (and no role may create
// threads). The lists, with the reason for every call, are in src/core/seccomp.cpp; what they
// allow and why is summed up in docs/SECURITY.md ("Sandbox: seccomp").
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <vector>

namespace libvmm {

// off: no filter. log: calls off the list go through and the kernel logs them (audit type
// 1326: dmesg, journalctl -k or the audit log). kill: the first call off the list stops the
// process with one line naming the thread and the call (exit status kSeccompKillStatus).
enum class SeccompMode { off, log, kill };

const char* to_string(SeccompMode mode);
// "off", "log" or "kill"; nullopt otherwise.
std::optional<SeccompMode> parse_seccomp_mode(std::string_view text);

// 128 + SIGSYS, the status a shell shows for a process killed by SIGSYS.
inline constexpr int kSeccompKillStatus = 159;

enum class ThreadRole {
  vcpu,           // KVM_RUN and the MMIO/port exits: register emulation, console output
  event_loop,     // host I/O for the devices, irqfd/ioeventfd signalling, and the VM's teardown
  io,             // a device's I/O thread (blk-io<N>, net-tx<N>): host I/O, then the irqfd
  vhost_backend,  // vmm-device's loop: a front-end's vhost-user messages (guest RAM descriptors
                  // mapped), kicks, the device's queues, its call eventfds
};
const char* to_string(ThreadRole role);

// One argument condition: (argument[index] & mask) == value.
struct SeccompArg {
  unsigned index = 0;
  uint64_t mask = 0;
  uint64_t value = 0;
  // argument[index] == value, compared on 32 bits: what ints (descriptors, ioctl requests) hold.
  static SeccompArg equals(unsigned index, uint64_t value) {
    return {index, 0xffff'ffffu, value & 0xffff'ffffu};
  }
};

// One entry of an allow-list: a system call by name, conditions that must all hold (several
// entries for one call: any of them), and why the role needs it. Names of calls this
// architecture does not have (e.g. "poll" on AArch64) are skipped when the filter is built.
struct SeccompRule {
  std::string_view syscall;
  std::vector<SeccompArg> args;
  std::string_view reason;
};

// Descriptors a role's ioctls are pinned to; -1: that ioctl is not allowed at all.
struct SeccompFds {
  int vcpu = -1;  // vcpu role: KVM_RUN and register reads only on this vCPU
  int vm = -1;    // KVM_IRQ_LINE and KVM_IRQFD only on this VM
  // vcpu and event-loop roles: ALSA's PCM ioctls (type 'A') only on these descriptors (the
  // sound devices' host PCMs); none: no ALSA ioctl at all. install_seccomp() fills it from
  // the descriptors registered with seccomp_allow_sound_ioctls().
  std::vector<int> sound;
  // The machine's own calls on this role's threads (src/arch, Machine::seccomp_rules: e.g. the
  // vCPU's instruction-pointer read for fault reports, an interrupt controller vmm emulates),
  // pinned to these descriptors; added to the role's list. Empty: none.
  std::function<std::vector<SeccompRule>(ThreadRole, const SeccompFds&)> machine = nullptr;
};

// Registers a descriptor of a host sound device (an ALSA /dev/snd node, opened before the
// filters load) for the ALSA ioctls of the filters loaded from now on; forgotten when it is
// closed. Thread-safe.
void seccomp_allow_sound_ioctls(int fd);
void seccomp_forget_sound_ioctls(int fd);

// The role's allow-list (pure data: what unit tests and the docs check).
std::vector<SeccompRule> seccomp_allow_list(ThreadRole role, const SeccompFds& fds);

// Loads the role's filter on the calling thread (nothing for SeccompMode::off). `thread_name`
// (e.g. "vcpu0") names the thread in the kill line. Throws SystemError if the kernel or
// libseccomp refuses the filter. In sanitizer builds kill runs as log (the sanitizer runtimes
// make calls no list should allow, and their reports would be cut short): said once (debug).
void install_seccomp(ThreadRole role, SeccompMode mode, const SeccompFds& fds,
                     std::string_view thread_name);

// True when this library was built with a sanitizer, so that install_seccomp() runs kill as log.
bool seccomp_kill_runs_as_log();

// Called by the SIGSYS handler in kill mode after its line and before the process exits, e.g.
// to restore the terminal (RawTerminal::restore_saved). It must be async-signal-safe and make
// only calls every role allows (write, ioctl TCSETS/TCGETS).
void set_seccomp_kill_hook(void (*hook)() noexcept);

// Test hook, called by each VM thread right after install_seccomp(): when the environment
// variable LIBVMM_SECCOMP_TEST_FORBIDDEN names this thread ("vcpu0", "event loop",
// "blk-io0"), it opens
// "/" (openat, on no list) and closes it, the way a hijacked thread would reach for a file. The
// tests prove with it that kill mode stops the process with its line and log mode lets the
// call through (tests/guests/run_case.sh seccomp_*).
void seccomp_self_test(std::string_view thread_name);

}  // namespace libvmm
