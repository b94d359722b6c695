#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "../../src/backends/fd_io.hpp"
#include "libvmm/backends/stdio_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"
#include "unit/support/char_io.hpp"
#include "unit/support/child_process.hpp"
#include "unit/support/loop_thread.hpp"

namespace libvmm {
namespace backends_stdio_test {

using namespace std::chrono_literals;
using test::bytes_of;
using test::cpu_seconds;
using test::LoopThread;
using test::Received;

void write_fd(int fd, std::string_view s) {
  ASSERT_EQ(::write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size()));
}

struct Pipe {
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
  }
  UniqueFd read_end, write_end;
};

TEST(StdioBackendTest, WritesEverythingToANonBlockingPipe) {
  Pipe in, out;
  ::fcntl(out.write_end.get(), F_SETFL, O_NONBLOCK);  // as stdout is when it shares stdin's flags
  StdioBackend backend(nullptr, in.read_end.get(), out.write_end.get());
  LoopThread io;
  io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
  const std::string expected = test::numbered_lines(200'000);  // much more than the pipe holds
  test::OutputFeeder feeder(backend, expected);
  std::future<std::string> got = std::async(
      std::launch::async, [&] { return test::read_fd(out.read_end.get(), expected.size()); });
  feeder.offer();
  EXPECT_TRUE(feeder.wait_all_taken());
  EXPECT_TRUE(got.get() == expected);
}

// stdout piped to a reader who does not read (`vmm | less`, suspended): guest output neither
// blocks the caller nor the loop, stays within the queue's limit, and arrives whole and in order
// once the reader reads. stdout's own file description stays blocking.
TEST(StdioBackendTest, PipeNobodyReadsNeverBlocks) {
  Pipe in, out;
  const int flags_before = ::fcntl(out.write_end.get(), F_GETFL);
  StdioBackend backend(nullptr, in.read_end.get(), out.write_end.get());
  LoopThread io;
  io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
  const std::string data = test::numbered_lines(1 << 20);
  test::OutputFeeder feeder(backend, data);

  auto first = std::async(std::launch::async, [&] { return feeder.offer(); });
  const bool prompt = first.wait_for(5s) == std::future_status::ready;
  std::future<std::string> got;
  if (!prompt) {
    got = std::async(std::launch::async,
                     [&] { return test::read_fd(out.read_end.get(), data.size()); });
  }
  ASSERT_TRUE(prompt) << "write() blocked on a pipe nobody reads";
  EXPECT_LT(first.get(), data.size());
  EXPECT_LE(backend.queued_bytes(), StdioBackend::kOutputLimit);
  EXPECT_EQ(::fcntl(out.write_end.get(), F_GETFL), flags_before);
  auto loop_alive = std::async(std::launch::async, [&] { io.call([] {}); });
  EXPECT_EQ(loop_alive.wait_for(5s), std::future_status::ready) << "the event loop is stuck";

  got = std::async(std::launch::async,
                   [&] { return test::read_fd(out.read_end.get(), data.size()); });
  EXPECT_TRUE(feeder.wait_all_taken());
  EXPECT_TRUE(got.get() == data) << "output lost or reordered";
}

// Output still queued when the backend goes away is written then, for a bounded time: all of
// it to a reader who reads (`vmm | tail`), and the rest given up on soon when nobody reads.
TEST(StdioBackendTest, DestructionFlushesQueuedOutputWithinBounds) {
  Pipe in, out;
  const std::string data = test::numbered_lines(300'000);
  const auto pipe_size = static_cast<size_t>(::fcntl(out.read_end.get(), F_GETPIPE_SZ));
  const size_t kept = pipe_size + StdioBackend::kOutputLimit;  // the pipe, then the queue
  std::future<std::string> got;
  {
    StdioBackend backend(nullptr, in.read_end.get(), out.write_end.get());
    EXPECT_LT(backend.write(bytes_of(data)), data.size());  // without a loop nothing drains
    EXPECT_EQ(backend.queued_bytes(), StdioBackend::kOutputLimit);
    got = std::async(std::launch::async, [&] {
      return test::read_fd(out.read_end.get(), kept + 1, 1s);  // and no byte more
    });
  }
  const std::string output = got.get();
  EXPECT_EQ(output.size(), kept);
  EXPECT_TRUE(output == data.substr(0, output.size()));

  Pipe in2, stuck;
  const auto start = std::chrono::steady_clock::now();
  {
    StdioBackend backend(nullptr, in2.read_end.get(), stuck.write_end.get());
    backend.write(bytes_of(data));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
}

// The reader closed the pipe: output is discarded (one warning), and writes never wait.
TEST(StdioBackendTest, ClosedPipeDiscardsOutput) {
  ::signal(SIGPIPE, SIG_IGN);  // as programs do (vmm does): EPIPE is reported, not fatal
  Pipe in, out;
  out.read_end.reset();
  StdioBackend backend(nullptr, in.read_end.get(), out.write_end.get());
  const std::string data(300'000, 'x');
  EXPECT_EQ(backend.write(bytes_of(data)), data.size());
  EXPECT_EQ(backend.write(bytes_of(data)), data.size());
  EXPECT_EQ(backend.queued_bytes(), 0u);
}

TEST(StdioBackendTest, PipedInputPassesThroughUnchanged) {
  Pipe in, out;
  bool quit = false;
  StdioBackend backend([&] { quit = true; }, in.read_end.get(), out.write_end.get());
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  const std::string input = "echo hi\n\x01x\x01\x01";
  write_fd(in.write_end.get(), input);
  EXPECT_EQ(received.wait_for(input.size()), input);
  EXPECT_FALSE(quit);  // no escapes on a pipe
}

TEST(StdioBackendTest, EndOfInputStopsReadingAndKeepsRunning) {
  Pipe in, out;
  StdioBackend backend(nullptr, in.read_end.get(), out.write_end.get());
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  write_fd(in.write_end.get(), "last words");
  in.write_end.reset();
  EXPECT_EQ(received.wait_for(10), "last words");

  // A loop still watching the hung-up pipe would spin on it.
  const double before = cpu_seconds();
  std::this_thread::sleep_for(300ms);
  EXPECT_LT(cpu_seconds() - before, 0.15);
  bool alive = false;
  io.call([&] { alive = true; });
  EXPECT_TRUE(alive);
  EXPECT_EQ(backend.write(bytes_of("output still works")), 18u);
}

TEST(StdioBackendTest, PauseAndResumeInput) {
  Pipe in, out;
  StdioBackend backend(nullptr, in.read_end.get(), out.write_end.get());
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  write_fd(in.write_end.get(), "abc");
  EXPECT_EQ(received.wait_for(3), "abc");

  io.call([&] { backend.pause_input(); });
  write_fd(in.write_end.get(), "def");
  std::this_thread::sleep_for(100ms);
  io.call([] {});
  EXPECT_EQ(received.now(), "abc");

  io.call([&] { backend.resume_input(); });
  EXPECT_EQ(received.wait_for(6), "abcdef");
}

TEST(StdioBackendTest, ReadsARegularFileWithoutEpoll) {
  const auto path =
      std::filesystem::temp_directory_path() / ("libvmm-stdio-input-" + std::to_string(::getpid()));
  std::string input;
  for (int i = 0; i < 10'000; ++i) input.push_back(static_cast<char>(i % 251));
  { std::ofstream(path, std::ios::binary) << input; }
  UniqueFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  std::filesystem::remove(path);
  ASSERT_TRUE(file);
  Pipe out;

  StdioBackend backend(nullptr, file.get(), out.write_end.get());
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  EXPECT_EQ(received.wait_for(input.size()), input);
}

TEST(StdioBackendTest, DevNullIsEmptyInput) {
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  Pipe out;
  StdioBackend backend(nullptr, null.get(), out.write_end.get());
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  io.call([] {});
  EXPECT_EQ(received.now(), "");
}

TEST(StdioBackendTest, LeavesPipeFlagsAsTheyWere) {
  Pipe in, out;
  const int before = ::fcntl(in.read_end.get(), F_GETFL);
  {
    StdioBackend backend(nullptr, in.read_end.get(), out.write_end.get());
    LoopThread io;
    io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
  }
  EXPECT_EQ(::fcntl(in.read_end.get(), F_GETFL), before);
}

class StdioTerminalTest : public testing::Test {
 protected:
  void SetUp() override {
    int master = -1, slave = -1;
    ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
    master_.reset(master);
    slave_.reset(slave);
  }
  termios attributes() const {
    termios t{};
    ::tcgetattr(slave_.get(), &t);
    return t;
  }

  UniqueFd master_, slave_;
};

// A console on the terminal tells the guest its size (virtIO F_SIZE): the backend reads it, and
// terminal_resized() (vmm's SIGWINCH) has the listener run on the backend's loop.
TEST_F(StdioTerminalTest, TheTerminalsSizeAndItsChanges) {
  winsize size{};
  size.ws_col = 100;
  size.ws_row = 30;
  ASSERT_EQ(::ioctl(master_.get(), TIOCSWINSZ, &size), 0);
  StdioBackend backend(nullptr, slave_.get(), slave_.get());
  EXPECT_EQ(backend.terminal_size(), (CharBackend::TerminalSize{100, 30}));
  std::promise<std::thread::id> told;
  int times = 0;
  backend.set_resize_listener([&] {
    if (++times == 1) told.set_value(std::this_thread::get_id());
  });
  StdioBackend::terminal_resized();  // before start(): there is no loop to tell it on
  LoopThread io;
  io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
  size.ws_col = 132;
  size.ws_row = 43;
  ASSERT_EQ(::ioctl(master_.get(), TIOCSWINSZ, &size), 0);
  StdioBackend::terminal_resized();
  auto on = told.get_future();
  ASSERT_EQ(on.wait_for(5s), std::future_status::ready);
  std::thread::id loop_thread;
  io.call([&] { loop_thread = std::this_thread::get_id(); });
  EXPECT_EQ(on.get(), loop_thread) << "on the loop";
  EXPECT_EQ(backend.terminal_size(), (CharBackend::TerminalSize{132, 43}));
  io.call([] {});
  EXPECT_EQ(times, 1);
}

// A SIGWINCH's task still queued when the console let go of the backend does nothing.
TEST_F(StdioTerminalTest, AResizeAfterTheListenerWentAwayIsIgnored) {
  StdioBackend backend(nullptr, slave_.get(), slave_.get());
  int told = 0;
  backend.set_resize_listener([&] { ++told; });
  LoopThread io;
  io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
  std::promise<void> go;
  io.loop.post([&] { go.get_future().wait(); });  // holds the loop
  StdioBackend::terminal_resized();
  backend.set_resize_listener(nullptr);
  go.set_value();
  io.call([] {});
  EXPECT_EQ(told, 0);
}

TEST(StdioBackendTest, PipesHaveNoTerminalSize) {
  Pipe in, out;
  StdioBackend backend(nullptr, in.read_end.get(), out.write_end.get());
  EXPECT_EQ(backend.terminal_size(), std::nullopt);
}

TEST_F(StdioTerminalTest, RawModeWhileRunningRestoredAfter) {
  ASSERT_NE(attributes().c_lflag & ICANON, 0u);
  {
    StdioBackend backend(nullptr, slave_.get(), slave_.get());
    LoopThread io;
    io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
    const termios raw = attributes();
    EXPECT_EQ(raw.c_lflag & (ICANON | ECHO | ISIG), 0u);
    EXPECT_EQ(raw.c_oflag & OPOST, 0u);
    EXPECT_EQ(raw.c_iflag & ICRNL, 0u);
  }
  const termios restored = attributes();
  EXPECT_NE(restored.c_lflag & ICANON, 0u);
  EXPECT_NE(restored.c_lflag & ECHO, 0u);
}

TEST_F(StdioTerminalTest, RestoreHookForSignalHandlers) {
  StdioBackend backend(nullptr, slave_.get(), slave_.get());
  LoopThread io;
  io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
  EXPECT_EQ(attributes().c_lflag & ICANON, 0u);
  RawTerminal::restore_saved();
  EXPECT_NE(attributes().c_lflag & ICANON, 0u);
}

TEST_F(StdioTerminalTest, OnlyOneRawTerminal) {
  RawTerminal first(slave_.get());
  EXPECT_THROW(RawTerminal second(slave_.get()), UserError);
}

TEST_F(StdioTerminalTest, EscapesOnATerminal) {
  std::promise<void> quit;
  StdioBackend backend([&] { quit.set_value(); }, slave_.get(), slave_.get());
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  // Without raw mode none of this would arrive before a newline, and Ctrl-C would be a signal.
  write_fd(master_.get(),
           "ab\x03\x01\x01"
           "c\x01"
           "d");
  EXPECT_EQ(received.wait_for(7),
            "ab\x03\x01"
            "c\x01"
            "d");
  write_fd(master_.get(), "\x01x");
  EXPECT_EQ(quit.get_future().wait_for(5s), std::future_status::ready);
}

// Ctrl-A s asks for a shutdown (vmm: the guest's power button) and the console keeps going.
TEST_F(StdioTerminalTest, CtrlASAsksForShutdown) {
  bool quit = false;
  std::promise<void> shutdown;
  StdioBackend backend([&] { quit = true; }, slave_.get(), slave_.get());
  backend.set_on_shutdown([&] { shutdown.set_value(); });
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  write_fd(master_.get(), "a\x01sb");
  EXPECT_EQ(shutdown.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_EQ(received.wait_for(2), "ab");
  EXPECT_FALSE(quit);
}

// A guest that never reads its console pauses input; the user's quit key must still work, and
// what was typed meanwhile waits, bounded, for the guest.
// A terminal that takes no output (its user pressed Ctrl-S in a terminal emulator that honours
// it, or nobody reads the pty): guest output waits, bounded, and Ctrl-A x still quits.
TEST_F(StdioTerminalTest, QuitKeyWorksWhileTheTerminalTakesNoOutput) {
  std::promise<void> quit;
  StdioBackend backend([&] { quit.set_value(); }, slave_.get(), slave_.get());
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  const std::string data = test::numbered_lines(1 << 20);
  auto taken = std::async(std::launch::async, [&] { return backend.write(bytes_of(data)); });
  const bool prompt = taken.wait_for(5s) == std::future_status::ready;
  std::future<std::string> drain;
  if (!prompt) {
    drain =
        std::async(std::launch::async, [&] { return test::read_fd(master_.get(), data.size()); });
  }
  ASSERT_TRUE(prompt) << "write() blocked on a terminal that takes no output";
  EXPECT_LT(taken.get(), data.size());
  EXPECT_LE(backend.queued_bytes(), StdioBackend::kOutputLimit);
  write_fd(master_.get(), "\x01x");
  EXPECT_EQ(quit.get_future().wait_for(5s), std::future_status::ready);
}

// Found in review: stderr was written blocking (log lines, and Ctrl-A h's help, whose 200 ms
// limit needs O_NONBLOCK to apply): on a terminal that takes no output, the next log line or
// Ctrl-A h held its thread, the event loop and the quit key on it, for good. In a child: it
// makes the terminal its stderr.
TEST_F(StdioTerminalTest, LogLinesAndTheHelpNeverHoldTheLoopOnAStuckStderr) {
  test::expect_in_child([&]() -> const char* {
    const int saved = ::dup(STDERR_FILENO);
    const auto outcome = [&]() -> const char* {
      if (::dup2(slave_.get(), STDERR_FILENO) < 0) return "dup2";
      log::open_stderr();
      if (log::stderr_fd() == STDERR_FILENO) return "stderr (a terminal) was not reopened";
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < 3000; ++i) log::info("line {} for a terminal nobody reads", i);
      if (std::chrono::steady_clock::now() - start > 3s) return "log lines waited for room";
      std::promise<void> quit;
      StdioBackend backend([&] { quit.set_value(); }, slave_.get(), slave_.get());
      LoopThread io;
      io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
      write_fd(master_.get(), "\x01h\x01x");
      if (quit.get_future().wait_for(5s) != std::future_status::ready) {
        return "Ctrl-A x after Ctrl-A h did not quit";
      }
      // The terminal read again: the next line says how many were dropped.
      const auto drain = [&] {
        std::string text;
        pollfd pfd{master_.get(), POLLIN, 0};
        char buffer[4096];
        while (::poll(&pfd, 1, 200) > 0) {
          const ssize_t n = ::read(master_.get(), buffer, sizeof buffer);
          if (n <= 0) break;
          text.append(buffer, static_cast<size_t>(n));
        }
        return text;
      };
      drain();
      log::info("the reader is back");
      const std::string after = drain();
      if (after.find("log lines dropped: stderr was not being read") == std::string::npos) {
        return "no line said how many were dropped";
      }
      if (after.find("the reader is back") == std::string::npos) return "the next line is lost";
      return nullptr;
    }();
    ::dup2(saved, STDERR_FILENO);
    return outcome;
  });
}

TEST_F(StdioTerminalTest, EscapesStillWorkWhileInputIsPaused) {
  std::promise<void> quit;
  StdioBackend backend([&] { quit.set_value(); }, slave_.get(), slave_.get());
  Received received;
  LoopThread io;
  io.call([&] { backend.start(io.loop, received.sink()); });
  write_fd(master_.get(), "ab");
  EXPECT_EQ(received.wait_for(2), "ab");
  io.call([&] { backend.pause_input(); });

  // More than the held limit, in pieces a terminal takes (its input queue is ~4 KiB).
  const std::string chunk(512, 'z');
  for (size_t sent = 0; sent < 2 * StdioBackend::kHeldLimit; sent += chunk.size()) {
    write_fd(master_.get(), chunk);
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(100ms);
  io.call([] {});
  EXPECT_EQ(received.now(), "ab") << "nothing reaches a paused guest";

  io.call([&] { backend.resume_input(); });
  const std::string held = received.wait_for(2 + StdioBackend::kHeldLimit);
  EXPECT_EQ(held, "ab" + std::string(StdioBackend::kHeldLimit, 'z'));

  io.call([&] { backend.pause_input(); });
  write_fd(master_.get(), "\x01x");
  EXPECT_EQ(quit.get_future().wait_for(5s), std::future_status::ready)
      << "Ctrl-A x quits although the guest reads nothing";
}

TEST_F(StdioTerminalTest, GuestOutputReachesTheTerminalUnchanged) {
  StdioBackend backend(nullptr, slave_.get(), slave_.get());
  LoopThread io;
  io.call([&] { backend.start(io.loop, [](std::span<const uint8_t>) {}); });
  backend.write(bytes_of("login:\r\n"));
  char buffer[64];
  const ssize_t n = ::read(master_.get(), buffer, sizeof buffer);
  EXPECT_EQ(std::string(buffer, static_cast<size_t>(std::max<ssize_t>(n, 0))), "login:\r\n");
}

// Ctrl-A h's help is written on the event loop: a stderr nobody reads (here a full pipe) holds
// it for the timeout at most, not for good.
TEST(FdIo, AWriteToAReaderThatStoppedGivesUpAtItsTimeout) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  const std::vector<uint8_t> chunk(4096, 'x');
  while (::write(fds[1], chunk.data(), chunk.size()) > 0) {
  }
  const auto start = std::chrono::steady_clock::now();
  errno = 0;
  EXPECT_FALSE(write_all(fds[1], chunk, 100));
  EXPECT_EQ(errno, ETIMEDOUT);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 90ms);
  EXPECT_LT(waited, 5s);
  std::vector<uint8_t> sink(1 << 20);
  while (::read(fds[0], sink.data(), sink.size()) > 0) {
  }
  EXPECT_TRUE(write_all(fds[1], chunk, 100)) << "room again: written";
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace backends_stdio_test
}  // namespace libvmm
