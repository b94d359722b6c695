// The `pty` backend: a new pseudo-terminal whose other end (/dev/pts/N, logged when it opens)
// a user attaches to with `screen /dev/pts/N` or `minicom -D /dev/pts/N`.
//
// The terminal is in raw mode, so bytes pass unchanged both ways. The backend keeps the
// terminal side open itself, so the pty stays usable while nobody is attached (and the loop
// never sees it hang up); guest output written meanwhile waits in the pty's buffer for the next
// user. Output never blocks the caller: once that buffer is full, it is dropped and counted,
// with one warning.
//
// Someone is connected from the moment a program other than the VMM first opens the terminal
// (inotify on /dev/pts/N; its own hold is not seen): a virtIO console port on it opens to the
// guest when the first user attaches, so what the guest writes there waits for a reader. It
// stays open after that: a user leaving is not followed, since inotify merges two opens in a
// row that nobody read yet into one event, so counting opens and closes would take a user still
// attached for gone (the guest's writes then held for nobody). Where inotify cannot watch the
// terminal it counts as always connected.
//
// Its size is the pty's, which the user's terminal program sets (TIOCSWINSZ on its end). Nothing
// tells the VMM's end of a change, so with a resize listener (a console that tells the guest its
// size) the backend looks every kResizePoll on the event loop and calls the listener when the
// size changed.
//
// Threads: write() from any thread; everything else on the event loop thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class PtyBackend : public CharBackend {
 public:
  // Opens the pty and logs "<owner>: console on /dev/pts/N" at info level (`owner` is the flag,
  // e.g. "--console"). Throws SystemError if no pty can be had.
  explicit PtyBackend(std::string_view owner = "pty");
  // Destroy the backend only after the event loop stopped running.
  ~PtyBackend() override = default;
  PtyBackend(const PtyBackend&) = delete;
  PtyBackend& operator=(const PtyBackend&) = delete;

  // The terminal to attach to: /dev/pts/N.
  const std::string& path() const { return path_; }

  // Takes everything: what the pty cannot hold is dropped, as said above.
  size_t write(std::span<const uint8_t> bytes) override;
  void start(EventLoop& loop, InputSink sink) override;
  void pause_input() override;
  void resume_input() override;
  std::string describe() const override { return "pty:" + path_; }
  std::optional<TerminalSize> terminal_size() const override;
  void set_resize_listener(std::function<void()> on_resize) override;
  bool connected() const override;
  void set_connection_listener(std::function<void()> on_change) override;

  static constexpr std::chrono::milliseconds kResizePoll{1000};

  // Guest output dropped because the pty's buffer was full.
  uint64_t dropped_bytes() const;

 private:
  void read_once();
  void watch(bool on);
  void check_size();
  void read_attach_events();

  UniqueFd master_;  // the VMM's end, non-blocking
  UniqueFd held_terminal_;
  std::string path_;
  UniqueFd attach_watch_;  // inotify: the terminal's opens, until the first (none: not watched)
  std::atomic<bool> attached_{false};  // written on the loop, read anywhere

  mutable std::mutex write_mutex_;  // whole writes from concurrent callers stay whole
  uint64_t dropped_ = 0;
  bool drop_warned_ = false;

  // Loop thread only.
  EventLoop* loop_ = nullptr;
  InputSink sink_;
  bool reading_ = false;  // watching the master for input
  bool failed_ = false;   // reading failed for good
  std::function<void()> on_resize_;
  std::function<void()> on_connection_;
  UniqueFd resize_timer_;  // timerfd: every kResizePoll while there is a listener
  TerminalSize last_size_{};
};

}  // namespace libvmm
