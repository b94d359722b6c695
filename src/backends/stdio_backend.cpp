#include "libvmm/backends/stdio_backend.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string_view>
#include <vector>

#include "fd_io.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"
#include "output_queue.hpp"

namespace libvmm {
namespace {

// How long Ctrl-A h's help may wait for room on stderr.
constexpr int kHelpWriteTimeoutMs = 200;

// ---- Raw terminal state, reachable from signal handlers (hence atomics and plain data). ----

static_assert(std::atomic<int>::is_always_lock_free);
std::atomic<bool> g_raw_claimed{false};  // a RawTerminal is live
std::atomic<int> g_raw_fd{-1};           // its terminal, published once g_saved is complete
termios g_saved{};

void restore_at_exit() {
  RawTerminal::restore_saved();
}

// ---- Which input fds a StdioBackend reads: two readers would split the input between them. ----
// The live backends, for terminal_resized(), are kept under the same lock.

std::mutex g_inputs_mutex;
std::set<int> g_claimed_inputs;
std::set<StdioBackend*> g_live_backends;

void claim_input(int fd, StdioBackend* backend) {
  std::lock_guard lock(g_inputs_mutex);
  if (!g_claimed_inputs.insert(fd).second) {
    throw UserError(fd == STDIN_FILENO
                        ? std::string("stdin is already used by another stdio backend")
                        : fmt::format("fd {} is already used by another stdio backend", fd));
  }
  g_live_backends.insert(backend);
}

void release_input(int fd, StdioBackend* backend) {
  std::lock_guard lock(g_inputs_mutex);
  g_claimed_inputs.erase(fd);
  g_live_backends.erase(backend);
}

}  // namespace

RawTerminal::RawTerminal(int fd) {
  termios saved{};
  if (::tcgetattr(fd, &saved) != 0) throw_errno("stdio: tcgetattr");
  if (g_raw_claimed.exchange(true)) throw UserError("stdio: the terminal is already in raw mode");
  g_saved = saved;
  g_raw_fd.store(fd);
  static std::once_flag at_exit_once;
  std::call_once(at_exit_once, [] { std::atexit(restore_at_exit); });

  // Fully raw, as QEMU does: no echo, no signals from Ctrl-C, no output processing.
  termios raw = saved;
  ::cfmakeraw(&raw);
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  if (::tcsetattr(fd, TCSANOW, &raw) != 0) {
    const int err = errno;
    restore_saved();
    g_raw_claimed.store(false);
    throw SystemError("stdio: tcsetattr", err);
  }
}

RawTerminal::~RawTerminal() {
  restore_saved();
  g_raw_claimed.store(false);
}

void RawTerminal::restore_saved() noexcept {
  // Restored before the fd is cleared: a signal handler calling this between the two (vmm's
  // stop signals while it ends) restores it again rather than finding nothing to do.
  int fd = g_raw_fd.load();
  if (fd < 0) return;
  ::tcsetattr(fd, TCSANOW, &g_saved);
  g_raw_fd.compare_exchange_strong(fd, -1);
}

StdioBackend::StdioBackend(std::function<void()> on_quit, int in_fd, int out_fd,
                           size_t output_limit)
    : on_quit_(std::move(on_quit)), in_fd_(in_fd), out_fd_(out_fd) {
  claim_input(in_fd_, this);
  log::open_stderr();  // Ctrl-A h's help and the log lines must not hold the loop either
  open_writer();
  output_ = std::make_unique<OutputQueue>(writer_, is_socket_, "stdio", output_limit);
}

StdioBackend::~StdioBackend() {
  output_->flush(std::chrono::milliseconds(1000), std::chrono::milliseconds(200));
  raw_.reset();
  if (restore_flags_ >= 0) ::fcntl(in_fd_, F_SETFL, restore_flags_);
  if (restore_out_flags_ >= 0) ::fcntl(out_fd_, F_SETFL, restore_out_flags_);
  release_input(in_fd_, this);
}

// Writing needs a non-blocking fd, so that a reader who stops reading never holds a vCPU or the
// loop in write(). As for stdin, stdout gets its own open file description where it can.
void StdioBackend::open_writer() {
  writer_ = out_fd_;
  struct stat st {};
  if (::fstat(out_fd_, &st) != 0) return;  // writes will fail and say so, once
  if (S_ISREG(st.st_mode)) return;         // never blocks; reopening would lose the offset
  if (S_ISSOCK(st.st_mode)) {              // send(MSG_DONTWAIT) does not wait
    is_socket_ = true;
    return;
  }
  const std::string path = fmt::format("/proc/self/fd/{}", out_fd_);
  own_writer_.reset(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (own_writer_) {
    writer_ = own_writer_.get();
    return;
  }
  const int flags = ::fcntl(out_fd_, F_GETFL);
  if (flags < 0 || (flags & O_NONBLOCK) != 0) return;
  if (::fcntl(out_fd_, F_SETFL, flags | O_NONBLOCK) == 0) restore_out_flags_ = flags;
}

size_t StdioBackend::write(std::span<const uint8_t> bytes) {
  return output_->write(bytes);
}

size_t StdioBackend::write_room() {
  return output_->room();
}

void StdioBackend::set_output_listener(std::function<void()> on_room) {
  output_->set_listener(std::move(on_room));
}

size_t StdioBackend::queued_bytes() const {
  return output_->queued();
}

std::optional<CharBackend::TerminalSize> StdioBackend::terminal_size() const {
  for (int fd : {out_fd_, in_fd_}) {
    winsize size{};
    if (::ioctl(fd, TIOCGWINSZ, &size) == 0) return TerminalSize{size.ws_col, size.ws_row};
  }
  return std::nullopt;
}

void StdioBackend::set_resize_listener(std::function<void()> on_resize) {
  on_resize_ = std::move(on_resize);
}

void StdioBackend::terminal_resized() {
  std::lock_guard lock(g_inputs_mutex);
  for (StdioBackend* backend : g_live_backends) {
    if (backend->resize_loop_ == nullptr) continue;
    // The backend outlives its loop's running (see the destructor), so the task may hold it.
    backend->resize_loop_->post([backend] {
      if (backend->on_resize_) backend->on_resize_();  // its owner may have let go meanwhile
    });
  }
}

void StdioBackend::start(EventLoop& loop, InputSink sink) {
  loop_ = &loop;
  if (on_resize_) {
    std::lock_guard lock(g_inputs_mutex);
    resize_loop_ = &loop;
  }
  sink_ = std::move(sink);
  output_->start(loop);
  interactive_ = ::isatty(in_fd_) == 1;
  open_reader();
  if (reader_ < 0) return;
  if (interactive_) raw_.emplace(in_fd_);
  held_.reserve(kHeldLimit);
  state_ = InputState::reading;
  watch();
}

// Reading needs a non-blocking fd, since a spurious wakeup must not block the loop thread.
// stdin is reopened as its own open file description where it can be, because O_NONBLOCK on
// the shared one would also apply to stdout and stderr on a terminal, and to the parent shell.
void StdioBackend::open_reader() {
  struct stat st {};
  if (::fstat(in_fd_, &st) != 0) {
    log::debug("stdio: no input ({})", std::strerror(errno));
    return;
  }
  if (S_ISREG(st.st_mode)) {  // reads never block; reopening would lose the file offset
    pollable_ = false;
    reader_ = in_fd_;
    return;
  }
  const std::string path = fmt::format("/proc/self/fd/{}", in_fd_);
  own_reader_.reset(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (own_reader_) {
    reader_ = own_reader_.get();
    return;
  }
  const int flags = ::fcntl(in_fd_, F_GETFL);  // sockets cannot be reopened
  if (flags < 0 || ::fcntl(in_fd_, F_SETFL, flags | O_NONBLOCK) < 0) {
    log::warn("stdio: cannot read stdin: {}", std::strerror(errno));
    return;
  }
  if ((flags & O_NONBLOCK) == 0) restore_flags_ = flags;
  reader_ = in_fd_;
}

void StdioBackend::watch() {
  if (pollable_) {
    try {
      loop_->add(reader_, EPOLLIN, [this](uint32_t /*events*/) { read_once(); });
      return;
    } catch (const SystemError& e) {
      if (e.code() != EPERM) throw;
      pollable_ = false;  // e.g. /dev/null: always readable, so read it from posted tasks
    }
  }
  schedule_read();
}

void StdioBackend::schedule_read() {
  if (read_posted_) return;  // one chain of posted reads, however often input pauses and resumes
  read_posted_ = true;
  loop_->post([this] {
    read_posted_ = false;
    read_once();
  });
}

void StdioBackend::read_once() {
  // A paused terminal is still read (for the escape keys; deliver() holds the rest).
  if (state_ != InputState::reading && !(state_ == InputState::paused && interactive_)) return;
  std::array<uint8_t, kCharReadChunk> buffer;
  const ssize_t n = ::read(reader_, buffer.data(), buffer.size());
  if (n > 0) {
    deliver(std::span(buffer.data(), static_cast<size_t>(n)));
  } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    // End of input, or a hung-up terminal (EIO): the VM keeps running without input.
    if (n < 0 && errno != EIO) log::warn("stdio: reading stdin failed: {}", std::strerror(errno));
    stop_reading();
    return;
  }
  if (!pollable_ && state_ != InputState::stopped) schedule_read();
}

void StdioBackend::to_sink(std::span<const uint8_t> bytes) {
  if (state_ != InputState::paused) {
    sink_(bytes);
    return;
  }
  const size_t room = kHeldLimit - std::min(kHeldLimit, held_.size());
  held_.insert(held_.end(), bytes.begin(), bytes.begin() + std::min(room, bytes.size()));
  if (bytes.size() > room && !dropped_warned_) {
    dropped_warned_ = true;
    log::warn(
        "stdio: the guest is not reading its console input; dropping what is typed beyond "
        "{} bytes (Ctrl-A x still quits)",
        kHeldLimit);
  }
}

void StdioBackend::deliver(std::span<const uint8_t> bytes) {
  if (!interactive_) {
    sink_(bytes);
    return;
  }
  std::vector<uint8_t> to_guest;
  to_guest.reserve(bytes.size());
  for (const uint8_t byte : bytes) {
    switch (escapes_.feed(byte, to_guest)) {
      case EscapeFilter::Command::none:
        break;
      case EscapeFilter::Command::help: {
        // On the event loop: a stderr nobody reads (a stopped terminal, a full pipe) gets a
        // moment, then the help is dropped rather than the loop (and the quit key) held.
        const std::string_view help = EscapeFilter::help_text();
        write_all(log::stderr_fd(),
                  std::span(reinterpret_cast<const uint8_t*>(help.data()), help.size()),
                  kHelpWriteTimeoutMs);
        break;
      }
      case EscapeFilter::Command::shutdown:
        if (on_shutdown_) on_shutdown_();
        break;
      case EscapeFilter::Command::quit:
        if (!on_quit_) break;
        if (!to_guest.empty()) to_sink(to_guest);
        stop_reading();
        on_quit_();
        return;
    }
  }
  if (!to_guest.empty()) to_sink(to_guest);
}

bool StdioBackend::watching() const {
  return pollable_ &&
         (state_ == InputState::reading || (state_ == InputState::paused && interactive_));
}

void StdioBackend::stop_reading() {
  if (watching()) loop_->remove(reader_);
  state_ = InputState::stopped;
}

void StdioBackend::pause_input() {
  if (state_ != InputState::reading) return;
  if (interactive_) {  // keep reading for the escape keys
    state_ = InputState::paused;
    return;
  }
  if (pollable_) loop_->remove(reader_);
  state_ = InputState::paused;
}

void StdioBackend::resume_input() {
  if (state_ != InputState::paused) return;
  state_ = InputState::reading;
  if (!interactive_) watch();
  dropped_warned_ = false;
  if (!held_.empty()) {
    std::vector<uint8_t> held;
    held.swap(held_);
    sink_(held);  // the sink may pause us again: the rest is held again
  }
}

}  // namespace libvmm
