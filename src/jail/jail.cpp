// Building the jail and running in it (see jail.hpp and docs/SECURITY.md).
//
// The calling process (root) stays outside as the jail's supervisor: it checks and creates what
// must exist on the host (output files, FIFOs, TAPs owned by the jail's user), then
// unshare(CLONE_NEWPID) and fork(): the child is PID 1 of a new PID namespace. A real fork()
// rather than a raw clone() keeps the C library's view of the child consistent (its cached
// thread id). The child then makes its own mount, IPC, UTS (and network) namespaces, builds
// the root in DIR, enters it, limits itself, drops to the user and runs the body.
#include "libvmm/jail/jail.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {
namespace {

// What the supervisor passes on to the jailed process: the stop signals, and SIGUSR1 (vmm:
// look at the disks' images again).
// SIGWINCH too: the jail has a session of its own, so the terminal's resizes reach only the
// supervisor.
constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGWINCH};
// Resource limits of the jail (docs/SECURITY.md says why these and not others).
constexpr rlim_t kMaxOpenFiles = 4096;

std::string netns_path(const std::string& name) {
  return name.find('/') != std::string::npos ? name : "/run/netns/" + name;
}

std::string errno_text() {
  return std::strerror(errno);
}

bool interface_exists(const std::string& name) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), std::min(name.size(), sizeof ifr.ifr_name - 1));
  return probe && ::ioctl(probe.get(), SIOCGIFINDEX, &ifr) == 0;
}

// Opens TAP `name` through /dev/net/tun as root (creating it if missing).
UniqueFd attach_tap(const std::string& name) {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd) throw UserError(fmt::format("--jail: /dev/net/tun: {}", errno_text()));
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), std::min(name.size(), sizeof ifr.ifr_name - 1));
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    throw UserError(fmt::format("--jail: TAP device '{}': {}", name, errno_text()));
  }
  return fd;
}

// A TAP the jail's user may attach to: persistent (it outlives this descriptor) and owned by
// uid/gid. The supervisor deletes it when the jail ends, as vmm does with a TAP it creates.
void create_tap(const std::string& name, uid_t uid, gid_t gid) {
  UniqueFd fd = attach_tap(name);
  if (::ioctl(fd.get(), TUNSETOWNER, static_cast<unsigned long>(uid)) != 0 ||
      ::ioctl(fd.get(), TUNSETGROUP, static_cast<unsigned long>(gid)) != 0 ||
      ::ioctl(fd.get(), TUNSETPERSIST, 1ul) != 0) {
    throw UserError(fmt::format("--jail: TAP device '{}': {}", name, errno_text()));
  }
}

void delete_tap(const std::string& name) {
  try {
    UniqueFd fd = attach_tap(name);
    ::ioctl(fd.get(), TUNSETPERSIST, 0ul);
  } catch (const UserError& e) {
    log::warn("{}", e.what());
  }
}

// What the supervisor learns about a file before the jail is built.
struct Prepared {
  bool is_device = false;  // a block or character device: its bind mount must allow devices
  dev_t rdev = 0;          // HostPath::Use::device: the node to make
};

// Checks (and, for outputs and FIFOs, creates) a planned file on the host, as root.
Prepared prepare_file(const JailFile& f, uid_t uid, gid_t gid) {
  using Use = HostPath::Use;
  const std::string path = f.path.string();
  auto fail = [&](const std::string& why) {
    return UserError(fmt::format("{} {}: {}", f.where, path, why));
  };
  struct stat st {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) throw fail(errno_text());
  Prepared p;
  switch (f.use) {
    case Use::read:
    case Use::read_write:
      if (!exists) throw fail(std::strerror(ENOENT));
      // A Unix socket another process listens on (a vhost-user back-end): the VM connects to
      // it from inside, as the jail's user, which needs write permission on it.
      if (S_ISSOCK(st.st_mode)) {
        const bool can = (st.st_uid == uid && (st.st_mode & S_IWUSR)) ||
                         (st.st_gid == gid && (st.st_mode & S_IWGRP)) || (st.st_mode & S_IWOTH);
        if (!can) {
          throw fail(fmt::format(
              "the jail's user (uid {}, gid {}) cannot connect to this socket: it needs write "
              "permission on it (chown the socket to that user, or run the back-end as that user)",
              uid, gid));
        }
      }
      break;
    case Use::create:
      if (!exists) {
        // Created for the jail's user, who opens it inside (FileBackend truncates it).
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        if (!fd || ::fchown(fd.get(), uid, gid) != 0) throw fail(errno_text());
        return p;
      }
      break;
    case Use::fifo:
      if (!exists) {
        // lchown: if someone swapped the FIFO for a symlink meanwhile, the link is chowned,
        // not what it points at.
        if (::mkfifo(path.c_str(), 0600) != 0 || ::lchown(path.c_str(), uid, gid) != 0) {
          throw fail(errno_text());
        }
        return p;
      }
      break;
    case Use::device:
      if (!exists) throw fail("no such device");
      if (!S_ISCHR(st.st_mode)) throw fail("not a character device");
      p.rdev = st.st_rdev;
      return p;
    case Use::socket:
    case Use::pty:
      return p;
  }
  if (S_ISDIR(st.st_mode)) throw fail("a directory, not a file");
  p.is_device = S_ISBLK(st.st_mode) || S_ISCHR(st.st_mode);
  return p;
}

// ---- In the jail's first process (PID 1 of its PID namespace), as root until drop(). ----

// Setup failures inside the jail: a SystemError naming the step.
void must(bool ok, const std::string& what) {
  if (!ok) throw SystemError(what, errno);
}

void make_dirs(const std::filesystem::path& dir) {
  std::filesystem::path at;
  for (const auto& part : dir) {
    at /= part;
    if (::mkdir(at.c_str(), 0755) != 0 && errno != EEXIST) {
      throw SystemError(fmt::format("mkdir {}", at.string()), errno);
    }
  }
}

void bind(const std::filesystem::path& from, const std::filesystem::path& to, unsigned long flags) {
  must(::mount(from.c_str(), to.c_str(), nullptr, MS_BIND, nullptr) == 0,
       fmt::format("bind-mount {} on {}", from.string(), to.string()));
  // The flags of a bind mount take a remount.
  must(::mount(nullptr, to.c_str(), nullptr, MS_BIND | MS_REMOUNT | flags, nullptr) == 0,
       fmt::format("remount {}", to.string()));
}

size_t depth(const std::filesystem::path& path) {
  return static_cast<size_t>(std::distance(path.begin(), path.end()));
}

// The sockets' directories (the VMM creates its sockets there), each its own writable mount (the
// root is read-only), before any file is bound: a file planned in one (or below it) is bound on
// top, not hidden under the directory's mount. Shallowest first, for the same reason; returned
// in that order.
std::vector<std::filesystem::path> mount_socket_dirs(const std::filesystem::path& root,
                                                     const JailPlan& plan) {
  std::set<std::filesystem::path> dirs;
  for (const JailFile& f : plan.files) {
    if (f.use == HostPath::Use::socket) dirs.insert((root / f.path.relative_path()).parent_path());
  }
  std::vector<std::filesystem::path> shallowest_first(dirs.begin(), dirs.end());
  std::stable_sort(shallowest_first.begin(), shallowest_first.end(),
                   [](const auto& a, const auto& b) { return depth(a) < depth(b); });
  for (const auto& dir : shallowest_first) {
    make_dirs(dir);
    bind(dir, dir, MS_NOSUID | MS_NODEV | MS_NOEXEC);
  }
  return shallowest_first;
}

// Gives the sockets' directories to the jail's user, last (until then nothing below DIR is
// anyone's but root's, so nothing planted can redirect the building) and deepest first (a
// directory of the user's could otherwise hold a symlink where a deeper one was to be
// chowned): each opened without following a link, changed through its descriptor.
void give_socket_dirs(const std::vector<std::filesystem::path>& shallowest_first,
                      const JailOptions& options) {
  for (auto it = shallowest_first.rbegin(); it != shallowest_first.rend(); ++it) {
    const std::filesystem::path& dir = *it;
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    must(fd && ::fchown(fd.get(), options.uid, options.gid) == 0 && ::fchmod(fd.get(), 0700) == 0,
         fmt::format("chown {}", dir.string()));
  }
}

// Puts every planned file at its path below `root`. Files under /dev go into a new tmpfs there.
void populate(const std::filesystem::path& root, const JailOptions& options, const JailPlan& plan,
              const std::vector<Prepared>& prepared) {
  using Use = HostPath::Use;
  const std::filesystem::path dev = root / "dev";
  make_dirs(dev);
  must(::mount("tmpfs", dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC,
               "mode=0755,size=64k,nr_inodes=256") == 0,
       "mount a tmpfs on /dev");
  const std::vector<std::filesystem::path> socket_dirs = mount_socket_dirs(root, plan);
  for (size_t i = 0; i < plan.files.size(); ++i) {
    const JailFile& f = plan.files[i];
    const std::filesystem::path at = root / f.path.relative_path();
    make_dirs(at.parent_path());
    switch (f.use) {
      case Use::read:
      case Use::read_write:
      case Use::create:
      case Use::fifo: {
        UniqueFd stub(::open(at.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        must(static_cast<bool>(stub), fmt::format("create {}", at.string()));
        unsigned long flags = MS_NOSUID | MS_NOEXEC;
        if (!prepared[i].is_device) flags |= MS_NODEV;
        if (f.use == Use::read) flags |= MS_RDONLY;
        bind(f.path, at, flags);
        break;
      }
      case Use::socket:
        break;  // its directory is mounted above and given to the user below; on the host the
                // socket is at DIR/PATH
      case Use::device:
        must(::mknod(at.c_str(), S_IFCHR | 0600, prepared[i].rdev) == 0 &&
                 ::chown(at.c_str(), options.uid, options.gid) == 0,
             fmt::format("mknod {}", at.string()));
        break;
      case Use::pty:
        break;  // refused by plan_jail()
    }
  }
  make_dirs(root / plan.cwd.relative_path());
  give_socket_dirs(socket_dirs, options);
  // A /proc of this PID namespace showing only its own processes and nothing of the system
  // (subset=pid, Linux 5.8): StdioBackend reopens stdin and stdout through /proc/self/fd.
  const std::filesystem::path proc = root / "proc";
  make_dirs(proc);
  if (::mount("proc", proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "hidepid=invisible,subset=pid") != 0) {
    log::debug("jail: no /proc ({})", errno_text());
    ::rmdir(proc.c_str());
  }
  must(::mount(nullptr, dev.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
               "mode=0755,size=64k,nr_inodes=256") == 0,
       "remount /dev read-only");
  must(::mount(nullptr, root.c_str(), nullptr,
               MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0,
       "remount the jail's root read-only");
}

// Makes `root` (a mount point) the root directory, the old one gone.
void enter_root(const std::filesystem::path& root) {
  must(::chdir(root.c_str()) == 0, fmt::format("chdir {}", root.string()));
  if (::syscall(SYS_pivot_root, ".", ".") == 0) {
    // The old root is now stacked on ".": detach it and everything below it.
    must(::umount2(".", MNT_DETACH) == 0, "detach the old root");
  } else if (errno == EINVAL) {
    // The current root is an initramfs (rootfs), which cannot be pivoted away (pivot_root(2)):
    // move the jail over it and chroot, as switch_root does. Without CAP_SYS_CHROOT (dropped
    // below) and with no descriptor outside, the process cannot climb back out.
    must(::mount(".", "/", nullptr, MS_MOVE, nullptr) == 0, "move the jail onto /");
    must(::chroot(".") == 0, "chroot");
  } else {
    throw SystemError("pivot_root", errno);
  }
  must(::chdir("/") == 0, "chdir /");
}

void limit_resources(const JailOptions& options) {
  const rlimit no_core{0, 0};  // a core dump would hold guest memory
  must(::setrlimit(RLIMIT_CORE, &no_core) == 0, "setrlimit RLIMIT_CORE");
  // VFIO pins guest memory for DMA against RLIMIT_MEMLOCK once the user has no CAP_IPC_LOCK:
  // raised (as root, still) to what the VMs pin, never lowered.
  rlimit lock{};
  must(::getrlimit(RLIMIT_MEMLOCK, &lock) == 0, "getrlimit RLIMIT_MEMLOCK");
  if (lock.rlim_cur < options.memlock) {  // RLIM_INFINITY is above any figure
    lock.rlim_cur = options.memlock;
    lock.rlim_max = std::max<rlim_t>(lock.rlim_max, options.memlock);
    must(::setrlimit(RLIMIT_MEMLOCK, &lock) == 0, "setrlimit RLIMIT_MEMLOCK");
    log::debug("jail: RLIMIT_MEMLOCK raised to {} bytes for the memory VFIO pins", options.memlock);
  }
  rlimit files{};
  must(::getrlimit(RLIMIT_NOFILE, &files) == 0, "getrlimit RLIMIT_NOFILE");
  files.rlim_cur = files.rlim_max = std::min(files.rlim_max, kMaxOpenFiles);
  must(::setrlimit(RLIMIT_NOFILE, &files) == 0, "setrlimit RLIMIT_NOFILE");
}

// To uid/gid with no supplementary groups, no capabilities in any set (the bounding set first:
// dropping from it needs CAP_SETPCAP) and no_new_privs.
void drop_privileges(uid_t uid, gid_t gid) {
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  for (unsigned long cap = 0; cap < 64; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      must(errno == EINVAL, fmt::format("drop capability {} from the bounding set", cap));
      break;  // past the last capability this kernel knows
    }
  }
  must(::setgroups(0, nullptr) == 0, "setgroups");
  must(::setresgid(gid, gid, gid) == 0, fmt::format("setresgid {}", gid));
  must(::setresuid(uid, uid, uid) == 0, fmt::format("setresuid {}", uid));
  // Leaving uid 0 clears the permitted and effective sets; clear them explicitly all the same.
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  must(::syscall(SYS_capset, &header, data) == 0, "capset");
  must(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "PR_SET_NO_NEW_PRIVS");
  // Credentials changed, so now: the jail dies with its supervisor.
  must(::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == 0, "PR_SET_PDEATHSIG");
  // Verify rather than trust.
  __user_cap_data_struct now[_LINUX_CAPABILITY_U32S_3] = {};
  must(::syscall(SYS_capget, &header, now) == 0, "capget");
  for (const auto& d : now) {
    if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) {
      throw SystemError("capabilities left after dropping them", EPERM);
    }
  }
  if (::getuid() != uid || ::geteuid() != uid || ::getgid() != gid || ::getegid() != gid ||
      ::prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) != 0) {
    throw SystemError("credentials left after dropping them", EPERM);
  }
}

[[noreturn]] void jail_child(const JailOptions& options, const JailPlan& plan,
                             const std::vector<Prepared>& prepared,
                             const std::function<int()>& body) {
  int status = 1;
  try {
    // Nothing of the caller's but stdin, stdout, stderr (and the log's own description of it)
    // and the descriptors opened for the jail (options.inherit) goes in.
    std::vector<int> keep = options.inherit;
    keep.push_back(log::stderr_fd());
    std::sort(keep.begin(), keep.end());
    unsigned from = 3;
    for (int fd : keep) {
      if (fd < 3 || static_cast<unsigned>(fd) < from) continue;
      if (static_cast<unsigned>(fd) > from) {
        must(::close_range(from, static_cast<unsigned>(fd) - 1, 0) == 0, "close_range");
      }
      from = static_cast<unsigned>(fd) + 1;
    }
    must(::close_range(from, ~0u, 0) == 0, "close_range");
    // A session of its own: no controlling terminal, so the jail cannot push input into the
    // shell it was started from (TIOCSTI) and the terminal's Ctrl-C reaches it once, through
    // the supervisor (which forwards it), not also straight from the terminal.
    must(::setsid() >= 0, "setsid");
    // A session keyring of its own: root's (its keys' possessor rights) stays outside.
    // (A container's seccomp profile may refuse keyctl: then there is no keyring to leave.)
    if (::syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, nullptr) < 0) {
      must(errno == ENOSYS || errno == EPERM, "join a new session keyring");
      log::warn("jail: keeps the caller's session keyring (keyctl: {})", errno_text());
    }
    // As PID 1 it ignores a default-action signal it sends itself: abort() would go on into
    // calls the seccomp filter refuses, reported as an attack. It ends here instead, unless
    // the program has a handler of its own (vmm's crash report, which ends it too).
    struct sigaction abort_action {};
    must(::sigaction(SIGABRT, nullptr, &abort_action) == 0, "sigaction SIGABRT");
    if (abort_action.sa_handler == SIG_DFL) {
      abort_action.sa_handler = [](int) { ::_exit(128 + SIGABRT); };
      must(::sigaction(SIGABRT, &abort_action, nullptr) == 0, "sigaction SIGABRT");
    }
    int flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
    if (options.network == JailOptions::Network::none) flags |= CLONE_NEWNET;
    must(::unshare(flags) == 0, "unshare");
    // No mount made here may reach the host's namespace.
    must(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, "make / private");
    const std::filesystem::path root = options.dir;
    must(::mount(root.c_str(), root.c_str(), nullptr, MS_BIND, nullptr) == 0,
         fmt::format("bind-mount {} on itself", root.string()));
    populate(root, options, plan, prepared);
    enter_root(root);
    if (::chdir(plan.cwd.c_str()) != 0)
      log::debug("jail: chdir {}: {}", plan.cwd.string(), errno_text());
    static constexpr char kHostname[] = "vmm-jail";
    ::sethostname(kHostname, sizeof kHostname - 1);
    limit_resources(options);
    drop_privileges(options.uid, options.gid);
    status = body();
  } catch (const std::exception& e) {
    log::error("jail: {}", e.what());
    status = 1;
  }
  std::fflush(nullptr);
  ::_exit(status);
}

// Removes everything in the directory `dir_fd` (shown as `shown`). Relative to descriptors,
// never through a path: the sockets' directories are the jail's user's, and a host process of
// that uid could swap a directory for a symlink to make a removal by path land outside DIR.
void empty_below(int dir_fd, const std::string& shown, unsigned depth) {
  constexpr unsigned kMaxDepth = 64;  // the jail makes a few levels; more is someone else's
  DIR* listing = ::fdopendir(::dup(dir_fd));
  if (listing == nullptr) {
    log::warn("jail: cannot list {}: {}", shown, errno_text());
    return;
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(listing)) {
    const std::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(listing);
  for (const std::string& name : names) {
    const std::string path = shown + "/" + name;
    struct stat st {};
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    int flags = 0;
    if (S_ISDIR(st.st_mode)) {
      flags = AT_REMOVEDIR;
      UniqueFd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub || depth >= kMaxDepth) {
        log::warn("jail: cannot empty {}: {}", path, sub ? "too deep" : errno_text());
        continue;
      }
      empty_below(sub.get(), path, depth + 1);
    }
    if (::unlinkat(dir_fd, name.c_str(), flags) != 0) {
      log::warn("jail: cannot remove {}: {}", path, errno_text());
    }
  }
}

// Everything below DIR: after the jail, only its stubs, directories and the sockets made
// inside are there (DIR was empty; the mounts died with the jail's namespace).
void empty_dir(const std::filesystem::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    log::warn("jail: cannot empty {}: {}", dir.string(), errno_text());
    return;
  }
  empty_below(fd.get(), dir.string(), 0);
}

// Every directory above DIR (as given, and as it resolves) must be root's and writable by no
// one else, or sticky (/tmp): otherwise another user could swap DIR, or a directory on the way
// to it, for one of their own between this check and the jail's mounts. A symlink on the way
// must be root's (its target is checked as the resolved path).
void check_ancestors(const std::filesystem::path& dir, const std::string& shown) {
  std::error_code ec;
  const std::filesystem::path resolved = std::filesystem::canonical(dir, ec);
  for (const auto& [path, follow] : {std::pair{dir.lexically_normal(), false},
                                     std::pair{ec ? std::filesystem::path{} : resolved, true}}) {
    if (path.empty()) continue;
    std::filesystem::path at;
    for (auto part = path.begin(); part != path.end(); ++part) {
      at /= *part;
      if (std::next(part) == path.end()) break;  // DIR itself: checked on its own
      struct stat st {};
      if ((follow ? ::stat(at.c_str(), &st) : ::lstat(at.c_str(), &st)) != 0) {
        throw UserError(fmt::format("--jail {}: {}: {}", shown, at.string(), errno_text()));
      }
      const bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) != 0;
      const bool others_write = !S_ISLNK(st.st_mode) && (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
      if (st.st_uid != 0 || (others_write && !sticky_dir)) {
        throw UserError(fmt::format(
            "--jail {}: {} above it is not root's alone (owner uid {}, mode {:o}): another "
            "user could swap the jail's directory",
            shown, at.string(), st.st_uid, st.st_mode & 07777));
      }
    }
  }
}

}  // namespace

void check_jail(const JailOptions& options, const JailPlan& plan) {
  if (::geteuid() != 0) {
    throw UserError(
        "--jail: needs root (it makes namespaces, mounts and device nodes, then drops to "
        "--jail-uid)");
  }
  const std::string dir = options.dir.string();
  if (options.dir.empty() || !options.dir.is_absolute()) {
    throw UserError(fmt::format("--jail {}: not an absolute path", dir));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    throw UserError(fmt::format("--jail {}: {}", dir, errno_text()));
  }
  if (!S_ISDIR(st.st_mode)) throw UserError(fmt::format("--jail {}: not a directory", dir));
  // Built as root: another user able to write in it could plant symlinks for our mounts.
  if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    throw UserError(
        fmt::format("--jail {}: must be owned by root and writable by no one else", dir));
  }
  if (options.dir.lexically_normal() == "/") {
    throw UserError("--jail /: the jail's root must be a directory of its own");
  }
  check_ancestors(options.dir, dir);
  std::error_code ec;
  if (!std::filesystem::is_empty(options.dir, ec) || ec) {
    throw UserError(fmt::format(
        "--jail {}: not empty (the jail holds only what {} needs: give an empty directory)", dir,
        options.who));
  }
  if (options.uid == 0) {
    throw UserError(
        fmt::format("--jail-uid 0: {} must run as a user other than root", options.who));
  }
  if (options.gid == 0) {
    throw UserError(
        fmt::format("--jail-gid 0: {} must run in a group other than root", options.who));
  }
  if (options.network == JailOptions::Network::named &&
      ::access(netns_path(options.netns).c_str(), F_OK) != 0) {
    throw UserError(
        fmt::format("--jail-netns {}: no such network namespace ({}: {}; make one with "
                    "ip netns add NAME)",
                    options.netns, netns_path(options.netns), errno_text()));
  }
  if (options.network == JailOptions::Network::none && !plan.taps.empty()) {
    throw UserError(fmt::format(
        "--jail-netns new: TAP '{}' would reach nothing from a new, empty network namespace "
        "(make one with ip netns add NAME, and give --jail-netns NAME)",
        plan.taps.front()));
  }
  for (const JailFile& f : plan.files) {
    const auto rel = f.path.lexically_relative(options.dir.lexically_normal());
    if (!rel.empty() && *rel.begin() != "..") {
      throw UserError(
          fmt::format("{} {}: inside the jail's directory {}", f.where, f.path.string(), dir));
    }
  }
}

int run_in_jail(const JailOptions& options, const JailPlan& plan,
                const std::function<int()>& body) {
  check_jail(options, plan);
  if (options.network == JailOptions::Network::named) {
    // The supervisor joins it too: the TAPs it makes and deletes live there.
    const std::string path = netns_path(options.netns);
    UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns || ::setns(ns.get(), CLONE_NEWNET) != 0) {
      throw UserError(fmt::format("--jail-netns {}: {}: {}", options.netns, path, errno_text()));
    }
  }
  std::vector<Prepared> prepared;
  for (const JailFile& f : plan.files)
    prepared.push_back(prepare_file(f, options.uid, options.gid));
  std::vector<std::string> created_taps;
  auto delete_taps = [&created_taps] {
    for (const auto& tap : created_taps) delete_tap(tap);
  };
  try {
    for (const std::string& tap : plan.taps) {
      if (interface_exists(tap)) continue;  // the user's: it must let --jail-uid attach
      create_tap(tap, options.uid, options.gid);
      created_taps.push_back(tap);
    }
  } catch (...) {
    delete_taps();
    throw;
  }

  // The forwarded signals and SIGCHLD wait in the supervisor for sigwaitinfo; the jail inherits
  // the mask, and vmm reads the forwarded ones through a signalfd (PID 1 ignores what it does
  // not block or handle, so blocked is also what lets them in).
  sigset_t wait_set;
  sigemptyset(&wait_set);
  for (int s : kForwardedSignals) sigaddset(&wait_set, s);
  sigaddset(&wait_set, SIGCHLD);
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &wait_set, &old_mask);

  std::fflush(nullptr);
  // unshare(CLONE_NEWPID) sets where this process's next children go; put that back after the
  // fork, so that nothing the supervisor starts later (LeakSanitizer's tracer at exit, in
  // sanitizer builds) lands in the jail's namespace, dead by then.
  UniqueFd own_pid_ns(::open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
  const pid_t child = ::unshare(CLONE_NEWPID) == 0 ? ::fork() : -1;
  if (child > 0 && own_pid_ns && ::setns(own_pid_ns.get(), CLONE_NEWPID) != 0) {
    log::debug("jail: cannot return to this PID namespace: {}", errno_text());
  }
  if (child < 0) {
    const int err = errno;
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    delete_taps();
    throw SystemError("jail: unshare(CLONE_NEWPID) and fork", err);
  }
  if (child == 0) jail_child(options, plan, prepared, body);

  log::info("jail: {} runs as pid {} (uid {}, gid {}) in {}", options.who, child, options.uid,
            options.gid, options.dir.string());
  int status = 0;
  for (;;) {
    siginfo_t info{};
    const int sig = ::sigwaitinfo(&wait_set, &info);
    if (sig < 0) continue;  // EINTR
    if (sig != SIGCHLD) {
      ::kill(child, sig);
      continue;
    }
    const pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done == child) break;
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  empty_dir(options.dir);
  delete_taps();
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) {
    log::error("jail: {} was killed by signal {}", options.who, WTERMSIG(status));
    return 128 + WTERMSIG(status);
  }
  return 1;
}

}  // namespace libvmm
