// The `pty` backend: a new pseudo-terminal whose other end (/dev/pts/N, logged when it opens)
// a user attaches to with `screen /dev/pts/N` or `minicom -D /dev/pts/N`.
//
// The terminal is in raw mode, so bytes pass unchanged both ways. The backend keeps the
// terminal side open itself, so the pty stays usable while nobody is attached (and the loop
// never sees it hang up); guest output written meanwhile waits in the pty's buffer for the next
// user. Output never blocks the caller: once that buffer is full, it is dropped and counted,
// with one warning.
//
// Threads: write() from any thread; everything else on the event loop thread.
#pragma once

#include <cstdint>
#include <mutex>
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

  // Guest output dropped because the pty's buffer was full.
  uint64_t dropped_bytes() const;

 private:
  void read_once();
  void watch(bool on);

  UniqueFd master_;  // the VMM's end, non-blocking
  UniqueFd held_terminal_;
  std::string path_;

  mutable std::mutex write_mutex_;  // whole writes from concurrent callers stay whole
  uint64_t dropped_ = 0;
  bool drop_warned_ = false;

  // Loop thread only.
  EventLoop* loop_ = nullptr;
  InputSink sink_;
  bool reading_ = false;  // watching the master for input
  bool failed_ = false;   // reading failed for good
};

}  // namespace libvmm
