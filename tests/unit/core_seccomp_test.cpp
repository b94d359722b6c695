// The seccomp allow-lists (core/seccomp.hpp): what they hold, as data, and what a loaded filter
// does, in death tests (each forks a child that loads a filter and makes calls).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <seccomp.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/core/io_thread.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/seccomp.hpp"

namespace libvmm {
namespace core_seccomp_test {

constexpr ThreadRole kRoles[] = {ThreadRole::vcpu, ThreadRole::event_loop, ThreadRole::io,
                                 ThreadRole::vhost_backend};
const SeccompFds kFds{100, 101, {102, 103}};

std::set<std::string> names(const std::vector<SeccompRule>& rules) {
  std::set<std::string> out;
  for (const SeccompRule& r : rules) out.emplace(r.syscall);
  return out;
}

bool has_condition(const SeccompRule& rule, unsigned index, uint64_t value) {
  return std::any_of(rule.args.begin(), rule.args.end(), [&](const SeccompArg& a) {
    return a.index == index && (value & a.mask) == a.value;
  });
}

TEST(SeccompMode, ParsesTheThreeModesOnly) {
  EXPECT_EQ(parse_seccomp_mode("off"), SeccompMode::off);
  EXPECT_EQ(parse_seccomp_mode("log"), SeccompMode::log);
  EXPECT_EQ(parse_seccomp_mode("kill"), SeccompMode::kill);
  for (const char* bad : {"", "on", "KILL", "kill ", "trap", "1"}) {
    EXPECT_EQ(parse_seccomp_mode(bad), std::nullopt) << bad;
  }
  for (SeccompMode m : {SeccompMode::off, SeccompMode::log, SeccompMode::kill}) {
    EXPECT_EQ(parse_seccomp_mode(to_string(m)), m);
  }
}

TEST(SeccompAllowList, EveryRuleNamesAKnownCallAndSaysWhy) {
  for (ThreadRole role : kRoles) {
    for (const SeccompRule& r : seccomp_allow_list(role, kFds)) {
      const std::string name(r.syscall);
      EXPECT_NE(seccomp_syscall_resolve_name(name.c_str()), __NR_SCMP_ERROR) << name;
      EXPECT_FALSE(r.reason.empty()) << name;
      for (const SeccompArg& a : r.args) {
        EXPECT_LT(a.index, 6u) << name;
        EXPECT_EQ(a.value & ~a.mask, 0u) << name << ": a condition that can never hold";
      }
    }
  }
}

TEST(SeccompAllowList, NoRoleMayOpenExecuteCreateThreadsOrReachOtherProcesses) {
  const char* forbidden[] = {"open",
                             "openat",
                             "openat2",
                             "creat",
                             "execve",
                             "execveat",
                             "fork",
                             "vfork",
                             "clone",
                             "clone3",
                             "socket",
                             "connect",
                             "bind",
                             "listen",
                             "ptrace",
                             "kill",
                             "tkill",
                             "process_vm_writev",
                             "process_vm_readv",
                             "mount",
                             "chmod",
                             "fchmod",
                             "chown",
                             "rename",
                             "setuid",
                             "prctl",
                             "seccomp",
                             "memfd_create",
                             "eventfd2",
                             "io_uring_setup",
                             "pkey_mprotect",
                             "mkdir",
                             "symlink",
                             "link"};
  for (ThreadRole role : kRoles) {
    const auto allowed = names(seccomp_allow_list(role, kFds));
    for (const char* call : forbidden) {
      EXPECT_EQ(allowed.count(call), 0u) << to_string(role) << " may call " << call;
    }
  }
}

TEST(SeccompAllowList, ArgumentsAreCheckedWhereTheyMatter) {
  for (ThreadRole role : kRoles) {
    for (const SeccompRule& r : seccomp_allow_list(role, kFds)) {
      // Never executable memory.
      if (r.syscall == "mmap" || r.syscall == "mprotect") {
        ASSERT_EQ(r.args.size(), 1u);
        EXPECT_EQ(r.args[0].index, 2u);
        EXPECT_EQ(r.args[0].mask & PROT_EXEC, static_cast<uint64_t>(PROT_EXEC));
        EXPECT_EQ(r.args[0].value & PROT_EXEC, 0u);
      }
      // Every ioctl by request number; KVM's on this vCPU's or this VM's descriptor.
      if (r.syscall == "ioctl") {
        EXPECT_TRUE(std::any_of(r.args.begin(), r.args.end(),
                                [](const SeccompArg& a) { return a.index == 1; }));
        for (uint64_t kvm : std::initializer_list<uint64_t>{KVM_RUN, KVM_IRQ_LINE, KVM_IRQFD}) {
          if (has_condition(r, 1, kvm)) {
            EXPECT_TRUE(has_condition(r, 0, kFds.vcpu) || has_condition(r, 0, kFds.vm))
                << "KVM ioctl " << kvm << " on any descriptor";
            EXPECT_FALSE(has_condition(r, 0, 7)) << "KVM ioctl " << kvm << " on descriptor 7";
          }
        }
      }
      // Signals only within this process.
      if (r.syscall == "tgkill") {
        EXPECT_TRUE(has_condition(r, 0, static_cast<uint64_t>(::getpid())));
        EXPECT_FALSE(has_condition(r, 0, 1));
      }
    }
  }
}

TEST(SeccompAllowList, OnlyAVcpuRunsTheGuestAndOnlyTheLoopAndIoThreadsDoBlockIo) {
  const auto vcpu = seccomp_allow_list(ThreadRole::vcpu, kFds);
  const auto loop = seccomp_allow_list(ThreadRole::event_loop, kFds);
  auto runs = [](const std::vector<SeccompRule>& rules) {
    return std::any_of(rules.begin(), rules.end(), [](const SeccompRule& r) {
      return r.syscall == "ioctl" && has_condition(r, 1, KVM_RUN);
    });
  };
  EXPECT_TRUE(runs(vcpu));
  EXPECT_FALSE(runs(loop));
  for (const char* call : {"pwritev", "fallocate", "io_uring_enter", "accept4", "unlink"}) {
    EXPECT_EQ(names(vcpu).count(call), 0u) << call;
    EXPECT_EQ(names(loop).count(call), 1u) << call;
  }
  // A disk's I/O thread does its host I/O and nothing of the loop's sockets or teardown.
  const auto io = seccomp_allow_list(ThreadRole::io, kFds);
  EXPECT_FALSE(runs(io));
  for (const char* call : {"pwritev", "preadv", "fallocate", "fdatasync", "io_uring_enter"}) {
    EXPECT_EQ(names(io).count(call), 1u) << call;
  }
  for (const char* call : {"accept4", "recvfrom", "unlink", "epoll_wait", "getrandom", "close"}) {
    EXPECT_EQ(names(io).count(call), 0u) << call;
  }
  // Without descriptors, no KVM ioctl at all.
  for (const SeccompRule& r : seccomp_allow_list(ThreadRole::vcpu, {})) {
    if (r.syscall != "ioctl") continue;
    for (uint64_t kvm : std::initializer_list<uint64_t>{KVM_RUN, KVM_IRQ_LINE})
      EXPECT_FALSE(has_condition(r, 1, kvm));
  }
}

// The machine's own calls (src/arch: Machine::seccomp_rules) join the role's list, built for
// that role and those descriptors; the common lists name no architecture's register reads.
TEST(SeccompAllowList, TheMachinesRulesJoinTheList) {
  auto reads_registers = [](const std::vector<SeccompRule>& rules) {
    return std::any_of(rules.begin(), rules.end(), [](const SeccompRule& r) {
      return r.syscall == "ioctl" && r.reason == "machine: register read";
    });
  };
  SeccompFds fds = kFds;
  EXPECT_FALSE(reads_registers(seccomp_allow_list(ThreadRole::vcpu, fds)));
  std::vector<ThreadRole> asked;
  fds.machine = [&asked](ThreadRole role, const SeccompFds& pinned) {
    asked.push_back(role);
    std::vector<SeccompRule> r;
    if (role == ThreadRole::vcpu) {
      r.push_back({"ioctl",
                   {SeccompArg::equals(0, static_cast<uint64_t>(pinned.vcpu)),
                    SeccompArg::equals(1, 0x1234)},
                   "machine: register read"});
    }
    return r;
  };
  const auto vcpu = seccomp_allow_list(ThreadRole::vcpu, fds);
  ASSERT_TRUE(reads_registers(vcpu));
  const auto it = std::find_if(vcpu.begin(), vcpu.end(), [](const SeccompRule& r) {
    return r.reason == "machine: register read";
  });
  EXPECT_TRUE(has_condition(*it, 0, static_cast<uint64_t>(kFds.vcpu)));
  EXPECT_FALSE(reads_registers(seccomp_allow_list(ThreadRole::event_loop, fds)));
  EXPECT_EQ(asked, (std::vector<ThreadRole>{ThreadRole::vcpu, ThreadRole::event_loop}));
}

// ALSA's PCM ioctls (type 'A') only on the sound devices' descriptors, only where the device
// runs (vCPUs and the event loop), and none at all without an ALSA PCM.
TEST(SeccompAllowList, AlsaIoctlsOnlyOnTheSoundDescriptors) {
  constexpr uint64_t kPcmPrepare = 0x4140;  // SNDRV_PCM_IOCTL_PREPARE: _IO('A', 0x40)
  auto alsa_fds = [&](ThreadRole role, const SeccompFds& fds) {
    std::set<uint64_t> out;
    for (const SeccompRule& r : seccomp_allow_list(role, fds)) {
      if (r.syscall != "ioctl" || !has_condition(r, 1, kPcmPrepare)) continue;
      EXPECT_FALSE(has_condition(r, 1, TCGETS)) << "type 'A' only";
      for (const SeccompArg& a : r.args) {
        if (a.index == 0) out.insert(a.value);
      }
      EXPECT_TRUE(std::any_of(r.args.begin(), r.args.end(), [](const SeccompArg& a) {
        return a.index == 0;
      })) << "an ALSA ioctl on any descriptor";
    }
    return out;
  };
  EXPECT_EQ(alsa_fds(ThreadRole::vcpu, kFds), (std::set<uint64_t>{102, 103}));
  EXPECT_EQ(alsa_fds(ThreadRole::event_loop, kFds), (std::set<uint64_t>{102, 103}));
  EXPECT_TRUE(alsa_fds(ThreadRole::io, kFds).empty());
  const SeccompFds no_sound{100, 101, {}};
  for (ThreadRole role : kRoles) {
    for (const SeccompRule& r : seccomp_allow_list(role, no_sound)) {
      EXPECT_FALSE(r.syscall == "ioctl" && has_condition(r, 1, kPcmPrepare)) << to_string(role);
    }
  }
}

TEST(SeccompInstall, OffLoadsNothing) {
  install_seccomp(ThreadRole::vcpu, SeccompMode::off, {}, "off");
  const int fd = ::open("/", O_RDONLY | O_CLOEXEC);  // would be refused under a filter
  EXPECT_GE(fd, 0);
  ::close(fd);
}

// ---- Death tests: a filter on a forked child ------------------------------------------------

class SeccompDeathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    // Sanitizer builds of the library run kill mode as log (seccomp.hpp); the tests may be
    // built without one (the clang fuzzing build instruments only the library).
    if (seccomp_kill_runs_as_log()) GTEST_SKIP() << "sanitizer build: kill mode runs as log";
  }
};

constexpr const char* kKilled = "vmm: seccomp: thread '{}' made forbidden system call {}";

std::string killed(const std::string& thread, const std::string& call) {
  std::string s = kKilled;
  s.replace(s.find("{}"), 2, thread);
  s.replace(s.find("{}"), 2, call);
  return s + " \\([0-9]+\\); stopping";
}

TEST_F(SeccompDeathTest, AForbiddenCallStopsTheProcessWithOneLine) {
  EXPECT_EXIT(
      {
        install_seccomp(ThreadRole::vcpu, SeccompMode::kill, kFds, "vcpu3");
        ::open("/", O_RDONLY | O_CLOEXEC);
        _exit(0);
      },
      ::testing::ExitedWithCode(kSeccompKillStatus), killed("vcpu3", "openat"));
}

TEST_F(SeccompDeathTest, WhatTheRuntimeDoesIsAllowed) {
  EXPECT_EXIT(
      {
        install_seccomp(ThreadRole::event_loop, SeccompMode::kill, kFds, "event loop");
        std::vector<std::string> v;  // malloc, large and small
        for (int i = 0; i < 1000; ++i)
          v.emplace_back(std::string(static_cast<size_t>(i) * 97, 'x'));
        v.clear();
        v.shrink_to_fit();
        std::mutex m;
        { std::lock_guard lock(m); }
        (void)std::chrono::steady_clock::now();
        (void)std::chrono::system_clock::now();
        log::info("a log line under the filter");
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "a log line under the filter");
}

// An I/O thread under its filter drops a watched eventfd that poll() reports broken without
// closing it (close is no call of its role): it goes on serving, and the owner closes it.
TEST_F(SeccompDeathTest, AnIoThreadDropsABrokenEventfdWithoutClosingIt) {
  EXPECT_EXIT(
      {
        std::atomic<int> runs{0};
        IoThread thread(
            "io-filtered",
            [&] {
              ++runs;
              return false;
            },
            [](std::stop_token) {
              install_seccomp(ThreadRole::io, SeccompMode::kill, kFds, "io-filtered");
              return true;
            });
        UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        const int raw = event.get();
        thread.watch(std::move(event));
        thread.wait_idle();
        ::close(raw);  // behind the thread's back: poll() now says POLLNVAL
        thread.kick();
        thread.wait_idle();
        thread.kick();
        thread.wait_idle();
        const int seen = runs;
        thread.stop();
        log::info("runs after the broken fd: {}", seen);
        _exit(seen >= 2 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "runs after the broken fd");
}

// Found in review: a vhost-user device failing on a vCPU (a refused DRIVER_OK) or on the loop (its
// control queue) ends its connection with shutdown(), which neither role allowed: kill mode
// stopped vmm instead of the device needing a reset.
TEST_F(SeccompDeathTest, AVhostUserDeviceFailingMayEndItsConnection) {
  for (const ThreadRole role : {ThreadRole::vcpu, ThreadRole::event_loop}) {
    EXPECT_EXIT(
        {
          int pair[2];
          if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) _exit(2);
          install_seccomp(role, SeccompMode::kill, kFds, "failing");
          _exit(::shutdown(pair[0], SHUT_RDWR) == 0 ? 0 : 1);
        },
        ::testing::ExitedWithCode(0), "");
  }
}

TEST_F(SeccompDeathTest, ExecutableMemoryIsRefused) {
  EXPECT_EXIT(
      {
        install_seccomp(ThreadRole::event_loop, SeccompMode::kill, kFds, "event loop");
        void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) _exit(1);
        ::mprotect(p, 4096, PROT_READ | PROT_EXEC);
        _exit(0);
      },
      ::testing::ExitedWithCode(kSeccompKillStatus), killed("event loop", "mprotect"));
}

TEST_F(SeccompDeathTest, KvmRunOnlyOnItsOwnVcpu) {
  EXPECT_EXIT(
      {
        install_seccomp(ThreadRole::vcpu, SeccompMode::kill, kFds, "vcpu0");
        ::ioctl(kFds.vcpu, KVM_RUN, 0);  // allowed (EBADF: no such descriptor here)
        ::ioctl(kFds.vcpu + 5, KVM_RUN, 0);
        _exit(0);
      },
      ::testing::ExitedWithCode(kSeccompKillStatus), killed("vcpu0", "ioctl"));
}

TEST_F(SeccompDeathTest, NoRoleStartsThreads) {
  EXPECT_EXIT(
      {
        install_seccomp(ThreadRole::event_loop, SeccompMode::kill, kFds, "event loop");
        std::thread t([] {});  // glibc sets up its cancellation signal first, then clones
        t.join();
        _exit(0);
      },
      ::testing::ExitedWithCode(kSeccompKillStatus),
      killed("event loop", "(rt_sigaction|clone3?)"));
}

TEST_F(SeccompDeathTest, LogModeLetsTheCallThrough) {
  EXPECT_EXIT(
      {
        install_seccomp(ThreadRole::vcpu, SeccompMode::log, kFds, "vcpu0");
        const int fd = ::open("/", O_RDONLY | O_CLOEXEC);
        _exit(fd >= 0 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace core_seccomp_test
}  // namespace libvmm
