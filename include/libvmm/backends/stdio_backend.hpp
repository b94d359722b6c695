// The `stdio` backend: guest output to stdout, host input from stdin.
//
// When stdin is a terminal it is put in raw mode (as QEMU does: the guest echoes, and emits
// "\r\n" itself), and the Ctrl-A escapes of EscapeFilter apply; Ctrl-A x calls `on_quit`,
// Ctrl-A s the set_on_shutdown() callback.
// Piped or redirected stdin passes through unchanged. At end of input the backend stops
// reading and the VM keeps running.
//
// Guest output never blocks the caller: stdout is written through its own non-blocking file
// description (reopened, so that stdin, stderr and the parent shell keep theirs), and what it
// does not take at once waits in a queue of kOutputLimit bytes drained by the event loop; beyond
// that write() takes nothing and the device holds its output back (CharBackend::write). When
// stdout is gone for good (a closed pipe, a hung-up terminal), output is discarded with one
// warning.
#pragma once

#include <termios.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/backends/escape_filter.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

// Puts a terminal in raw mode and restores its saved settings when destroyed. Only one can be
// live at a time (the constructor throws UserError otherwise).
//
// A process that dies without running destructors must still give the user a usable shell:
// the settings are also restored at exit(), and programs call restore_saved() from their
// handlers for fatal signals (SIGTERM, SIGHUP, SIGSEGV, SIGABRT, ...) before re-raising them.
class RawTerminal {
 public:
  explicit RawTerminal(int fd);  // throws SystemError if `fd` is not a terminal
  ~RawTerminal();
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

  // Async-signal-safe. Restores the terminal of the live RawTerminal, if any; at most once.
  static void restore_saved() noexcept;
};

class OutputQueue;

class StdioBackend : public CharBackend {
 public:
  static constexpr size_t kOutputLimit = 64 * 1024;

  // `in_fd`/`out_fd` are stdin/stdout by default (tests pass pipes or a pty); neither is closed.
  // Throws UserError if another StdioBackend already reads `in_fd`.
  explicit StdioBackend(std::function<void()> on_quit, int in_fd = STDIN_FILENO,
                        int out_fd = STDOUT_FILENO, size_t output_limit = kOutputLimit);
  // Writes what output still waits (for a bounded time), restores the terminal and the fds'
  // flags. Destroy it only after `loop` stopped running.
  ~StdioBackend() override;
  StdioBackend(const StdioBackend&) = delete;
  StdioBackend& operator=(const StdioBackend&) = delete;

  size_t write(std::span<const uint8_t> bytes) override;
  size_t write_room() override;
  void set_output_listener(std::function<void()> on_room) override;
  // Output waiting for stdout to take it.
  size_t queued_bytes() const;
  // What Ctrl-A s does (ask the guest to shut down); before start(). Without it the key does
  // nothing.
  void set_on_shutdown(std::function<void()> on_shutdown) { on_shutdown_ = std::move(on_shutdown); }
  // Enters raw mode if stdin is a terminal, watches stdin and drains output on `loop`.
  void start(EventLoop& loop, InputSink sink) override;
  // A terminal keeps being read while paused, so that Ctrl-A x still quits when the guest
  // reads no input: what is typed for the guest meanwhile waits (up to kHeldLimit bytes; more
  // is dropped with a warning) and is delivered on resume. Other input simply stops.
  void pause_input() override;
  void resume_input() override;

  static constexpr size_t kHeldLimit = 4096;
  std::string describe() const override { return "stdio"; }

  // The terminal stdout is on (else stdin's): TIOCGWINSZ; nullopt when neither is one.
  std::optional<TerminalSize> terminal_size() const override;
  void set_resize_listener(std::function<void()> on_resize) override;
  // A program that watches SIGWINCH (the terminal was resized) calls this, from any thread:
  // every started StdioBackend with a resize listener runs it on its loop. The library installs
  // no signal handler of its own: vmm and vmm-device read SIGWINCH from their signalfd.
  static void terminal_resized();

 private:
  enum class InputState { stopped, reading, paused };

  void open_reader();
  void open_writer();
  void watch();  // (re)arms reading: epoll interest, or a posted read for unpollable input
  void schedule_read();
  void read_once();
  void deliver(std::span<const uint8_t> bytes);
  void to_sink(std::span<const uint8_t> bytes);  // to the guest, or held while paused
  bool watching() const;                         // reader_ is registered with the loop
  void stop_reading();

  const std::function<void()> on_quit_;
  std::function<void()> on_shutdown_;
  const int in_fd_;
  const int out_fd_;

  // Output side.
  UniqueFd own_writer_;         // stdout reopened as its own non-blocking file description
  int writer_ = -1;             // own_writer_ or out_fd_
  bool is_socket_ = false;      // out_fd_ is a socket, written with send(MSG_DONTWAIT)
  int restore_out_flags_ = -1;  // out_fd_'s flags to restore, when O_NONBLOCK was set on it
  std::unique_ptr<OutputQueue> output_;

  // Input side: touched only on the loop thread (and in start(), before reading begins).
  EventLoop* loop_ = nullptr;
  InputSink sink_;
  InputState state_ = InputState::stopped;
  bool interactive_ = false;  // stdin is a terminal: raw mode and escapes
  bool pollable_ = true;      // false for regular files and /dev/null, which epoll refuses
  bool read_posted_ = false;  // unpollable input: a read_once() is queued on the loop
  UniqueFd own_reader_;       // stdin reopened as its own non-blocking file description
  int reader_ = -1;           // own_reader_ or in_fd_
  int restore_flags_ = -1;    // in_fd_'s flags to restore, when O_NONBLOCK was set on it
  std::optional<RawTerminal> raw_;
  EscapeFilter escapes_;
  std::vector<uint8_t> held_;  // typed for the guest while paused (interactive only)
  bool dropped_warned_ = false;

  std::function<void()> on_resize_;   // set before start()
  EventLoop* resize_loop_ = nullptr;  // under the backends' registry lock: start() to teardown
};

}  // namespace libvmm
