// The `socket:PATH` backend: a listening Unix stream socket at PATH, to attach to with e.g.
// `socat -,raw,echo=0 UNIX-CONNECT:PATH`.
//
// One client at a time: another one is told "busy" and closed. Client input goes to the sink;
// when the client hangs up, the socket listens for the next one (a client that only shuts down
// its sending side keeps getting output). Guest output goes to the client
// without ever blocking the caller: what the client does not take at once waits in a buffer of
// kOutputLimit bytes, and beyond that write() takes nothing, so that the device holds its
// output back until the client reads (CharBackend::write). Guest output while no client is
// connected, or after the client stopped reading for good, is dropped, as on a serial line
// nobody listens to. A console's named port tells its guest whether a client is connected
// (connected(), PORT_OPEN), and Linux then holds the port's output until one is.
//
// Threads: write() from any thread; everything else on the event loop thread.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class SocketBackend : public CharBackend {
 public:
  static constexpr size_t kOutputLimit = 64 * 1024;

  // Binds and listens at `path`, replacing a stale socket file there. Throws UserError if
  // `path` exists and is not a socket, a program is listening on it, or it is too long;
  // SystemError if the socket cannot be created there.
  explicit SocketBackend(std::string path);
  // Closes the connection and removes the socket file (if it is still ours). Destroy the
  // backend only after the event loop stopped running.
  ~SocketBackend() override;
  SocketBackend(const SocketBackend&) = delete;
  SocketBackend& operator=(const SocketBackend&) = delete;

  size_t write(std::span<const uint8_t> bytes) override;
  size_t write_room() override;
  void set_output_listener(std::function<void()> on_room) override;
  void start(EventLoop& loop, InputSink sink) override;
  void pause_input() override;
  void resume_input() override;
  std::string describe() const override { return "socket:" + path_; }

  // Any thread. Whether a client is connected, and the output waiting for it.
  bool client_connected() const;
  size_t queued_bytes() const;
  // A client is connected; the listener runs when one connects and when it leaves.
  bool connected() const override { return client_connected(); }
  void set_connection_listener(std::function<void()> on_change) override {
    on_connection_ = std::move(on_change);
  }

 private:
  void accept_clients();
  void flush_at_exit();            // what waits, to a client still reading (bounded in time)
  void output_failing(int error);  // under mutex_
  void on_client_event(uint32_t events);
  void read_client();
  // Sends what waits; the output listener to call, if refused output has room now.
  std::function<void()> flush_output();
  void disconnect(const char* why);
  // Watches the client for what is wanted now: input unless paused, output while some waits.
  void update_client_interest();

  const std::string path_;
  UniqueFd listener_;
  UniqueFd accept_retry_;  // timerfd: the listener watched again after a failed accept
  dev_t socket_dev_ = 0;   // the socket file we created, so as to remove only that one
  ino_t socket_ino_ = 0;

  // Shared with write(): the connection and the output waiting for it. client_ changes only
  // on the loop thread, which may read it without the lock.
  mutable std::mutex mutex_;
  UniqueFd client_;
  std::vector<uint8_t> output_;
  bool output_failed_ = false;  // the client stopped reading for good (EPIPE, ECONNRESET)
  bool flush_posted_ = false;   // an update_client_interest() is queued on the loop
  bool refused_ = false;        // a device waits for the output listener
  std::function<void()> on_room_;

  std::function<void()> on_connection_;  // set before start()

  // Loop thread only.
  EventLoop* loop_ = nullptr;
  InputSink sink_;
  bool paused_ = false;
  bool input_ended_ = false;    // the client shut down its sending side
  uint32_t client_events_ = 0;  // what the client fd is registered for
};

}  // namespace libvmm
