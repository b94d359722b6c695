// preadv/pwritev-style transfers through io_uring, in one of two ways (a ring is used one way
// only): a batch submitted with one system call and awaited together (run()), or transfers kept
// in flight, each started when it comes and collected when it finishes (start(), submit(),
// reap()), so the host works on as many at once as the caller has. Internal to BlockImage.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

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

  // Queues a transfer for the next submit(); `iov` and its buffers must stay until reap()
  // returns `user`. False when `entries` are out, or once the ring has failed (the caller
  // carries the transfer out another way).
  bool start(int fd, bool write, uint64_t offset, std::span<const iovec> iov, void* user);
  // Hands what start() queued to the kernel (a kernel short of memory tried again for up to a
  // second: EAGAIN, EBUSY). If the ring fails, whatever is out is cancelled
  // and awaited (as for run()), reap() returns it failed, and start() refuses from then on.
  void submit();
  // Appends (user, bytes moved or -errno) for each transfer that finished; with `wait`, first
  // waits for one to finish if any is out.
  using Finished = std::pair<void*, int64_t>;
  void reap(std::vector<Finished>& done, bool wait);
  unsigned outstanding() const { return static_cast<unsigned>(entries_ - free_slots_.size()); }
  // The ring failed with requests the kernel never took still queued in it: it is never
  // entered again (run() fails every op, start() refuses); its user goes without it.
  bool broken() const { return broken_; }
  // An eventfd the kernel signals for every completion: poll it, read it, then reap().
  int event_fd() const { return event_fd_; }

  // Tests: the ring itself (to try what it refuses).
  io_uring* ring_for_test() { return &ring_; }
  // Tests: stands in for io_uring_submit_and_wait (to make the ring fail on demand).
  using SubmitAndWait = std::function<int(io_uring*, unsigned)>;
  void set_submit_for_test(SubmitAndWait submit) { submit_and_wait_ = std::move(submit); }
  // Tests: stands in for io_uring_wait_cqe (to make waiting fail on demand).
  using WaitCqe = std::function<int(io_uring*, io_uring_cqe**)>;
  void set_wait_for_test(WaitCqe wait) { wait_cqe_ = std::move(wait); }
  // Tests: rewrites each completion's result (to make the kernel answer EAGAIN on demand).
  using Completion = std::function<int32_t(int32_t)>;
  void set_completion_for_test(Completion completion) { completion_ = std::move(completion); }

 private:
  explicit UringBatch(unsigned entries);
  void run_round(std::span<Op> ops);
  // Cancels whatever is in flight and waits (bounded) until reap(), which returns how many of
  // the `outstanding` it saw finish, has seen them all; how many it has not.
  template <typename Reap>
  unsigned cancel_and_reap(unsigned outstanding, Reap&& reap);
  // Consumes the completions available now, each through take(round tag, index, result),
  // which says whether it was one it waited for; how many were.
  template <typename Take>
  unsigned consume(Take&& take);
  unsigned reap(std::span<Op> ops);  // completions available now, recorded; how many
  // Completions available now of transfers start()ed, appended to `done`; how many.
  unsigned reap_started(std::vector<Finished>* done);
  // Every transfer start()ed fails: cancelled and awaited; the rest is reported, and given up.
  void fail_started(int rc);

  io_uring ring_{};
  bool initialized_ = false;  // ring_ set up (torn down with it)
  unsigned entries_;
  uint32_t round_ = 0;  // tags each round's user_data, so a stale completion is never taken
  int event_fd_ = -1;   // registered with the ring
  // start()ed transfers by slot (user_data: kStartedTag in the high half, the slot below).
  std::vector<void*> started_;
  std::vector<uint32_t> free_slots_;
  std::vector<Finished> failed_;  // given back by the next reap()
  bool broken_ = false;           // submit() failed: start() refuses (and see broken())
  SubmitAndWait submit_and_wait_ = [](io_uring* ring, unsigned n) {
    return io_uring_submit_and_wait(ring, n);
  };
  WaitCqe wait_cqe_ = [](io_uring* ring, io_uring_cqe** cqe) {
    return io_uring_wait_cqe(ring, cqe);
  };
  Completion completion_;  // none: as the kernel said
};

}  // namespace libvmm
