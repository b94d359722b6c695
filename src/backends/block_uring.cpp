#include "block_uring.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <string>
#include <thread>

#include "libvmm/core/log.hpp"

namespace libvmm {

namespace {

// user_data: a round of run() or kStartedTag in the high half, the op's index or the started
// transfer's slot in the low half; the cancel request's is kCancelTag.
constexpr uint32_t kStartedTag = 0xfffffffe;
constexpr uint64_t kCancelTag = ~uint64_t{0};

uint64_t tag(uint32_t round, size_t index) {
  return uint64_t{round} << 32 | index;
}

// The kernel took nothing for want of memory (EAGAIN) or room for completions (EBUSY): worth
// trying again shortly, a millisecond apart, up to a second, before the ring counts as failed.
bool kernel_busy(int rc) {
  return rc == -EAGAIN || rc == -EBUSY;
}
constexpr int kBusyTries = 1000;
void wait_a_moment() {
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

}  // namespace

UringBatch::UringBatch(unsigned entries) : entries_(entries), started_(entries, nullptr) {
  for (unsigned slot = entries; slot-- > 0;) free_slots_.push_back(slot);
}

std::unique_ptr<UringBatch> UringBatch::create(unsigned entries, bool quiet) {
  const auto fail = [quiet](const char* step, int rc) -> std::unique_ptr<UringBatch> {
    const std::string line = fmt::format("io_uring: cannot {}: {}", step, std::strerror(-rc));
    if (quiet) {
      log::debug("{}", line);
    } else {
      log::warn("{}", line);
    }
    return nullptr;
  };
  auto batch = std::unique_ptr<UringBatch>(new UringBatch(entries));
  // The ring starts disabled and takes only the operations run() makes before it is enabled:
  // a ring is a way around the seccomp filter (its operations are no system calls), so one
  // that could open files or sockets would undo the sandbox for whoever took over the process.
  io_uring_params params{};
  params.flags = IORING_SETUP_R_DISABLED;
  if (const int rc = io_uring_queue_init_params(entries, &batch->ring_, &params); rc < 0) {
    return fail("set up a ring", rc);
  }
  batch->initialized_ = true;
  // Completions signal an eventfd, for a caller that waits for them in poll() with other fds.
  batch->event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (batch->event_fd_ < 0) return fail("make an eventfd for a ring", -errno);
  if (const int rc = io_uring_register_eventfd(&batch->ring_, batch->event_fd_); rc < 0) {
    return fail("register a ring's eventfd", rc);
  }
  // (Through io_uring_register itself: Debian 12's liburing 2.3 declares the two helpers but
  // its library does not export them.)
  io_uring_restriction allowed[3] = {};
  const uint8_t ops[3] = {IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_ASYNC_CANCEL};
  for (size_t i = 0; i < 3; ++i) {
    allowed[i].opcode = IORING_RESTRICTION_SQE_OP;
    allowed[i].sqe_op = ops[i];
  }
  if (const int rc =
          io_uring_register(batch->ring_.ring_fd, IORING_REGISTER_RESTRICTIONS, allowed, 3);
      rc < 0) {
    return fail("restrict a ring to reads and writes", rc);
  }
  if (const int rc =
          io_uring_register(batch->ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
      rc < 0) {
    return fail("enable a restricted ring", rc);
  }
  return batch;
}

UringBatch::~UringBatch() {
  // Nothing may write into the caller's buffers afterwards (BlockImage reaps first anyway).
  if (outstanding() > 0) fail_started(-ECANCELED);
  if (initialized_) io_uring_queue_exit(&ring_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

void UringBatch::run(std::span<Op> ops) {
  while (!ops.empty()) {
    const size_t n = std::min<size_t>(ops.size(), entries_);
    run_round(ops.first(n));
    ops = ops.subspan(n);
  }
}

template <typename Reap>
unsigned UringBatch::cancel_and_reap(unsigned outstanding, Reap&& reap) {
  if (const unsigned queued = io_uring_sq_ready(&ring_); queued > 0) {
    // Requests the kernel never took are still queued: a submit (of the cancel) would start
    // them. The ring is given up instead, never submitted to again, so they never run; only
    // those the kernel took are waited for.
    broken_ = true;
    outstanding -= std::min(outstanding, queued);
  } else if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) {
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(sqe, kCancelTag);
    io_uring_submit(&ring_);
  }
  // Bounded: a transfer the kernel can neither finish nor cancel is reported, not waited for
  // forever (the event loop must go on).
  for (int tries = 0; outstanding > 0 && tries < 50; ++tries) {
    __kernel_timespec timeout{0, 100'000'000};  // 100 ms
    io_uring_cqe* cqe = nullptr;
    const int rc = io_uring_wait_cqe_timeout(&ring_, &cqe, &timeout);
    if (rc < 0 && rc != -ETIME && rc != -EINTR) break;
    const unsigned seen = reap();
    outstanding -= std::min(outstanding, seen);
  }
  return outstanding;
}

void UringBatch::run_round(std::span<Op> ops) {
  if (++round_ >= kStartedTag) round_ = 1;
  unsigned submitted = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    op.result = -EIO;       // until its completion says otherwise
    if (broken_) continue;  // the ring holds requests it must never start (cancel_and_reap)
    if (op.iov.size() > IOV_MAX) {
      op.result = -EINVAL;  // the caller's limits keep chains far shorter
      continue;
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // cannot happen: the round fits the ring
      op.result = -EBUSY;
      continue;
    }
    const auto count = static_cast<unsigned>(op.iov.size());
    if (op.write) {
      io_uring_prep_writev(sqe, op.fd, op.iov.data(), count, op.offset);
    } else {
      io_uring_prep_readv(sqe, op.fd, op.iov.data(), count, op.offset);
    }
    io_uring_sqe_set_data64(sqe, tag(round_, i));
    ++submitted;
  }
  // Submit everything and wait for every completion; EINTR only means "not yet".
  unsigned completed = 0;
  int busy = 0;  // tries in a row the kernel was too busy to take anything
  while (completed < submitted) {
    const int rc = submit_and_wait_(&ring_, submitted - completed);
    const unsigned seen = reap(ops);
    completed += seen;
    if (rc >= 0 || rc == -EINTR || seen > 0) {
      busy = 0;
      continue;
    }
    if (kernel_busy(rc) && ++busy < kBusyTries) {
      wait_a_moment();
      continue;
    }
    // The ring fails (a kernel fault, not a guest's doing). Transfers may still be in the
    // kernel, writing into guest buffers: cancel them and wait until none is left.
    log::error("io_uring: submit failed: {}; cancelling {} transfers in flight", std::strerror(-rc),
               submitted - completed);
    const unsigned stuck = cancel_and_reap(submitted - completed, [&] { return reap(ops); });
    if (stuck != 0) log::error("io_uring: {} transfers did not finish", stuck);
    return;
  }
}

template <typename Take>
unsigned UringBatch::consume(Take&& take) {
  io_uring_cqe* cqe = nullptr;
  unsigned head = 0;
  unsigned seen = 0;
  unsigned iterated = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    ++iterated;
    const uint64_t data = io_uring_cqe_get_data64(cqe);
    const int32_t res = completion_ ? completion_(cqe->res) : cqe->res;
    if (take(data >> 32, static_cast<uint32_t>(data), res)) ++seen;
  }
  io_uring_cq_advance(&ring_, iterated);
  return seen;
}

unsigned UringBatch::reap(std::span<Op> ops) {
  // Completions of cancel requests carry another tag; earlier rounds' cannot be left over.
  return consume([&](uint64_t round, uint32_t index, int32_t res) {
    if (round != round_ || index >= ops.size()) return false;
    ops[index].result = res;
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Transfers kept in flight

bool UringBatch::start(int fd, bool write, uint64_t offset, std::span<const iovec> iov,
                       void* user) {
  if (broken_ || free_slots_.empty() || iov.size() > IOV_MAX) return false;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) return false;  // cannot happen: no more are out than the ring holds
  const uint32_t slot = free_slots_.back();
  free_slots_.pop_back();
  started_[slot] = user;
  const auto count = static_cast<unsigned>(iov.size());
  if (write) {
    io_uring_prep_writev(sqe, fd, iov.data(), count, offset);
  } else {
    io_uring_prep_readv(sqe, fd, iov.data(), count, offset);
  }
  io_uring_sqe_set_data64(sqe, tag(kStartedTag, slot));
  return true;
}

void UringBatch::submit() {
  if (broken_ || io_uring_sq_ready(&ring_) == 0) return;
  int rc = 0;
  for (int busy = 0;; wait_a_moment()) {
    rc = submit_and_wait_(&ring_, 0);
    if (rc == -EINTR) continue;
    // A part may have gone (rc > 0): the rest goes with the next submit.
    if (rc >= 0 || !kernel_busy(rc) || ++busy == kBusyTries) break;
  }
  if (rc >= 0) return;
  // The ring fails (a kernel fault, not a guest's doing): nothing more goes through it.
  log::error("io_uring: submit failed: {}; cancelling {} transfers in flight", std::strerror(-rc),
             outstanding());
  fail_started(rc);
}

void UringBatch::reap(std::vector<Finished>& done, bool wait) {
  if (wait && io_uring_sq_ready(&ring_) > 0) submit();  // nothing waits for what never went
  const bool have_some = !failed_.empty();
  done.insert(done.end(), failed_.begin(), failed_.end());
  failed_.clear();
  if (wait && !have_some && outstanding() > 0 && !broken_) {
    io_uring_cqe* cqe = nullptr;
    int rc = 0;
    do {
      rc = wait_cqe_(&ring_, &cqe);
    } while (rc == -EINTR);
    // A wait that keeps failing would have the caller (finishing what is in flight) ask again
    // for ever: the ring is given up, and what was out comes back failed.
    if (rc < 0) {
      log::error("io_uring: waiting for completions failed: {}", std::strerror(-rc));
      fail_started(rc);
      done.insert(done.end(), failed_.begin(), failed_.end());
      failed_.clear();
      return;
    }
  }
  reap_started(&done);
}

unsigned UringBatch::reap_started(std::vector<Finished>* done) {
  return consume([&](uint64_t round, uint32_t slot, int32_t res) {
    if (round != kStartedTag || slot >= entries_ || started_[slot] == nullptr) return false;
    if (done != nullptr) done->emplace_back(started_[slot], res);
    started_[slot] = nullptr;
    free_slots_.push_back(slot);
    return true;
  });
}

void UringBatch::fail_started(int rc) {
  broken_ = true;
  // What is out may still be writing into the caller's buffers: cancel it and wait (bounded).
  std::vector<Finished> done;
  const unsigned stuck = cancel_and_reap(outstanding(), [&] { return reap_started(&done); });
  failed_.insert(failed_.end(), done.begin(), done.end());
  if (stuck != 0) log::error("io_uring: {} transfers did not finish", stuck);
  // What is left never completes: transfers the kernel never took (the ring is never entered
  // again, so they never run; not counted as stuck) and those it could not finish in time
  // (given up: their buffers are the caller's again, whatever the kernel still does). Never
  // as EAGAIN or EINTR, which the image takes for "not done, do it again": a stuck one may yet
  // land.
  const int given = rc == -EAGAIN || rc == -EINTR ? -EIO : rc;
  for (uint32_t slot = 0; slot < entries_; ++slot) {
    if (started_[slot] == nullptr) continue;
    failed_.emplace_back(started_[slot], given);
    started_[slot] = nullptr;
    free_slots_.push_back(slot);
  }
}

}  // namespace libvmm
