// vmm: boots a Linux guest on KVM. A thin command-line layer over libvmm::System: the flags
// build a one-VM system description; `vmm run`/`vmm check` read one from a .system file.
#include <execinfo.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <optional>

#include "libvmm/arch/machine_option.hpp"
#include "libvmm/backends/stdio_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/seccomp.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/system/system.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/vm.hpp"

using namespace libvmm;

namespace {

constexpr int kExitUserError = 2;
constexpr int kExitFailure = 1;

// Signals that should stop the VM cleanly, read through a signalfd on the event loop so the
// terminal is restored and devices flush, as on any other stop.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&set, s);
  return set;
}

void watch_stop_signals(System& system, UniqueFd& holder) {
  sigset_t set = stop_signals();
  holder.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!holder) throw_errno("signalfd");
  const int fd = holder.get();
  system.vms().front()->event_loop().add(fd, EPOLLIN, [&system, fd](uint32_t) {
    signalfd_siginfo info{};
    if (::read(fd, &info, sizeof info) == sizeof info) {
      system.request_stop(StopReason::quit, fmt::format("stopped by signal {}", info.ssi_signo));
    }
  });
}

// A crash must not leave the user's terminal in raw mode, and should say where it happened
// (addresses a developer resolves with addr2line -e vmm).
void restore_terminal_on_crash() {
  void* warm_up[1];
  ::backtrace(warm_up, 1);  // loads the unwinder now: the handler must not allocate
  for (int s : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) {
    struct sigaction sa {};
    sa.sa_handler = [](int sig) {
      RawTerminal::restore_saved();
      static constexpr char kMessage[] = "vmm: internal error (a bug in vmm); backtrace:\n";
      [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
      void* frames[48];
      ::backtrace_symbols_fd(frames, ::backtrace(frames, 48), STDERR_FILENO);
      ::signal(sig, SIG_DFL);
      ::raise(sig);
    };
    sigemptyset(&sa.sa_mask);
    sigaction(s, &sa, nullptr);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmm: boot a Linux guest on KVM (libvmm " LIBVMM_VERSION ")"};
  app.set_version_flag("--version", "vmm (libvmm) " LIBVMM_VERSION);
  const Architecture& host = host_architecture();
  app.footer(fmt::format(
      "The guest's serial console ({}) is on the terminal; type Ctrl-A x to quit, Ctrl-A h for "
      "help.\nExit status: 0 when the guest reboots or powers off (or you quit), 1 on a guest or "
      "host error, 2 on bad input.",
      host.console));

  VmConfig config;
  std::string memory = "256M";
  bool verbose = false;
  bool quiet = false;
  app.add_option("--kernel", config.kernel, fmt::format("Guest kernel ({})", host.kernel));
  app.add_option("--initrd", config.initrd, "Initial RAM disk (e.g. initramfs.cpio.gz)");
  app.add_option("--cmdline", config.cmdline, "Kernel command line")->default_str("");
  app.add_option("--memory,-m", memory, "Guest RAM, e.g. 256M, 2G, 0x10_000_000")
      ->default_str("256M");
  app.add_option("--vcpus", config.vcpus, "Number of vCPUs")->default_val(1);
  std::string serial;
  app.add_option("--serial", serial,
                 fmt::format("Serial console ({}) backend: stdio, file:PATH, socket:PATH, pty or "
                             "none (default: stdio, or none when a virtIO console has stdio)",
                             host.console));
  // One flag per registered virtIO device kind (virtio/device_kind.hpp), repeatable.
  const auto& kinds = virtio_device_kinds();
  std::vector<std::vector<std::string>> device_values(kinds.size());
  for (size_t k = 0; k < kinds.size(); ++k) {
    CLI::Option* option = app.add_option(std::string(kinds[k]->flag()), device_values[k],
                                         std::string(kinds[k]->help()))
                              ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    if (kinds[k]->flag_value_optional()) {
      option->expected(0, 1)->default_str("");
    } else {
      option->expected(1);
    }
  }
  // One flag per machine option (arch/machine_option.hpp): this machine's, and the other
  // architectures' too (in their own --help section), which validation refuses by name.
  struct OptionFlag {
    const MachineOption* option;
    std::string value;
    CLI::Option* cli;
  };
  std::vector<std::unique_ptr<OptionFlag>> option_flags;
  auto add_option_flag = [&](const MachineOption& option, const std::string& help) -> CLI::Option* {
    if (option.flag().empty() || app.get_option_no_throw(std::string(option.flag()))) {
      return nullptr;
    }
    auto flag = std::make_unique<OptionFlag>(OptionFlag{&option, "", nullptr});
    flag->cli = app.add_option(std::string(option.flag()), flag->value, help)
                    ->type_name(std::string(option.flag_value()));
    option_flags.push_back(std::move(flag));
    return option_flags.back()->cli;
  };
  for (const MachineOption* option : host.options) {
    add_option_flag(*option, std::string(option->help()));
  }
  for (const Architecture& arch : architectures()) {
    for (const MachineOption* option : arch.options) {
      if (CLI::Option* cli = add_option_flag(*option, std::string(option->help()))) {
        cli->group(fmt::format("{} machines (this vmm runs {} guests)", arch.title, host.name));
      }
    }
  }
  app.add_flag("--strict", config.strict_faults,
               "Stop the VM (exit status 1) on the first guest access to unmapped memory");
  std::string seccomp = "kill";
  app.add_option("--seccomp", seccomp,
                 "Sandbox each vCPU thread and event loop with a seccomp allow-list: kill (stop "
                 "vmm on a call off the list, naming it), log (let it through; the kernel logs "
                 "it) or off")
      ->type_name("off|log|kill")
      ->default_str("kill");
  app.add_flag("--verbose,-v", verbose, "Log more (unclaimed port accesses, layout)");
  app.add_flag("--quiet,-q", quiet, "Log only errors");
  // A system description file instead of the flags (docs/SYSTEM_FORMAT.md).
  std::string system_file;
  CLI::App* run_cmd = app.add_subcommand("run", "Run the system a .system file describes");
  CLI::App* check_cmd =
      app.add_subcommand("check", "Validate a .system file and print its resolved layout");
  for (CLI::App* cmd : {run_cmd, check_cmd}) {
    cmd->add_option("file", system_file, "System description (.system)")->required();
    cmd->fallthrough();  // -v, -q after the subcommand
  }
  app.require_subcommand(0, 1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    log::error("{} (see vmm --help)", e.what());
    return kExitUserError;
  }
  if (verbose) log::set_level(log::Level::debug);
  if (quiet) log::set_level(log::Level::error);

  ::signal(SIGPIPE, SIG_IGN);  // a closed output pipe is an error to report, not a reason to die
  restore_terminal_on_crash();

  try {
    const std::optional<SeccompMode> seccomp_mode = parse_seccomp_mode(seccomp);
    if (!seccomp_mode) {
      throw UserError(fmt::format("--seccomp: '{}' is not a mode; use off, log or kill", seccomp));
    }
    SystemDescription description;
    if (!system_file.empty()) {
      if (!config.kernel.empty())
        throw UserError("--kernel: not with run or check (the file names the kernel)");
      description = SystemDescription::load(system_file);
      if (check_cmd->parsed()) {
        fmt::print("{}", description.layout());
        return 0;
      }
    } else {
      // The flags are a shorthand for a one-VM description.
      if (config.kernel.empty()) throw UserError("--kernel is required (or: vmm run FILE.system)");
      auto size = parse_size(memory);
      if (!size)
        throw UserError(
            fmt::format("--memory: cannot parse '{}' (try 256M, 2G or 0x10000000)", memory));
      config.memory_size = *size;
      bool device_has_stdio = false;
      for (size_t k = 0; k < kinds.size(); ++k) {
        for (const auto& value : device_values[k]) {
          config.devices.push_back(spec_from_flag(*kinds[k], value));
          for (const auto& claim : kinds[k]->claims(config.devices.back(), HostFiles::real())) {
            device_has_stdio |= claim.resource == "stdio";
          }
        }
      }
      for (const auto& flag : option_flags) {
        if (flag->cli->count() > 0) {
          config.machine_options.push_back(machine_option_from_flag(*flag->option, flag->value));
        }
      }
      // One terminal can serve one console: a virtIO console takes it when asked to.
      config.serial = !serial.empty() ? serial : device_has_stdio ? "none" : "stdio";
      description = SystemDescription::from_vm_config(config);
    }
    if (const char* dev = std::getenv("LIBVMM_KVM_DEVICE")) {
      for (auto* vm : description.vms()) vm->config.kvm_device = dev;
    }
    for (auto* vm : description.vms()) vm->config.seccomp = *seccomp_mode;
    // Kill mode's line is the last thing vmm says: the terminal goes back to how it was first.
    set_seccomp_kill_hook(&RawTerminal::restore_saved);

    // Block the stop signals in every thread (vCPU threads inherit the mask); the event loop
    // reads them from a signalfd.
    sigset_t set = stop_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    System system(std::move(description));
    if (system.vms().empty())
      throw UserError(fmt::format("{}: no virtual machine to run", system_file));
    UniqueFd signals;
    watch_stop_signals(system, signals);
    const RunResult result = system.run();
    if (result.exit_status() == 0) {
      log::info("guest stopped ({}): {}", to_string(result.reason), result.detail);
    } else {
      log::error("guest stopped ({}): {}", to_string(result.reason), result.detail);
    }
    return result.exit_status();
  } catch (const DescriptionError& e) {
    for (const auto& problem : e.problems()) log::error("{}", problem);
    return kExitUserError;
  } catch (const UserError& e) {
    log::error("{}", e.what());
    return kExitUserError;
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return kExitFailure;
  }
}
