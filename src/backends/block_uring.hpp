// A batch of preadv/pwritev-style transfers run through io_uring: all submitted with one
// system call, then awaited together, so the host can work on them at the same time.
// Internal to BlockImage.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

namespace libvmm {

class UringBatch {
 public:
  struct Op {
    int fd = -1;
    bool write = false;
    uint64_t offset = 0;
    std::span<const iovec> iov;
    int64_t result = 0;    // set by run(): bytes moved (maybe fewer than asked) or -errno
    void* user = nullptr;  // the caller's, untouched
  };

  // A ring for up to `entries` operations at once, restricted to READV, WRITEV and
  // ASYNC_CANCEL (IORING_REGISTER_RESTRICTIONS: nothing else can be submitted to it); nullptr
  // (and a warning, or with `quiet` a debug line) where the host has no such ring (a kernel
  // before 5.10, seccomp, io_uring_disabled).
  static std::unique_ptr<UringBatch> create(unsigned entries, bool quiet = false);
  ~UringBatch();
  UringBatch(const UringBatch&) = delete;
  UringBatch& operator=(const UringBatch&) = delete;

  // Runs every op and returns when none is left in the kernel. Any number of ops: more than
  // the ring holds go in several rounds. If the ring fails while ops are in flight, they are
  // cancelled and awaited before run() returns (failing with -ECANCELED or -EIO), so that no
  // transfer into the caller's buffers outlives the call and no late completion is taken for
  // the next batch's.
  void run(std::span<Op> ops);

  // Tests: the ring itself (to try what it refuses).
  io_uring* ring_for_test() { return &ring_; }
  // Tests: stands in for io_uring_submit_and_wait (to make the ring fail on demand).
  using SubmitAndWait = std::function<int(io_uring*, unsigned)>;
  void set_submit_for_test(SubmitAndWait submit) { submit_and_wait_ = std::move(submit); }

 private:
  UringBatch(unsigned entries) : entries_(entries) {}
  void run_round(std::span<Op> ops);
  // Cancels whatever is in flight and reaps it; what is still unaccounted for afterwards.
  unsigned cancel_and_reap(std::span<Op> ops, unsigned outstanding);
  unsigned reap(std::span<Op> ops);  // completions available now, recorded; how many

  io_uring ring_{};
  bool initialized_ = false;  // ring_ set up (torn down with it)
  unsigned entries_;
  uint32_t round_ = 0;  // tags each round's user_data, so a stale completion is never taken
  SubmitAndWait submit_and_wait_ = [](io_uring* ring, unsigned n) {
    return io_uring_submit_and_wait(ring, n);
  };
};

}  // namespace libvmm
