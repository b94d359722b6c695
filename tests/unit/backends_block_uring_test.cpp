// io_uring batches when the ring fails with transfers in flight: they are cancelled and
// awaited before run() returns, and nothing of them reaches the next batch.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "../../src/backends/block_uring.hpp"

using namespace libvmm;

namespace {

TEST(UringBatch, AFailingRingCancelsWhatIsInFlightBeforeReturning) {
  auto batch = UringBatch::create(8);
  if (!batch) GTEST_SKIP() << "no io_uring on this host";
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);

  // A read from an empty pipe stays in the kernel; the ring then "fails" after submitting.
  char stale[8] = {};
  iovec stale_iov{stale, sizeof stale};
  UringBatch::Op read_pipe{fds[0], false, 0, {&stale_iov, 1}, 0, nullptr};
  batch->set_submit_for_test([](io_uring* ring, unsigned) {
    io_uring_submit(ring);
    return -EIO;
  });
  batch->run({&read_pipe, 1});
  EXPECT_LT(read_pipe.result, 0) << "the transfer failed";

  // Had the read stayed in flight, it would now take these bytes into `stale`.
  ASSERT_EQ(::write(fds[1], "late", 4), 4);
  batch->set_submit_for_test(
      [](io_uring* ring, unsigned n) { return io_uring_submit_and_wait(ring, n); });
  char fresh[4] = {};
  iovec fresh_iov{fresh, sizeof fresh};
  UringBatch::Op read_again{fds[0], false, 0, {&fresh_iov, 1}, 0, nullptr};
  batch->run({&read_again, 1});
  EXPECT_EQ(read_again.result, 4);
  EXPECT_EQ(std::string(fresh, 4), "late") << "the next batch gets the data, not the stale read";
  EXPECT_EQ(std::string(stale, 4), std::string(4, '\0'));
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
