// The `pty` backend: a new pseudo-terminal whose other end (/dev/pts/N, logged when it opens)
// a user attaches to with `screen /dev/pts/N` or `minicom -D /dev/pts/N`.
//
// The terminal is in raw mode, so bytes pass unchanged both ways; the mode is set once, on an
// open of the terminal side that is closed again at once (a pty keeps its terminal side's
// settings while its other end stays open). Guest output written while nobody is attached
// waits in the pty's buffer for the next user; once that buffer is full, it is dropped and
// counted, with one warning. While a user is attached it goes at the user's pace, as on a
// terminal: what the pty does not take waits in a bounded queue, and past that the device
// holds it back (write() takes less, the output listener says when there is room), so nothing
// is lost while someone reads; if the user leaves, what waits is dropped and counted. Output
// never blocks the caller.
//
// Someone is connected while any program has the terminal side open, which the VMM's end tells
// by itself (it hangs up when the last one closes it): a virtIO console port on it is open to
// the guest exactly then, so what the guest writes there waits for a reader. An attach is
// noticed by inotify on /dev/pts/N (any open, then the VMM's end asked whether it still hangs
// up, so merged or stale events do no harm), or where inotify cannot watch it by asking every
// kAttachPoll; a leave by the hang-up, after the input typed before it was read. While nobody is
// attached the VMM's end is off the event loop (its hang-up would wake the loop forever).
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
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class OutputQueue;

class PtyBackend : public CharBackend {
 public:
  // Opens the pty and logs "<owner>: console on /dev/pts/N" at info level (`owner` is the flag,
  // e.g. "--console"). Throws SystemError if no pty can be had.
  explicit PtyBackend(std::string_view owner = "pty");
  // Destroy the backend only after the event loop stopped running: what waits for an attached
  // user is written for a second at most.
  ~PtyBackend() override;
  PtyBackend(const PtyBackend&) = delete;
  PtyBackend& operator=(const PtyBackend&) = delete;

  // The terminal to attach to: /dev/pts/N.
  const std::string& path() const { return path_; }

  // Takes everything: what the pty cannot hold is dropped, as said above.
  size_t write(std::span<const uint8_t> bytes) override;
  size_t write_room() override;
  void set_output_listener(std::function<void()> on_room) override;
  void start(EventLoop& loop, InputSink sink) override;
  void pause_input() override;
  void resume_input() override;
  std::string describe() const override { return "pty:" + path_; }
  std::optional<TerminalSize> terminal_size() const override;
  void set_resize_listener(std::function<void()> on_resize) override;
  bool connected() const override;
  void set_connection_listener(std::function<void()> on_change) override;

  static constexpr std::chrono::milliseconds kResizePoll{1000};
  static constexpr std::chrono::milliseconds kAttachPoll{1000};  // only without inotify

  // Guest output dropped: the pty's buffer was full while nobody was attached, or a user left
  // with output still queued for them.
  uint64_t dropped_bytes() const;

 private:
  void on_master_event(uint32_t events);
  void read_input();
  // Whether the VMM's end hangs up (nobody has the terminal open); nullopt if poll failed.
  std::optional<bool> hangs_up() const;
  void check_attach();
  void read_attach_events();
  void set_attached(bool attached);
  void update_watch();
  void check_size();
  // Calls `fn` on the loop every `period`, through `timer` (a timerfd it creates).
  void every(std::chrono::milliseconds period, UniqueFd& timer, std::function<void()> fn);

  UniqueFd master_;  // the VMM's end, non-blocking
  // A second descriptor of it, the attached user's output queue's (its own EPOLLOUT watch on
  // the loop, beside the master's EPOLLIN).
  UniqueFd writer_;
  std::unique_ptr<OutputQueue> output_;
  std::string path_;
  UniqueFd attach_watch_;  // inotify: the terminal's opens (none: attach_timer_ asks instead)
  std::atomic<bool> attached_{false};  // written on the loop, read anywhere

  mutable std::mutex write_mutex_;  // whole writes from concurrent callers stay whole
  uint64_t dropped_ = 0;
  bool drop_warned_ = false;

  // Loop thread only.
  EventLoop* loop_ = nullptr;
  InputSink sink_;
  bool paused_ = false;    // input flow control: the sink takes no more for now
  bool watching_ = false;  // the master is on the loop (exactly while attached)
  bool failed_ = false;    // reading failed for good
  std::function<void()> on_resize_;
  std::function<void()> on_connection_;
  UniqueFd resize_timer_;  // timerfd: every kResizePoll while there is a listener
  UniqueFd attach_timer_;  // timerfd: every kAttachPoll, where inotify cannot watch
  TerminalSize last_size_{};
};

}  // namespace libvmm
