// A host program's event source for a guest interrupt: each wake-up takes a bounded amount.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <vector>

#include "../../src/vm/host_events.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {
namespace {

struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
  }
  int waiting() const {
    int n = 0;
    EXPECT_EQ(::ioctl(read_end.get(), FIONREAD, &n), 0);
    return n;
  }
  UniqueFd read_end;
  UniqueFd write_end;
};

// Found in review: a wake-up read the FIFO until it was empty, so a writer that kept it full
// held the event loop (the quit key, every device) and no pulse reached the guest.
TEST(HostEvents, AWakeUpTakesABoundedAmount) {
  Pipe pipe;
  constexpr int kWritten = 256 * 1024;
  if (::fcntl(pipe.write_end.get(), F_SETPIPE_SZ, kWritten) < kWritten) {
    GTEST_SKIP() << "pipes here cannot hold 256 KiB";
  }
  const std::vector<char> bytes(kWritten, 'x');
  ASSERT_EQ(::write(pipe.write_end.get(), bytes.data(), bytes.size()), kWritten);
  EXPECT_TRUE(take_host_events(pipe.read_end.get()));
  EXPECT_EQ(pipe.waiting(), kWritten - kHostEventReadsPerWakeup * 4096)
      << "the rest waits for the next wake-up";
  int wakeups = 1;
  while (take_host_events(pipe.read_end.get())) ++wakeups;
  EXPECT_EQ(wakeups, kWritten / (kHostEventReadsPerWakeup * 4096));
  EXPECT_EQ(pipe.waiting(), 0);
}

TEST(HostEvents, NothingWrittenIsNoEvent) {
  Pipe pipe;
  EXPECT_FALSE(take_host_events(pipe.read_end.get()));  // EAGAIN
  ASSERT_EQ(::write(pipe.write_end.get(), "x", 1), 1);
  EXPECT_TRUE(take_host_events(pipe.read_end.get()));
  pipe.write_end.reset();
  EXPECT_FALSE(take_host_events(pipe.read_end.get()));  // end of file
}

}  // namespace
}  // namespace libvmm
