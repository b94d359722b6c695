// vmm: boots a Linux guest on KVM. A thin command-line layer over libvmm::System: the flags
// build a one-VM system description; `vmm run`/`vmm check` read one from a .system file.
#include <execinfo.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "libvmm/arch/machine_option.hpp"
#include "libvmm/backends/stdio_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/seccomp.hpp"
#include "libvmm/core/size.hpp"
#include "libvmm/jail/jail.hpp"
#include "libvmm/pci/vfio.hpp"
#include "libvmm/system/system.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/vm.hpp"

using namespace libvmm;

namespace {

// The signals vmm answers, read through a signalfd on the event loop: those that stop the VM
// cleanly (so the terminal is restored and devices flush, as on any other stop), SIGUSR1,
// which has every disk's image looked at again (the host grew or shrank it), and SIGWINCH (the
// terminal was resized: a virtIO console on it tells the guest).
constexpr int kRescanSignal = SIGUSR1;
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kStopSignals) sigaddset(&set, s);
  return set;
}
sigset_t watched_signals() {
  sigset_t set = stop_signals();
  for (int s : {kRescanSignal, SIGWINCH}) sigaddset(&set, s);
  return set;
}

// The graceful stop: the first stop signal (or Ctrl-A s on a console) presses every VM's power
// button (x86_64: ACPI; AArch64: the PL061 power key) and arms the --shutdown-timeout; the
// guest powering off ends the run as usual. A second signal, or the timeout, stops the VMs at
// once. A guest that does not listen to the button (no ACPI button or gpio-keys driver), or a
// timeout of 0: the first signal stops.
// The timer is a timerfd made before the VMs run, armed on the event loop (its seccomp list
// allows timerfd_settime for this).
class GracefulStop {
 public:
  GracefulStop(System& system, int timeout_seconds)
      : system_(system),
        timeout_(timeout_seconds),
        timer_(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)) {
    if (!timer_) throw_errno("timerfd_create");
    system.control_loop().add(timer_.get(), EPOLLIN, [this](uint32_t) {
      uint64_t expirations = 0;
      if (::read(timer_.get(), &expirations, sizeof expirations) != sizeof expirations) return;
      system_.request_stop(StopReason::quit,
                           fmt::format("the guest did not power off within {} s of the power "
                                       "button (--shutdown-timeout)",
                                       timeout_));
    });
  }

  // On the event loop's thread.
  void on_signal(int signo) { on_request(fmt::format("signal {}", signo)); }

  // A request to stop from `what` ("signal 15", "Ctrl-A s"); on the event loop's thread.
  void on_request(const std::string& what) {
    if (armed_ || timeout_ <= 0) {
      system_.request_stop(StopReason::quit, fmt::format("stopped by {}", what));
      return;
    }
    // The VMs still running (in a .system file, one that powered off ended only itself).
    bool all_pressed = true;
    for (Vm* vm : system_.vms()) {
      if (!vm->stopping()) all_pressed = vm->press_power_button() && all_pressed;
    }
    if (!all_pressed) {
      system_.request_stop(
          StopReason::quit,
          fmt::format("stopped by {} (the guest does not listen to a power button)", what));
      return;
    }
    armed_ = true;
    itimerspec when{};
    when.it_value.tv_sec = timeout_;
    if (::timerfd_settime(timer_.get(), 0, &when, nullptr) != 0) {
      system_.request_stop(StopReason::quit,
                           fmt::format("stopped by {} (no timer for the timeout)", what));
      return;
    }
    log::info(
        "{}: pressed the guest's power button; it has {} s to power off "
        "(--shutdown-timeout), a second signal (or Ctrl-A s) stops it now",
        what, timeout_);
  }

 private:
  System& system_;
  const int timeout_;
  UniqueFd timer_;
  bool armed_ = false;
};

// Once the event loop has stopped nothing reads the signalfd, and the end (joining the vCPUs,
// the devices finishing their host I/O) could wait on a host that hangs: a stop signal then
// ends vmm at once, as a second one does while the loop runs. The handler is installed at the
// start (no seccomp filter allows it later) and the signals unblocked when the loop stops.
// (Also a signal handler's: async-signal-safe.)
void exit_at_once(int sig) {
  RawTerminal::restore_saved();
  static constexpr char kMessage[] = "vmm: stopped at once by a signal while ending\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  ::_exit(128 + sig);
}

void take_stop_signals_after_the_loop(System& system, int signal_fd) {
  for (int s : kStopSignals) {
    struct sigaction sa {};
    sa.sa_handler = exit_at_once;
    sigemptyset(&sa.sa_mask);
    ::sigaction(s, &sa, nullptr);
  }
  system.set_loop_end_handler([signal_fd] {
    // What came before the loop stopped was for it (a terminal's hang-up comes twice): read and
    // left, not taken as a request to skip the clean end.
    signalfd_siginfo info{};
    while (::read(signal_fd, &info, sizeof info) == sizeof info) {
    }
    const sigset_t set = stop_signals();
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  });
}

void watch_signals(System& system, GracefulStop& stop, UniqueFd& holder) {
  sigset_t set = watched_signals();
  holder.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!holder) throw_errno("signalfd");
  const int fd = holder.get();
  system.control_loop().add(fd, EPOLLIN, [&system, &stop, fd](uint32_t) {
    signalfd_siginfo info{};
    if (::read(fd, &info, sizeof info) != sizeof info) return;
    const int signo = static_cast<int>(info.ssi_signo);
    if (signo == SIGWINCH) return StdioBackend::terminal_resized();
    // Every VM stopped already and still ending (several VMs: the control loop runs until
    // all have): a stop signal ends vmm at once, as after the loop (exit_at_once).
    const auto vms = system.vms();
    if (signo != kRescanSignal &&
        std::all_of(vms.begin(), vms.end(), [](Vm* vm) { return vm->stopping(); })) {
      exit_at_once(signo);
    }
    if (signo != kRescanSignal) return stop.on_signal(signo);
    size_t changed = 0;
    for (Vm* vm : system.vms()) changed += vm->rescan_devices();
    log::info("signal {}: looked at the disks' images again; {} changed size", signo, changed);
  });
}

// A crash must not leave the user's terminal in raw mode, and should say where it happened
// (addresses a developer resolves with addr2line -e vmm).
void restore_terminal_on_crash() {
  void* warm_up[1];
  ::backtrace(warm_up, 1);  // loads the unwinder now: the handler must not allocate
  for (int s : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) {
    struct sigaction sa {};
    sa.sa_sigaction = [](int sig, siginfo_t* info, void*) {
      RawTerminal::restore_saved();
      if (info != nullptr && info->si_code <= 0 && sig != SIGABRT) {
        // kill(1) and the like (abort() raises its own SIGABRT): not a crash of vmm's.
        static constexpr char kSent[] = "vmm: ended by a signal another process sent\n";
        [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kSent, sizeof kSent - 1);
      } else {
        static constexpr char kMessage[] = "vmm: internal error (a bug in vmm); backtrace:\n";
        [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
        void* frames[48];
        ::backtrace_symbols_fd(frames, ::backtrace(frames, 48), STDERR_FILENO);
      }
      // SA_RESETHAND made the disposition the default again (no rt_sigaction here: seccomp
      // refuses it): unblocked and raised, the signal ends the process as it would have. In a
      // jail vmm is PID 1, which ignores a default-action signal it sends itself: it ends here.
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, sig);
      ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
      ::raise(sig);
      ::_exit(128 + sig);
    };
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(s, &sa, nullptr);
  }
}

// vmm run FILE --kernel/--initrd/--cmdline and the machine-option flags (--dtb,
// --dtb-overlay, --gic): images and options for a file's VM that has none (Microkit
// descriptions name no images: libvmm builds them into its VMM). The VM is --vm NAME's, or the
// file's only one.
struct FileFlags {
  std::filesystem::path kernel;
  std::filesystem::path initrd;
  std::optional<std::string> cmdline;
  std::vector<DeviceSpec> machine_options;
  std::string vm;
  bool any() const {
    return !kernel.empty() || !initrd.empty() || cmdline || !machine_options.empty();
  }
};

void apply_file_flags(SystemDescription& d, const std::string& file, const FileFlags& flags) {
  std::vector<VirtualMachineSpec*> vms = d.vms();
  std::string names;
  for (const auto* vm : vms) {
    if (!names.empty()) names += ", ";
    names += vm->config.name;
  }
  VirtualMachineSpec* target = nullptr;
  if (!flags.vm.empty()) {
    for (auto* vm : vms) {
      if (vm->config.name == flags.vm) target = vm;
    }
    if (target == nullptr) {
      throw UserError(fmt::format("--vm {}: {} has no virtual machine of that name (it has: {})",
                                  flags.vm, file, names.empty() ? "none" : names));
    }
  } else if (flags.any()) {
    const std::string flag = !flags.kernel.empty()   ? "--kernel"
                             : !flags.initrd.empty() ? "--initrd"
                             : flags.cmdline         ? "--cmdline"
                                             : std::string(flags.machine_options.front().where);
    if (vms.size() != 1) {
      throw UserError(fmt::format("{}: {} has {} virtual machines ({}); choose one with --vm NAME",
                                  flag, file, vms.size(), names.empty() ? "none" : names));
    }
    target = vms.front();
  }
  if (target == nullptr) return;
  auto take = [&](const char* item, bool given, bool has, auto set) {
    if (!given) return;
    if (has) {
      throw UserError(fmt::format("--{}: virtual machine '{}' has one already ({}: <{}>)", item,
                                  target->config.name, target->location_of(item).str(), item));
    }
    set();
    std::string flag = "--";  // appended, not "--" + string: GCC 12 -O3 -Wrestrict
    flag += item;
    target->element_locations.emplace_back(item, SourceLocation{flag, 0});
  };
  VmConfig& c = target->config;
  take("kernel", !flags.kernel.empty(), !c.kernel.empty(), [&] { c.kernel = flags.kernel; });
  take("initrd", !flags.initrd.empty(), !c.initrd.empty(), [&] { c.initrd = flags.initrd; });
  take("cmdline", flags.cmdline.has_value(), !c.cmdline.empty(),
       [&] { c.cmdline = *flags.cmdline; });
  for (const DeviceSpec& spec : flags.machine_options) c.machine_options.push_back(spec);
}

// Builds and runs the system; the exit status (errors reported here too: in a jail this runs
// in the jail's own process).
int run_system(SystemDescription&& description, int shutdown_timeout) {
  return exit_status_of([&] {
    // Block the signals vmm answers in every thread (vCPU threads inherit the mask); the event
    // loop reads them from a signalfd.
    sigset_t set = watched_signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    const std::string file = description.file;
    System system(std::move(description));
    if (system.vms().empty()) throw UserError(fmt::format("{}: no virtual machine to run", file));
    GracefulStop stop(system, shutdown_timeout);
    // Ctrl-A s on any VM's console: as the first signal, on the loop GracefulStop runs on.
    EventLoop& stop_loop = system.control_loop();
    for (Vm* vm : system.vms()) {
      vm->set_shutdown_handler(
          [&stop, &stop_loop] { stop_loop.post([&stop] { stop.on_request("Ctrl-A s"); }); });
    }
    UniqueFd signals;
    watch_signals(system, stop, signals);
    take_stop_signals_after_the_loop(system, signals.get());
    const RunResult result = system.run();
    if (result.exit_status() == 0) {
      log::info("guest stopped ({}): {}", to_string(result.reason), result.detail);
    } else {
      log::error("guest stopped ({}): {}", to_string(result.reason), result.detail);
    }
    return result.exit_status();
  });
}

}  // namespace

int main(int argc, char** argv) {
  log::open_stderr();
  CLI::App app{"vmm: boot a Linux guest on KVM (libvmm " LIBVMM_VERSION ")"};
  app.set_version_flag("--version", "vmm (libvmm) " LIBVMM_VERSION);
  const Architecture& host = host_architecture();
  app.footer(fmt::format(
      "The guest's serial console ({}) is on the terminal; type Ctrl-A x to quit, Ctrl-A s to shut "
      "the guest down (its power button), Ctrl-A h for "
      "help. SIGUSR1 has vmm read its disks' image sizes again (an image grown on the host).\n"
      "Exit status: 0 when the guest reboots or powers off (or you quit), 1 on a guest or host "
      "error, 2 on bad input.",
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
  std::string memory_backing = "auto";
  app.add_option("--memory-backing", memory_backing,
                 "What backs guest RAM: auto (huge pages where the host allows; see "
                 "docs/PERFORMANCE.md), anonymous, memfd or hugetlb")
      ->default_str("auto");
  // CLI11 reads integers as strtoll's base 0 does ("010" is 8): counts and IDs here are decimal
  // (or 0x hex), checked whole.
  const auto plain_number = [](std::string text) -> std::string {
    const std::optional<uint64_t> value = parse_number(text);
    if (!value) throw CLI::ValidationError(fmt::format("'{}' is not a number", text));
    return std::to_string(*value);
  };
  app.add_option("--vcpus", config.vcpus, "Number of vCPUs")
      ->default_val(1)
      ->transform(plain_number);
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
  std::vector<std::string> vfio_values;
  app.add_option("--vfio", vfio_values,
                 "Pass a host PCI device through (VFIO), e.g. 0000:01:00.0 as lspci -D shows "
                 "it, bound to vfio-pci; repeatable (see README, Device passthrough)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->expected(1);
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
  int shutdown_timeout = 30;
  app.add_option("--shutdown-timeout", shutdown_timeout,
                 "On SIGTERM or SIGINT, press the guest's power button (x86_64: ACPI) and stop it "
                 "if it has not powered off after SECONDS; a second signal stops it at once (0: "
                 "stop at the first signal)")
      ->type_name("SECONDS")
      ->default_str("30")
      ->transform(plain_number);
  app.add_flag("--verbose,-v", verbose, "Log more (unclaimed port accesses, layout)");
  app.add_flag("--quiet,-q", quiet, "Log only errors");
  // The jail (docs/SECURITY.md, "Sandbox: the jail"): for the flags, run and check alike.
  std::string jail_dir;
  int64_t jail_uid = -1;
  int64_t jail_gid = -1;
  std::string jail_netns;
  const std::string jail_group = "Sandbox (as root; docs/SECURITY.md)";
  CLI::Option* jail_opt =
      app.add_option("--jail", jail_dir,
                     "Run the VM in a jail rooted at DIR (an empty directory) holding only the "
                     "files it needs, in new namespaces, as --jail-uid with no capabilities")
          ->type_name("DIR")
          ->group(jail_group);
  app.add_option("--jail-uid", jail_uid, "The user the jailed VM runs as (not 0)")
      ->type_name("N")
      ->transform(plain_number)
      ->needs(jail_opt)
      ->group(jail_group);
  app.add_option("--jail-gid", jail_gid, "Its group (not 0; default: the same number as the uid)")
      ->type_name("N")
      ->transform(plain_number)
      ->needs(jail_opt)
      ->group(jail_group);
  app.add_option("--jail-netns", jail_netns,
                 "Network namespace of the jail: NAME (ip netns add NAME; its TAPs) or new (an "
                 "empty one); default: this one")
      ->type_name("NAME|new")
      ->needs(jail_opt)
      ->group(jail_group);
  // A system description file instead of the flags (docs/SYSTEM_FORMAT.md).
  std::string system_file;
  std::string check_arch;
  std::string vm_name;
  app.add_option("--vm", vm_name,
                 "With run or check FILE: the virtual machine --kernel, --initrd, --cmdline, --dtb "
                 "and --dtb-overlay are for (default: the file's only one)");
  CLI::App* run_cmd = app.add_subcommand("run", "Run the system a .system file describes");
  CLI::App* check_cmd =
      app.add_subcommand("check", "Validate a .system file and print its resolved layout");
  for (CLI::App* cmd : {run_cmd, check_cmd}) {
    cmd->add_option("file", system_file, "System description (.system)")->required();
    cmd->fallthrough();  // -v, -q after the subcommand
  }
  // The architectures from their table (arch/machine_option.hpp), not a list of names here.
  std::string arch_names;
  for (const Architecture& arch : architectures()) {
    if (!arch_names.empty()) arch_names += ", ";
    arch_names += arch.name;
  }
  check_cmd->add_option(
      "--arch", check_arch,
      fmt::format("Check for this architecture: one of {} (default: this vmm's, {})", arch_names,
                  host.name));
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

  return exit_status_of([&]() -> int {
    const std::optional<SeccompMode> seccomp_mode = parse_seccomp_mode(seccomp);
    if (!seccomp_mode) {
      throw UserError(fmt::format("--seccomp: '{}' is not a mode; use off, log or kill", seccomp));
    }
    SystemDescription description;
    if (!system_file.empty()) {
      // A file's VM may take its images from the flags (FileFlags).
      FileFlags flags;
      flags.kernel = config.kernel;
      flags.initrd = config.initrd;
      if (app.get_option("--cmdline")->count() > 0) flags.cmdline = config.cmdline;
      if (!vfio_values.empty()) {
        throw UserError(
            fmt::format("--vfio {}: a .system file lists the devices it passes "
                        "through itself: <vfio device=\"{}\"/>",
                        vfio_values.front(), vfio_values.front()));
      }
      // What the file describes itself: a flag for it would be ignored, so it is refused.
      std::vector<std::string> own = {"--memory", "--memory-backing", "--vcpus", "--serial",
                                      "--strict"};
      for (const auto* kind : kinds) own.emplace_back(kind->flag());
      for (const std::string& name : own) {
        if (app.get_option(name)->count() > 0) {
          throw UserError(
              fmt::format("{}: not for a .system file, which describes its VMs "
                          "itself (docs/SYSTEM_FORMAT.md)",
                          name));
        }
      }
      for (const auto& flag : option_flags) {
        if (flag->cli->count() > 0) {
          flags.machine_options.push_back(machine_option_from_flag(*flag->option, flag->value));
        }
      }
      flags.vm = vm_name;
      std::vector<std::string> problems;
      description = SystemDescription::read(system_file, check_arch, problems);
      if (problems.empty()) apply_file_flags(description, system_file, flags);
      CheckOptions options;
      options.kernel_required = !check_cmd->parsed();
      for (auto& p : description.problems(HostFiles::real(), options)) {
        problems.push_back(std::move(p));
      }
      if (!problems.empty()) throw DescriptionError(std::move(problems));
      if (check_cmd->parsed()) {
        fmt::print("{}", description.layout());
        if (!jail_dir.empty()) {
          resolve_vfio_devices(description, true);
          fmt::print("{}", plan_jail(description, std::filesystem::current_path()).describe());
        }
        return 0;
      }
    } else {
      // The flags are a shorthand for a one-VM description.
      if (!vm_name.empty()) throw UserError("--vm: only with run or check FILE.system");
      if (config.kernel.empty()) throw UserError("--kernel is required (or: vmm run FILE.system)");
      auto size = parse_size(memory);
      if (!size)
        throw UserError(
            fmt::format("--memory: cannot parse '{}' (try 256M, 2G or 0x10000000)", memory));
      config.memory_size = *size;
      const std::optional<RamBacking> backing = parse_ram_backing(memory_backing);
      if (!backing) {
        throw UserError(fmt::format(
            "--memory-backing: '{}' is not a backing; use auto, anonymous, memfd or hugetlb",
            memory_backing));
      }
      config.ram_backing = *backing;
      bool device_has_stdio = false;
      for (size_t k = 0; k < kinds.size(); ++k) {
        for (const auto& value : device_values[k]) {
          config.devices.push_back(spec_from_flag(*kinds[k], value));
          for (const auto& claim : kinds[k]->claims(config.devices.back(), HostFiles::real())) {
            device_has_stdio |= claim.resource == "stdio";
          }
        }
      }
      for (const std::string& value : vfio_values) {
        const std::optional<std::string> address = pci::parse_pci_address(value);
        if (!address) {
          throw UserError(fmt::format(
              "--vfio {}: not a PCI address; write it as lspci -D shows it, e.g. 0000:01:00.0",
              value));
        }
        config.vfio.push_back({*address, fmt::format("--vfio {}", *address), std::nullopt});
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

    if (!jail_dir.empty()) {
      // Passed-through devices: their host side checked here, as root, where sysfs is (the jail
      // has none); the jail then holds their VFIO nodes and lets its user pin the VMs' memory.
      resolve_vfio_devices(description, true);
      // Every problem the host's files show, found here as root before the jail is built;
      // inside, the VM's user may still lack permission on one (reported by its flag or line).
      description.validate();
      const JailPlan plan = plan_jail(description, std::filesystem::current_path());
      JailOptions options =
          jail_options_from_flags(jail_dir, jail_uid, jail_gid, jail_netns, "the VM");
      options.memlock = vfio_pinned_bytes(description);
      // What devices cannot open inside (ALSA PCMs), opened here and inherited by the jail.
      for (auto* vm : description.vms()) {
        for (const DeviceSpec& spec : vm->config.devices) {
          if (const auto* kind = find_virtio_device_kind(spec.kind)) {
            for (int fd : kind->open_before_jail(spec)) options.inherit.push_back(fd);
          }
        }
      }
      return run_in_jail(options, plan,
                         [&] { return run_system(std::move(description), shutdown_timeout); });
    }
    return run_system(std::move(description), shutdown_timeout);
  });
}
