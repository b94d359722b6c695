// The per-thread seccomp-bpf allow-lists (see include/libvmm/core/seccomp.hpp) and the SIGSYS
// handler of kill mode.
//
// How the lists were made: from the code each role runs after its filter is loaded (each entry
// says what needs it), checked with strace -f on the freestanding test guests and by running
// every guest and Linux test (tests/integration: serial, virtIO console, block sync and
// io_uring, ext4, net, rng, several VMs; x86_64 and AArch64) in kill mode, which stops at the
// first call a list lacks. A few entries cover paths those tests do not reach (a socket
// console's client, a stuck console reader, the AArch64 names of x86_64 calls). Everything a
// thread does before its filter (opening images, creating KVM objects, mapping RAM, starting
// threads) is not in them.
//
// Arguments are checked where it is cheap and means something: ioctl by request (and KVM
// ioctls by the descriptor of this vCPU or VM, ALSA's by the descriptors of the PCMs the alsa
// sound backend opened, all known when the filter is built), mmap and
// mprotect never with PROT_EXEC, tgkill only within this process. Not checked: which
// descriptor read/write/pwritev/... use (the event loop owns the disk images and sockets the
// guest drives; a filter cannot tell them from others), and paths (unlink at teardown).
#include "libvmm/core/seccomp.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/fs.h>  // BLKGETSIZE64
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/vfio.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>  // TCGETS, TCSETS*, FIONREAD
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/vhost_kernel_abi.hpp"

namespace libvmm {
namespace {

SeccompArg equals(unsigned index, uint64_t value) {
  return SeccompArg::equals(index, value);
}
SeccompArg without_bits(unsigned index, uint64_t bits) {
  return {index, bits, 0};
}

// What every thread may call: the C and C++ runtimes (memory, locks, time), logging, thread
// and process exit, and what kill mode's handler needs.
void add_common(std::vector<SeccompRule>& r) {
  r.push_back({"write", {}, "log lines (stderr), console output, eventfd signals"});
  r.push_back({"writev", {}, "stdio output from the C library"});
  r.push_back({"read", {}, "eventfd counters, console input"});
  r.push_back({"futex", {}, "mutexes, condition variables, std::call_once, thread join"});
  r.push_back({"sched_yield", {}, "spinning locks in the C++ runtime"});
  r.push_back({"mmap", {without_bits(2, PROT_EXEC)}, "malloc; never executable memory"});
  r.push_back({"mprotect", {without_bits(2, PROT_EXEC)}, "malloc arenas; never executable"});
  r.push_back({"munmap", {}, "free; guest RAM and rings at teardown"});
  r.push_back({"mremap", {}, "realloc of large blocks"});
  r.push_back({"madvise", {}, "free (MADV_DONTNEED), thread stacks released at thread exit"});
  r.push_back({"brk", {}, "malloc's main heap"});
  r.push_back({"clock_gettime", {}, "std::chrono clocks when the vDSO cannot answer"});
  r.push_back({"gettimeofday", {}, "time when the vDSO cannot answer"});
  r.push_back({"clock_nanosleep", {}, "short waits (output flush at teardown)"});
  r.push_back({"nanosleep", {}, "short waits"});
  r.push_back({"getpid", {}, "pthread_kill (the vCPU kick) names this process"});
  r.push_back({"gettid", {}, "pthread_kill"});
  r.push_back({"tgkill",
               {equals(0, static_cast<uint64_t>(::getpid()))},
               "pthread_kill: kicks a vCPU out of KVM_RUN; only threads of this process"});
  r.push_back({"rt_sigprocmask", {}, "pthread_kill and thread exit block signals briefly"});
  r.push_back({"rt_sigreturn", {}, "return from the vCPU kick signal's handler"});
  r.push_back({"rt_sigaction",
               {equals(0, SIGBUS)},
               "a SIGBUS outside guarded memory: the disposition from before the guards restored "
               "(core/sigbus_guard.hpp; vmm-device)"});
  r.push_back({"restart_syscall", {}, "a sleep interrupted by a signal resumes"});
  r.push_back({"exit", {}, "a thread ends"});
  r.push_back({"exit_group", {}, "the process ends (also kill mode's handler)"});
  r.push_back({"ioctl", {equals(1, TCGETS)}, "isatty() before each log line"});
  r.push_back({"ioctl", {equals(1, TCSETS)}, "the terminal restored (teardown, kill mode)"});
  r.push_back({"poll",
               {},
               "waiting for a console reader (bounded output flush); a device's I/O thread "
               "sleeping on its queue's notify ioeventfd and its wake eventfd"});
  r.push_back({"ppoll", {}, "poll on AArch64"});
  r.push_back({"sendto", {}, "console output to a socket client (send)"});
  r.push_back({"timerfd_settime",
               {},
               "virtio-snd: its pacing timer armed at PCM_START, disarmed at STOP and reset "
               "(a register write on a vCPU); vmm's --shutdown-timeout, armed by a stop "
               "signal"});
}

// Host block I/O: virtio-blk's requests, on its I/O thread or (iothread=off) the event loop.
void add_block_io(std::vector<SeccompRule>& r) {
  r.push_back({"pread64", {}, "virtio-blk io=sync"});
  r.push_back({"pwrite64", {}, "virtio-blk io=sync"});
  r.push_back({"preadv", {}, "virtio-blk io=sync: scatter-gather reads"});
  r.push_back({"pwritev", {}, "virtio-blk io=sync: scatter-gather writes"});
  r.push_back({"preadv2", {}, "virtio-blk"});
  r.push_back({"pwritev2", {}, "virtio-blk"});
  r.push_back({"fallocate", {}, "virtio-blk DISCARD and WRITE_ZEROES (punch or zero range)"});
  r.push_back({"fdatasync", {}, "virtio-blk FLUSH"});
  r.push_back({"fsync", {}, "virtio-blk FLUSH"});
  r.push_back({"io_uring_enter", {}, "virtio-blk io=io_uring: submit and reap"});
}

// SIGUSR1 has the disks' sizes read again, on the loop's thread: fstat (allowed there already)
// for an image file, this for a host block device.
void add_disk_rescan(std::vector<SeccompRule>& r) {
  r.push_back({"ioctl",
               {equals(1, BLKGETSIZE64)},
               "virtio-blk: a host block device's size read again (SIGUSR1)"});
}

}  // namespace

const char* to_string(SeccompMode mode) {
  switch (mode) {
    case SeccompMode::off:
      return "off";
    case SeccompMode::log:
      return "log";
    case SeccompMode::kill:
      return "kill";
  }
  return "?";
}

std::optional<SeccompMode> parse_seccomp_mode(std::string_view text) {
  for (SeccompMode mode : {SeccompMode::off, SeccompMode::log, SeccompMode::kill}) {
    if (text == to_string(mode)) return mode;
  }
  return std::nullopt;
}

const char* to_string(ThreadRole role) {
  switch (role) {
    case ThreadRole::vcpu:
      return "vCPU";
    case ThreadRole::event_loop:
      return "event loop";
    case ThreadRole::io:
      return "I/O thread";
    case ThreadRole::vhost_backend:
      return "vhost-user back-end";
  }
  return "?";
}

namespace {

// ALSA's PCM ioctls (type 'A', <sound/asound.h>), each pinned to one descriptor of a PCM the
// alsa backend opened before the filters loaded: set_params at PCM_PREPARE (a vCPU's queue
// notify), state/delay/start at STOP (what the PCM holds plays out), drop at reset and
// release, avail/delay/writei/readi as the event loop paces.
void add_sound(std::vector<SeccompRule>& r, const SeccompFds& fds) {
  for (int fd : fds.sound) {
    r.push_back({"ioctl",
                 {equals(0, static_cast<uint64_t>(fd)), {1, 0xff00, 0x4100}},
                 "virtio-snd alsa: PCM ioctls (type 'A') on the PCM's descriptor"});
  }
}

std::mutex g_sound_fds_mutex;
std::vector<int> g_sound_fds;

}  // namespace

void seccomp_allow_sound_ioctls(int fd) {
  std::lock_guard lock(g_sound_fds_mutex);
  if (std::find(g_sound_fds.begin(), g_sound_fds.end(), fd) == g_sound_fds.end()) {
    g_sound_fds.push_back(fd);
  }
}

void seccomp_forget_sound_ioctls(int fd) {
  std::lock_guard lock(g_sound_fds_mutex);
  std::erase(g_sound_fds, fd);
}

namespace {
std::vector<int> registered_sound_fds() {
  std::lock_guard lock(g_sound_fds_mutex);
  return g_sound_fds;
}
}  // namespace

std::vector<SeccompRule> seccomp_allow_list(ThreadRole role, const SeccompFds& fds) {
  std::vector<SeccompRule> r;
  add_common(r);
  if (role != ThreadRole::io) add_sound(r, fds);
  switch (role) {
    case ThreadRole::vcpu:
      r.push_back({"pwrite64", {}, "virtio-snd wav: the file's header written at a device reset"});
      r.push_back({"pread64",
                   {},
                   "VFIO: a passed-through device's BAR registers, read through its device "
                   "descriptor (pwrite64 above: writes, and its command register)"});
      if (fds.vcpu >= 0) {
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vcpu)), equals(1, KVM_RUN)},
                     "KVM_RUN on this vCPU"});
      }
      if (fds.vm >= 0) {
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_IRQ_LINE)},
                     "the UART's level-triggered interrupt, from a register write"});
      }
      if (fds.vm >= 0) {
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_SIGNAL_MSI)},
                     "virtio-pci: MSI-X messages pending when the guest unmasks a vector"});
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)),
                      // as src/vm/msi_routes.hpp numbers it (the C header's 8-byte size)
                      equals(1, _IOC(_IOC_WRITE, KVMIO, 0x6a, 2 * sizeof(__u32)))},
                     "PCI: an MSI-X vector's GSI route follows the message the guest programs"});
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_IOEVENTFD)},
                     "virtio-pci: queue notify ioeventfds follow a BAR the guest moves"});
        r.push_back(
            {"ioctl",
             {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_SET_USER_MEMORY_REGION)},
             "VFIO: a passed-through BAR's memory slots follow where the guest places "
             "it and its memory decoding"});
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_IRQFD)},
                     "VFIO: a passed-through MSI-X vector's irqfd deassigned while the guest "
                     "masks it, assigned again when it unmasks it"});
        r.push_back({"ioctl",
                     {equals(1, VFIO_DEVICE_SET_IRQS)},
                     "VFIO: a device with INTx and MSI-X switches VFIO between them as the "
                     "guest enables or disables MSI-X"});
      }
      r.push_back({"ioctl",
                   {equals(1, TUNSETOFFLOAD)},
                   "virtio-net: the TAP's offloads follow the features the driver accepted "
                   "(DRIVER_OK and reset are register writes)"});
      for (const unsigned long request :
           {vhost_kernel::kSetFeatures, vhost_kernel::kSetMemTable, vhost_kernel::kSetVringNum,
            vhost_kernel::kSetVringBase, vhost_kernel::kGetVringBase, vhost_kernel::kSetVringAddr,
            vhost_kernel::kSetVringKick, vhost_kernel::kSetVringCall,
            vhost_kernel::kSetVringBusyloopTimeout, vhost_kernel::kNetSetBackend}) {
        r.push_back({"ioctl",
                     {equals(1, request)},
                     "virtio-net vhost=on: DRIVER_OK, reset and QueueReady=0 are register writes "
                     "that start or stop its rings in the host kernel's vhost-net"});
      }
      r.push_back({"sendmsg",
                   {},
                   "vhost-user: a device's DRIVER_OK, reset and QueueReady=0 are register "
                   "writes that start or stop its queues in the back-end (with eventfds); a "
                   "config read after the back-end changed it asks for the new one"});
      r.push_back({"recvmsg", {}, "vhost-user: the back-end's replies to those"});
      r.push_back({"close", {}, "vhost-user: descriptors a back-end wrongly sent are closed"});
      r.push_back({"shutdown", {}, "vhost-user: a failed device's connection is ended"});
      break;
    case ThreadRole::event_loop:
      r.push_back({"epoll_wait", {}, "the loop waits for events"});
      r.push_back({"epoll_pwait", {}, "epoll_wait on AArch64"});
      r.push_back({"epoll_ctl", {}, "watching client sockets, output readiness, pausing input"});
      r.push_back({"readv", {}, "virtio-net: frames from the TAP"});
      r.push_back({"ioctl",
                   {equals(1, TUNSETQUEUE)},
                   "virtio-net num_queues>1: the TAP queues of the pairs the driver uses are "
                   "attached, the others detached (its control queue, served here)"});
      r.push_back({"sendmsg",
                   {},
                   "vhost-user net num_queues>1: the control queue, served here, enables or "
                   "disables the back-end's rings (SET_VRING_ENABLE); a back-end's config "
                   "change acknowledged on its own channel"});
      r.push_back({"recvmsg",
                   {},
                   "vhost-user: a back-end's own requests (CONFIG_CHANGE_MSG) on its channel"});
      r.push_back({"shutdown",
                   {},
                   "vhost-user: a device failing here (its control queue's SET_VRING_ENABLE) "
                   "ends its connection"});
      add_block_io(r);  // a disk with iothread=off does its I/O here
      add_disk_rescan(r);
      r.push_back({"getrandom", {}, "virtio-rng"});
      // vmm's --shutdown-timeout timer and virtio-snd's: timerfd_settime is allowed to every
      // thread (above). virtio-snd: its timer's expirations (read), the WAV file (pwrite64).
      r.push_back({"accept4", {}, "socket console: a client connects"});
      r.push_back({"recvfrom", {}, "socket console and passthrough IRQ sockets"});
      r.push_back({"close", {}, "a client leaves; descriptors closed at teardown"});
      r.push_back({"fcntl", {}, "console descriptors' O_NONBLOCK restored at teardown"});
      r.push_back({"newfstatat", {}, "teardown: a socket file is removed only if still ours"});
      r.push_back({"fstat", {}, "stdio buffers of the C library"});
      r.push_back({"unlink", {}, "teardown: socket files of consoles and IRQ sources"});
      r.push_back({"unlinkat", {}, "unlink on AArch64"});
      r.push_back({"ioctl", {equals(1, FIONREAD)}, "socket console: unread input at hang-up"});
      r.push_back({"ioctl",
                   {equals(1, TIOCGWINSZ)},
                   "virtio-console: the terminal's size read again at SIGWINCH (F_SIZE)"});
      r.push_back({"ioctl",
                   {equals(1, VFIO_DEVICE_SET_IRQS)},
                   "VFIO teardown: a passed-through device's MSI-X eventfds detached"});
      r.push_back({"ioctl",
                   {equals(1, VFIO_DEVICE_RESET)},
                   "VFIO teardown: a passed-through device reset before it returns to the host"});
      r.push_back({"ioctl", {equals(1, TCSETSW)}, "the terminal restored"});
      r.push_back({"ioctl", {equals(1, TCSETSF)}, "the terminal restored"});
      if (fds.vm >= 0) {
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_IRQ_LINE)},
                     "the UART's interrupt when console input arrives"});
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_IRQFD)},
                     "teardown: irqfds deassigned"});
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_SIGNAL_MSI)},
                     "virtio-pci: a queue's MSI-X vector"});
      }
      break;
    case ThreadRole::io:
      // The device's queue work: host I/O, status bytes and used entries in guest memory, then
      // the interrupt (a write to its irqfd, or KVM_IRQ_LINE where a line has none).
      add_block_io(r);
      if (fds.vm >= 0) {
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_IRQ_LINE)},
                     "the device's interrupt where its line has no irqfd"});
        r.push_back({"ioctl",
                     {equals(0, static_cast<uint64_t>(fds.vm)), equals(1, KVM_SIGNAL_MSI)},
                     "virtio-pci: the device's MSI-X vector"});
      }
      break;
    case ThreadRole::vhost_backend:
      // vmm-device's one loop thread, after its socket listens and its device is open.
      r.push_back({"epoll_wait", {}, "the loop waits for events"});
      r.push_back({"epoll_pwait", {}, "epoll_wait on AArch64"});
      r.push_back({"epoll_ctl", {}, "the connection, its kick eventfds"});
      r.push_back({"accept4", {}, "a front-end connects"});
      r.push_back({"recvmsg", {}, "vhost-user messages with their descriptors"});
      r.push_back({"recvfrom", {}, "recv(MSG_PEEK): an orderly hang-up told from a message"});
      r.push_back({"sendmsg", {}, "vhost-user replies"});
      r.push_back({"shutdown", {}, "a misbehaving front-end's connection ended"});
      r.push_back({"fstat", {}, "a memory region's descriptor is as large as the region"});
      r.push_back({"newfstatat", {}, "fstat through fstatat in the C library"});
      r.push_back({"fcntl", {}, "received descriptors duplicated and made non-blocking"});
      r.push_back({"close", {}, "descriptors of a replaced table or a closed connection"});
      r.push_back({"unlink", {}, "the listening socket removed at exit"});
      r.push_back({"unlinkat", {}, "unlink on AArch64"});
      add_block_io(r);  // a disk with iothread=off does its I/O here
      add_disk_rescan(r);
      // vmm-device --net: frames move on this thread (read and writev on the TAP, above).
      r.push_back({"ioctl",
                   {equals(1, TUNSETOFFLOAD)},
                   "vmm-device --net: the TAP's offloads follow the features the driver accepted"});
      r.push_back({"ioctl",
                   {equals(1, TUNSETQUEUE)},
                   "vmm-device --net num_queues>1: the TAP queues of the pairs the front-end "
                   "enables are attached, the others detached"});
      // vmm-device --console: its character backend on this thread (accept4, recvfrom above).
      r.push_back({"ioctl", {equals(1, FIONREAD)}, "socket console: unread input at hang-up"});
      r.push_back({"ioctl",
                   {equals(1, TIOCGWINSZ)},
                   "virtio-console: the terminal's size read again at SIGWINCH (F_SIZE)"});
      r.push_back({"ioctl", {equals(1, TCSETSW)}, "stdio console: the terminal restored"});
      r.push_back({"ioctl", {equals(1, TCSETSF)}, "stdio console: the terminal restored"});
      break;
  }
  if (fds.machine) {
    for (SeccompRule& rule : fds.machine(role, fds)) r.push_back(std::move(rule));
  }
  return r;
}

// ---- Kill mode: the SIGSYS handler ---------------------------------------------------------

namespace {

// Syscall names by number, resolved before any filter is loaded: the handler only reads them.
constexpr int kNames = 1024;
constexpr size_t kNameSize = 28;
char g_names[kNames][kNameSize];
uint32_t g_native_arch = 0;
std::atomic<void (*)() noexcept> g_kill_hook{nullptr};
thread_local char t_thread_name[32];

void resolve_names() {
  g_native_arch = seccomp_arch_native();
  for (int nr = 0; nr < kNames; ++nr) {
    char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    if (name == nullptr) continue;
    std::strncpy(g_names[nr], name, kNameSize - 1);
    std::free(name);
  }
}

// Async-signal-safe appends to a fixed buffer.
struct Line {
  char text[256];
  size_t size = 0;
  void add(const char* s) {
    while (*s != '\0' && size < sizeof text) text[size++] = *s++;
  }
  void add_number(uint64_t n) {
    char digits[24];
    size_t k = 0;
    do {
      digits[k++] = static_cast<char>('0' + n % 10);
      n /= 10;
    } while (n != 0);
    while (k > 0 && size < sizeof text) text[size++] = digits[--k];
  }
};

void on_sigsys(int /*signal*/, siginfo_t* info, void* /*context*/) {
  const int saved_errno = errno;
  Line line;
  line.add("vmm: seccomp: thread '");
  line.add(t_thread_name[0] != '\0' ? t_thread_name : "?");
  line.add("' made forbidden system call ");
  const int nr = info->si_syscall;
  if (info->si_arch != g_native_arch) {
    line.add("number ");
    line.add_number(static_cast<uint32_t>(nr));
    line.add(" of another architecture");
  } else {
    line.add(nr >= 0 && nr < kNames && g_names[nr][0] != '\0' ? g_names[nr] : "?");
    line.add(" (");
    line.add_number(static_cast<uint32_t>(nr));
    line.add(")");
  }
  line.add(
      "; stopping (a bug in vmm, or a guest exploiting one; --seccomp=log lets it "
      "through and logs it)\n");
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, line.text, line.size);
  if (auto hook = g_kill_hook.load()) hook();
  errno = saved_errno;
  _exit(kSeccompKillStatus);
}

void install_sigsys_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    resolve_names();
    struct sigaction sa {};
    sa.sa_sigaction = on_sigsys;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSYS, &sa, nullptr) != 0) throw_errno("seccomp: sigaction(SIGSYS)");
  });
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(undefined_behavior_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// libseccomp returns negative errnos.
void check(int rc, const char* what) {
  if (rc < 0) throw SystemError(fmt::format("seccomp: {}", what), -rc);
}

// Frees the filter context whatever happens.
struct FilterContext {
  scmp_filter_ctx ctx;
  explicit FilterContext(uint32_t action) : ctx(seccomp_init(action)) {
    if (ctx == nullptr) throw std::runtime_error("seccomp: seccomp_init failed");
  }
  ~FilterContext() { seccomp_release(ctx); }
  FilterContext(const FilterContext&) = delete;
  FilterContext& operator=(const FilterContext&) = delete;
};

}  // namespace

bool seccomp_kill_runs_as_log() {
  return kSanitized;
}

void set_seccomp_kill_hook(void (*hook)() noexcept) {
  g_kill_hook.store(hook);
}

void install_seccomp(ThreadRole role, SeccompMode mode, const SeccompFds& fds,
                     std::string_view thread_name) {
  if (mode == SeccompMode::off) return;
  if (mode == SeccompMode::kill && kSanitized) {
    static std::once_flag once;
    std::call_once(once, [] {
      log::debug("seccomp: sanitizer build, so kill mode only logs calls off the allow-lists");
    });
    mode = SeccompMode::log;
  }
  if (mode == SeccompMode::log && seccomp_api_get() < 3) {
    throw std::runtime_error(
        "seccomp: log mode needs SCMP_ACT_LOG (Linux 4.14 and libseccomp API level 3)");
  }
  if (mode == SeccompMode::kill) install_sigsys_handler();
  // The name goes to thread-local storage now, so the handler never has it allocated.
  const size_t length = std::min(thread_name.size(), sizeof t_thread_name - 1);
  std::memcpy(t_thread_name, thread_name.data(), length);
  t_thread_name[length] = '\0';

  // TRAP (SIGSYS to this thread) rather than KILL_PROCESS: the handler can say which thread
  // made which call, in one line, and restore the terminal. Calls of another architecture (x86
  // int 0x80, x32) get the same action.
  const uint32_t action = mode == SeccompMode::kill ? SCMP_ACT_TRAP : SCMP_ACT_LOG;
  FilterContext filter(action);
  check(seccomp_attr_set(filter.ctx, SCMP_FLTATR_ACT_BADARCH, action), "bad-architecture action");
  // A binary tree of system call numbers rather than a chain: KVM_RUN, on every exit, then
  // passes a few comparisons, not one per rule. Older libseccomp: the chain, which also works.
  seccomp_attr_set(filter.ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
  SeccompFds pinned = fds;
  for (int fd : registered_sound_fds()) pinned.sound.push_back(fd);
  for (const SeccompRule& rule : seccomp_allow_list(role, pinned)) {
    const std::string name(rule.syscall);
    const int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr == __NR_SCMP_ERROR) throw std::logic_error("seccomp: unknown system call " + name);
    if (nr < 0) continue;  // not on this architecture (libseccomp's pseudo number)
    std::vector<scmp_arg_cmp> cmps;
    for (const SeccompArg& a : rule.args) {
      cmps.push_back(SCMP_CMP(a.index, SCMP_CMP_MASKED_EQ, a.mask, a.value));
    }
    check(seccomp_rule_add_array(filter.ctx, SCMP_ACT_ALLOW, nr, static_cast<unsigned>(cmps.size()),
                                 cmps.data()),
          name.c_str());
  }
  check(seccomp_load(filter.ctx),
        "loading the filter (a kernel without seccomp filters? --seccomp=off runs without)");
  log::debug("seccomp: {} filter ({}) loaded on thread '{}'", to_string(role), to_string(mode),
             t_thread_name);
}

void seccomp_self_test(std::string_view thread_name) {
  const char* target = std::getenv("LIBVMM_SECCOMP_TEST_FORBIDDEN");
  if (target == nullptr || thread_name != target) return;
  const int fd = ::open("/", O_RDONLY | O_CLOEXEC);
  log::info("seccomp test: thread '{}' opened / ({})", thread_name,
            fd >= 0 ? "allowed" : std::strerror(errno));
  if (fd >= 0) ::close(fd);
}

}  // namespace libvmm
