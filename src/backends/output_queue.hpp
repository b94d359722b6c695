// Private helper of the character backends: guest output to a host fd that never blocks the
// caller. What the fd does not take at once waits in a queue of at most `limit` bytes, drained
// by the event loop when the fd is writable (EPOLLOUT). write() takes only what fits and says how
// much; a caller that was refused is told on the loop thread once the queue is down to half its
// limit (the output listener), so devices can hold their output back instead of losing it.
//
// When the fd fails for good (EPIPE: the reader is gone; EIO: a hung-up terminal; a full disk),
// one warning is logged and all further output is taken and discarded.
//
// Threads: write(), room() and set_listener() from any thread; start() and the draining on the
// loop thread. The listener is called on the loop thread with no lock of the queue held, so it
// may call write(). The fd must be non-blocking (or never block, as a regular file).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace libvmm {

class EventLoop;

class OutputQueue {
 public:
  static constexpr size_t kDefaultLimit = 64 * 1024;

  // `fd` is not owned. `use_send`: the fd is a socket, written with send(MSG_NOSIGNAL).
  // `owner` names the backend in the warning, e.g. "stdio" or "file:/tmp/x".
  OutputQueue(int fd, bool use_send, std::string owner, size_t limit = kDefaultLimit);
  OutputQueue(const OutputQueue&) = delete;
  OutputQueue& operator=(const OutputQueue&) = delete;

  size_t write(std::span<const uint8_t> bytes);
  // What write() would take now; 0 also asks for the listener, as a refused write() does.
  size_t room();
  void set_listener(std::function<void()> on_room);

  // Loop thread: drains the queue on `loop` from now on.
  void start(EventLoop& loop);
  // After the loop stopped: writes what waits, for at most `budget`, giving up sooner once the
  // fd has taken nothing for `stall`. Called when the backend is destroyed.
  void flush(std::chrono::milliseconds budget, std::chrono::milliseconds stall);

  size_t queued() const;
  bool failed() const;
  // Loop thread: the reader left for good (a pty's user detached): what waits is dropped, a
  // failure forgotten (the next reader starts afresh), `dropped` told how many bytes went (if
  // any), and then a refused caller told it may write again.
  void discard(const std::function<void(size_t)>& dropped);
  // A new reader came (a pty's user attached): a failure forgotten. A write racing the last
  // reader's leaving may have failed after discard() (EIO on a pty nobody has open).
  void clear_failure();

 private:
  // Under mutex_: writes from the queue until it is empty or the fd is full.
  void write_queued();
  // Under mutex_: one write to the fd; bytes written, 0 if full, marks failed_ on an error.
  size_t write_some(std::span<const uint8_t> bytes);
  void request_watch();  // under mutex_: arms EPOLLOUT from the loop thread
  void on_writable();    // loop thread

  const int fd_;
  const bool use_send_;
  const std::string owner_;
  const size_t limit_;

  mutable std::mutex mutex_;
  std::vector<uint8_t> queue_;
  size_t head_ = 0;  // bytes of queue_ already written
  bool failed_ = false;
  bool refused_ = false;       // a caller waits for the listener
  bool watch_posted_ = false;  // an arm task is queued on the loop
  EventLoop* loop_ = nullptr;
  std::function<void()> listener_;

  // Loop thread only.
  bool watching_ = false;  // fd_ is registered for EPOLLOUT
};

}  // namespace libvmm
