// vmm-device: serves one of libvmm's virtIO devices to a VMM in another process over vhost-user
// (QEMU's docs/interop/vhost-user.rst): `vmm --vhost-user blk,socket=PATH`, QEMU's
// `-device vhost-user-blk`, or any other front-end. One process per device, so that each can
// run under its own user and sandbox, away from the VMM. The device is the in-process one
// (VirtioBlock on a raw image, VirtioNet on a TAP, VirtioConsole on a character backend,
// VirtioSound on ALSA or WAV files), run by
// VhostUserBackend over the guest RAM the front-end shares.
//
// A separate program rather than a `vmm device` subcommand: it links none of the VM, KVM or
// architecture code (a smaller binary for a process whose only input is a hostile front-end),
// its seccomp filter is its own, and its command line is not vmm's.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include "libvmm/backends/sound_backend.hpp"
#include "libvmm/backends/stdio_backend.hpp"
#include "libvmm/backends/tap_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/seccomp.hpp"
#include "libvmm/jail/jail.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/console.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/sound.hpp"
#include "libvmm/virtio/vhost_user_backend.hpp"

using namespace libvmm;

namespace {

// Whether a process listens on the socket at `path`: a connection it would take (or a full
// backlog) says so, through any namespace. The other side sees a connection that sends
// nothing and closes: vmm-device takes that for a probe, not a front-end (--once goes on).
bool listening_at(const sockaddr_un& addr) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe) throw_errno("socket");
  return ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 ||
         errno == EAGAIN;
}

// Listens on a Unix socket at `path`. A socket file left there by an earlier run (nobody
// listening) is replaced; a socket another process serves, or anything else, is refused.
// `bound` is the inode made, so that only it is removed at the end.
UniqueFd listen_unix(const std::string& path, ino_t& bound) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    throw UserError(fmt::format("--socket '{}': a socket path is 1 to {} bytes long", path,
                                sizeof addr.sun_path - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      throw UserError(fmt::format("--socket {}: exists and is not a socket", path));
    }
    if (listening_at(addr)) {
      throw UserError(fmt::format("--socket {}: another process listens there", path));
    }
    ::unlink(path.c_str());
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd.get(), 1) != 0) {
    throw UserError(fmt::format("--socket {}: {}", path, std::strerror(errno)));
  }
  bound = ::lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  return fd;
}

// Removes the socket file at `path` if it is still the one this process bound.
void remove_own_socket(const std::string& path, ino_t bound) {
  struct stat st {};
  if (bound != 0 && ::lstat(path.c_str(), &st) == 0 && st.st_ino == bound) ::unlink(path.c_str());
}

// The signals vmm-device answers: those that stop it, SIGUSR1 (as vmm's: the disk's image is
// looked at again; a new size reaches the front-end as a config change) and SIGWINCH (as vmm's:
// a console on the resized terminal tells the guest).
constexpr int kRescanSignal = SIGUSR1;
sigset_t watched_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, kRescanSignal, SIGWINCH}) sigaddset(&set, s);
  return set;
}

struct Options {
  std::string socket;
  std::string disk;
  std::string net;
  std::string console;
  std::string sound;
  SeccompMode seccomp = SeccompMode::kill;
  bool once = false;
  std::string jail_dir;
  int64_t jail_uid = -1;
  int64_t jail_gid = -1;
  std::string jail_netns;
};

// The one device given, checked as vmm checks its flag, less what only a VMM's own devices have
// (the front-end picks the transport; vhost-net and a transmit thread are vmm's): each refused
// rather than ignored. Two of its own uses of one terminal are refused as vmm refuses them.
void check_device(const Options& options) {
  int given = 0;
  for (const std::string* spec : {&options.disk, &options.net, &options.console, &options.sound}) {
    if (!spec->empty()) ++given;
  }
  if (given != 1) {
    throw UserError(
        "one device to serve: give one of --disk PATH, --net tap=NAME, --console BACKEND or "
        "--sound BACKEND (see vmm-device --help)");
  }
  struct Served {
    std::string_view element;
    const std::string* value;
    std::vector<std::string_view> vmm_only;
  };
  for (const Served& d :
       {Served{"virtio_block", &options.disk, {"transport"}},
        Served{"virtio_net", &options.net, {"transport", "vhost", "iothread", "poll_us"}},
        Served{"virtio_console", &options.console, {"transport"}},
        Served{"virtio_sound", &options.sound, {"transport"}}}) {
    if (d.value->empty()) continue;
    const VirtioDeviceKind& kind = *find_virtio_device_kind(d.element);
    const DeviceSpec spec = checked_spec_from_flag(kind, *d.value, HostFiles::real());
    for (std::string_view attribute : d.vmm_only) {
      if (spec.get(attribute)) {
        throw UserError(spec.located(fmt::format(
            "{}= applies to vmm's own devices, not to one served over vhost-user", attribute)));
      }
    }
    std::set<std::string> claimed;
    for (const auto& claim : kind.claims(spec, HostFiles::real())) {
      if (!claimed.insert(claim.resource).second) {
        throw UserError(
            spec.located(fmt::format("{} is used twice ({})", claim.resource, claim.what)));
      }
    }
  }
}

// The host files the device and its socket use, for the jail: through the device registry, as
// vmm plans its VMs' (the disk image, the TAP's /dev/net/tun, the console's file or socket).
JailPlan plan_device_jail(const Options& options) {
  std::vector<std::pair<HostPath, std::string>> paths;
  for (const auto& [element, value] :
       {std::pair<std::string_view, const std::string*>{"virtio_block", &options.disk},
        {"virtio_net", &options.net},
        {"virtio_console", &options.console},
        {"virtio_sound", &options.sound}}) {
    if (value->empty()) continue;
    const VirtioDeviceKind* kind = find_virtio_device_kind(element);
    const DeviceSpec spec = spec_from_flag(*kind, *value);
    for (HostPath& path : kind->host_paths(spec)) paths.emplace_back(std::move(path), spec.where);
  }
  paths.emplace_back(HostPath{options.socket, HostPath::Use::socket, {}},
                     fmt::format("--socket {}", options.socket));
  return plan_jail(paths, std::filesystem::current_path());
}

int serve(const Options& options) {
  sigset_t signals = watched_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // the I/O thread inherits the mask

  // main() checked the device (check_device) before choosing a jail or not.
  // First: a socket another process serves is refused before the device opens anything.
  ino_t socket_inode = 0;
  UniqueFd listener = listen_unix(options.socket, socket_inode);
  // Removed however serve() ends (a device that fails to open included), if still its own.
  struct SocketFile {
    const std::string& path;
    ino_t inode;
    ~SocketFile() { remove_own_socket(path, inode); }
  } socket_file{options.socket, socket_inode};
  EventLoop loop;
  const SeccompMode mode = options.seccomp;
  std::atomic<bool> thread_failed{false};  // an I/O thread's filter did not load
  std::unique_ptr<VirtioDevice> device;
  std::string serving;
  if (!options.disk.empty()) {
    const BlockConfig config = parse_disk_spec(options.disk);
    BlockThreading threading;
    threading.name = "blk-io0";
    threading.on_thread_start = [mode, &loop, &thread_failed](std::stop_token) {
      try {
        install_seccomp(ThreadRole::io, mode, {}, "blk-io0");
      } catch (const std::exception& e) {
        log::error("{}", e.what());
        thread_failed = true;  // the exit status says so
        loop.stop();
        return false;  // never serves the front-end unfiltered
      }
      seccomp_self_test("blk-io0");
      return true;
    };
    device = std::make_unique<VirtioBlock>(config, std::move(threading));
    serving = fmt::format("virtio-blk {}", config.path);
  } else if (!options.console.empty()) {
    // Opened here, before the sandbox (a socket listens, a file is created); I/O on the loop.
    auto console = open_console(options.console, "--console", [&loop] { loop.stop(); });
    console->start(loop);
    serving = fmt::format("virtio-console on {}", options.console);
    device = std::move(console);
  } else if (!options.sound.empty()) {
    // The WAV files are created here (an ALSA PCM was opened before a jail); the pacing timer
    // and the audio run on the loop thread.
    const DeviceSpec spec = spec_from_flag(*find_virtio_device_kind("virtio_sound"), options.sound);
    auto sound = std::make_unique<VirtioSound>(
        open_sound_backend(spec.value_or("backend", ""), spec.value_or("in", ""), "--sound"));
    sound->start(loop);
    serving = fmt::format("virtio-snd on {}", options.sound);
    device = std::move(sound);
  } else {
    // The TAP is opened (or created) here, before the sandbox; frames move on the loop thread.
    const NetConfig config = parse_net_spec(options.net);
    const MacAddress mac = config.mac.value_or(default_mac(options.socket, 0));
    // num_queues=N: a queue of a multiqueue TAP per pair; the front-end enables the pairs the
    // driver uses (it serves the control queue), the others' TAP queues stay detached.
    std::vector<std::shared_ptr<NetBackend>> taps;
    try {
      for (auto& tap : TapBackend::open_queues(config.tap, config.num_queues)) {
        taps.push_back(std::move(tap));
      }
    } catch (const UserError& e) {
      throw UserError(fmt::format("--net {}: {}", options.net, e.what()));
    }
    auto net = std::make_unique<VirtioNet>(std::move(taps), mac, config.mtu);
    net->start(loop);
    serving = fmt::format(
        "virtio-net on tap {} (MAC {}, MTU {}{})", config.tap, format_mac(mac), config.mtu,
        config.num_queues > 1 ? fmt::format(", {} queue pairs", config.num_queues) : "");
    device = std::move(net);
  }

  // Made before the sandbox (no eventfd2 after it): each connection's notice of a front-end
  // that shrank the memory it shared.
  UniqueFd shrink_notice(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!shrink_notice) throw_errno("eventfd");
  const std::string peer = fmt::format("front-end on {}", options.socket);
  std::unique_ptr<VhostUserBackend> backend;

  UniqueFd signal_fd(::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd) throw_errno("signalfd");
  loop.add(signal_fd.get(), EPOLLIN, [&](uint32_t) {
    signalfd_siginfo info{};
    if (::read(signal_fd.get(), &info, sizeof info) != sizeof info) return;
    if (static_cast<int>(info.ssi_signo) == SIGWINCH) return StdioBackend::terminal_resized();
    if (static_cast<int>(info.ssi_signo) != kRescanSignal) {
      log::info("stopped by signal {}", info.ssi_signo);
      loop.stop();
      return;
    }
    const bool changed = device->rescan();
    log::info("signal {}: looked at the device's backing again; {}", info.ssi_signo,
              changed ? "it changed" : "no change");
    if (changed && backend) backend->notify_config_change();
  });
  int status = 0;
  loop.add(listener.get(), EPOLLIN, [&](uint32_t) {
    UniqueFd client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) return;
    if (backend) {
      log::warn("{}: a second front-end connected; one is served at a time: refused", peer);
      return;
    }
    log::info("{}: connected", peer);
    backend = std::make_unique<VhostUserBackend>(
        *device, loop, std::move(client), peer,
        [&](const std::string& why) {
          // A connection that sent nothing (another vmm-device asking whether this socket is
          // served) is no front-end: --once waits for one.
          const bool heard = backend && backend->heard_from();
          if (!heard) log::info("{}: it closed without a message (a probe?)", peer);
          // Not from inside the backend's own call: the loop destroys it next.
          loop.post([&, failed = !why.empty(), heard] {
            backend.reset();
            if (options.once && heard) {
              status = failed ? kExitFailure : 0;
              loop.stop();
            }
          });
        },
        shrink_notice.get());
  });

  install_seccomp(ThreadRole::vhost_backend, mode, {}, "vmm-device");
  seccomp_self_test("vmm-device");
  log::info("serving {} on {}", serving, options.socket);
  loop.run();
  backend.reset();
  // (A failed thread set thread_failed before it stopped the loop.)
  return thread_failed ? kExitFailure : status;
}

}  // namespace

int main(int argc, char** argv) {
  log::set_program_name("vmm-device");
  log::open_stderr();
  CLI::App app{
      "vmm-device: serve one of libvmm's virtIO devices to a VMM in another process "
      "over vhost-user (libvmm " LIBVMM_VERSION ")"};
  app.set_version_flag("--version", "vmm-device (libvmm) " LIBVMM_VERSION);
  app.footer(
      "The front-end connects to --socket: vmm --vhost-user blk|net|console|sound,socket=PATH, or "
      "QEMU's -chardev socket,path=PATH -device vhost-user-blk (or -netdev vhost-user). One "
      "front-end at a time; the next may connect when it leaves. SIGUSR1 has --disk read its "
      "image's size again and tell the front-end of a new one.\nExit status: 0 when stopped by "
      "SIGTERM/SIGINT (or, with --once, "
      "when the front-end left in order), 1 on a front-end's protocol error with --once or a "
      "host error, 2 on bad input.");
  Options options;
  std::string seccomp = "kill";
  bool verbose = false;
  bool quiet = false;
  app.add_option("--socket", options.socket, "Unix socket to listen on for the front-end")
      ->required()
      ->type_name("PATH");
  app.add_option("--disk", options.disk,
                 "Serve a virtIO block device on a raw image: "
                 "PATH[,readonly][,direct][,serial=ID][,io=auto|sync|io_uring][,iothread=on|off] "
                 "(as vmm's --disk)");
  app.add_option("--net", options.net,
                 "Serve a virtIO network device on a host TAP (opened, or created, before the "
                 "sandbox): tap=NAME[,mac=52:54:00:12:34:56][,mtu=N][,num_queues=N] (as vmm's "
                 "--net; default MAC derived from the socket path; num_queues: queue pairs on a "
                 "multiqueue TAP, for a front-end with as many)");
  app.add_option("--console", options.console,
                 "Serve a virtIO console (hvc0) on a character backend: stdio, file:PATH, "
                 "socket:PATH, pty or none, with named ports port1=NAME=BACKEND .. port8 (as "
                 "vmm's --console)")
      ->type_name("BACKEND");
  app.add_option("--sound", options.sound,
                 "Serve a virtIO sound card (one output, one input stream) on none, alsa[:PCM] "
                 "or wav:OUT.wav[,in=IN.wav] (as vmm's --sound)")
      ->type_name("BACKEND");
  app.add_flag("--once", options.once, "Exit when the first front-end leaves");
  app.add_option("--seccomp", seccomp,
                 "Sandbox each thread with a seccomp allow-list once the socket listens: kill "
                 "(stop on a call off the list, naming it), log or off")
      ->type_name("off|log|kill")
      ->default_str("kill");
  const std::string jail_group = "Sandbox (as root; docs/SECURITY.md)";
  CLI::Option* jail_opt =
      app.add_option("--jail", options.jail_dir,
                     "Serve from a jail rooted at DIR (an empty directory) holding only the files "
                     "the device needs, in new namespaces, as --jail-uid with no capabilities; "
                     "the socket is then at DIR/PATH on the host")
          ->type_name("DIR")
          ->group(jail_group);
  app.add_option("--jail-uid", options.jail_uid, "The user the jailed device runs as (not 0)")
      ->type_name("N")
      ->needs(jail_opt)
      ->group(jail_group);
  app.add_option("--jail-gid", options.jail_gid,
                 "Its group (not 0; default: the same number as the uid)")
      ->type_name("N")
      ->needs(jail_opt)
      ->group(jail_group);
  app.add_option("--jail-netns", options.jail_netns,
                 "Network namespace of the jail: NAME (ip netns add NAME; its TAP) or new (an "
                 "empty one: not with --net); default: this one")
      ->type_name("NAME|new")
      ->needs(jail_opt)
      ->group(jail_group);
  app.add_flag("--verbose,-v", verbose, "Log more (every message of the front-end)");
  app.add_flag("--quiet,-q", quiet, "Log only errors");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    log::error("{} (see vmm-device --help)", e.what());
    return kExitUserError;
  }
  if (verbose) log::set_level(log::Level::debug);
  if (quiet) log::set_level(log::Level::error);
  ::signal(SIGPIPE, SIG_IGN);

  return exit_status_of([&]() -> int {
    const std::optional<SeccompMode> mode = parse_seccomp_mode(seccomp);
    if (!mode) {
      throw UserError(fmt::format("--seccomp: '{}' is not a mode; use off, log or kill", seccomp));
    }
    options.seccomp = *mode;
    check_device(options);
    if (options.jail_dir.empty()) return serve(options);
    // Checked and built as root; the device is opened inside, as the jail's user.
    const JailPlan plan = plan_device_jail(options);
    JailOptions jail = jail_options_from_flags(options.jail_dir, options.jail_uid, options.jail_gid,
                                               options.jail_netns, "the device");
    // An ALSA PCM opens files its configuration chooses: opened here, inherited by the jail.
    if (!options.sound.empty()) {
      const VirtioDeviceKind& kind = *find_virtio_device_kind("virtio_sound");
      for (int fd : kind.open_before_jail(spec_from_flag(kind, options.sound))) {
        jail.inherit.push_back(fd);
      }
    }
    return run_in_jail(jail, plan, [&] { return exit_status_of([&] { return serve(options); }); });
  });
}
