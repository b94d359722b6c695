#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/backends/file_backend.hpp"
#include "libvmm/backends/null_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "unit/support/char_io.hpp"
#include "unit/support/loop_thread.hpp"

namespace libvmm {
namespace backends_file_test {

class FileBackendTest : public testing::Test {
 protected:
  ~FileBackendTest() override { std::filesystem::remove(path_); }

  std::string contents() const {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static std::span<const uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
  }

  const std::string path_ = (std::filesystem::temp_directory_path() /
                             ("libvmm-file-backend-" + std::to_string(::getpid()) + ".log"))
                                .string();
};

TEST_F(FileBackendTest, WritesAppendInOrder) {
  FileBackend backend(path_);
  EXPECT_EQ(backend.describe(), "file:" + path_);
  backend.write(bytes_of("Linux version"));
  backend.write(bytes_of(" 6.1\r\n"));
  EXPECT_EQ(contents(), "Linux version 6.1\r\n");
}

TEST_F(FileBackendTest, TruncatesAtOpen) {
  { std::ofstream(path_) << "old output from the last run\n"; }
  FileBackend backend(path_);
  EXPECT_EQ(contents(), "");
  backend.write(bytes_of("new"));
  EXPECT_EQ(contents(), "new");
}

TEST_F(FileBackendTest, ConcurrentWritesStayWhole) {
  FileBackend backend(path_);
  const std::string a(1000, 'a'), b(1000, 'b');
  std::vector<std::thread> threads;
  for (const std::string* s : {&a, &b}) {
    threads.emplace_back([&backend, s] {
      for (int i = 0; i < 50; ++i) backend.write(bytes_of(*s));
    });
  }
  for (auto& t : threads) t.join();
  const std::string got = contents();
  ASSERT_EQ(got.size(), 100'000u);
  for (size_t i = 0; i < got.size(); i += 1000) {
    EXPECT_EQ(got.substr(i, 1000), std::string(1000, got[i])) << "chunk at " << i;
  }
}

// A FIFO whose reader does not read: writes return at once, taking no more than the queue holds;
// once the reader reads, every byte arrives in order.
TEST_F(FileBackendTest, FifoNobodyReadsNeverBlocks) {
  using namespace std::chrono_literals;
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  UniqueFd reader(::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(reader.valid());
  FileBackend backend(path_);
  test::LoopThread io;
  io.call([&] { backend.start(io.loop, nullptr); });
  const std::string data = test::numbered_lines(1 << 20);  // far more than pipe and queue hold
  test::OutputFeeder feeder(backend, data);

  auto first = std::async(std::launch::async, [&] { return feeder.offer(); });
  const bool prompt = first.wait_for(5s) == std::future_status::ready;
  std::future<std::string> got;
  if (!prompt)
    got = std::async(std::launch::async, [&] { return test::read_fd(reader.get(), data.size()); });
  ASSERT_TRUE(prompt) << "write() blocked on a FIFO nobody reads";
  const size_t taken = first.get();
  EXPECT_LT(taken, data.size());
  EXPECT_LE(backend.queued_bytes(), FileBackend::kOutputLimit);
  EXPECT_GT(backend.queued_bytes(), 0u);
  EXPECT_EQ(backend.write_room(), 0u);
  auto loop_alive = std::async(std::launch::async, [&] { io.call([] {}); });
  EXPECT_EQ(loop_alive.wait_for(5s), std::future_status::ready) << "the event loop is stuck";

  got = std::async(std::launch::async, [&] { return test::read_fd(reader.get(), data.size()); });
  EXPECT_TRUE(feeder.wait_all_taken());
  EXPECT_TRUE(got.get() == data) << "output lost or reordered";
}

// The reader went away for good: output is taken and discarded, never waited for.
TEST_F(FileBackendTest, FifoWhoseReaderLeftDiscardsOutput) {
  ::signal(SIGPIPE, SIG_IGN);  // as programs do (vmm does): EPIPE is reported, not fatal
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  UniqueFd reader(::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(reader.valid());
  FileBackend backend(path_);
  test::LoopThread io;
  io.call([&] { backend.start(io.loop, nullptr); });
  std::atomic<int> told{0};
  backend.set_output_listener([&] { ++told; });
  const std::string data = test::numbered_lines(1 << 20);
  EXPECT_LT(backend.write(bytes_of(data)), data.size());  // the queue is full
  reader.reset();  // the loop sees the hang-up and tells the listener
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (told == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  io.call([] {});
  EXPECT_EQ(told.load(), 1);
  EXPECT_EQ(backend.write(bytes_of(data)), data.size());
  EXPECT_EQ(backend.queued_bytes(), 0u);
  backend.set_output_listener(nullptr);
}

// Found in review: a full disk shows first as a short write, whose rest was queued for a wait
// that a regular file cannot have; the line said "Operation not permitted" (epoll's) and not
// what was wrong. Here the file size limit stands in for the full disk.
TEST_F(FileBackendTest, AFullDiskIsSaidForWhatItIs) {
  testing::internal::CaptureStderr();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of the signal, as ENOSPC would come
    const rlimit limit{1000, 1000};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(2);
    FileBackend backend(path_);
    const std::string data(4000, 'x');
    const size_t taken = backend.write(bytes_of(data));
    ::_exit(taken == data.size() && backend.queued_bytes() == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  const std::string said = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_NE(said.find("writing guest output failed, discarding it from now on: File too large"),
            std::string::npos)
      << said;
  EXPECT_EQ(contents().size(), 1000u);
}

TEST_F(FileBackendTest, UnopenablePathThrowsSystemError) {
  EXPECT_THROW(FileBackend("/nonexistent-libvmm-dir/x"), SystemError);
}

TEST(NullBackendTest, DiscardsOutput) {
  NullBackend backend;
  const uint8_t byte = 'x';
  backend.write(std::span(&byte, 1));
  EXPECT_EQ(backend.describe(), "none");
}

}  // namespace backends_file_test
}  // namespace libvmm
