#include "block_uring.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "libvmm/core/log.hpp"

namespace libvmm {

std::unique_ptr<UringBatch> UringBatch::create(unsigned entries) {
  auto batch = std::unique_ptr<UringBatch>(new UringBatch(entries));
  if (const int rc = io_uring_queue_init(entries, &batch->ring_, 0); rc < 0) {
    log::warn("io_uring: cannot set up a ring: {}", std::strerror(-rc));
    return nullptr;
  }
  return batch;
}

UringBatch::~UringBatch() {
  io_uring_queue_exit(&ring_);
}

void UringBatch::run(std::span<Op> ops) {
  while (!ops.empty()) {
    const size_t n = std::min<size_t>(ops.size(), entries_);
    run_round(ops.first(n));
    ops = ops.subspan(n);
  }
}

void UringBatch::run_round(std::span<Op> ops) {
  unsigned submitted = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    op.result = -EIO;  // until its completion says otherwise
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
    io_uring_sqe_set_data64(sqe, i);
    ++submitted;
  }
  // Submit everything and wait for every completion; EINTR only means "not yet".
  unsigned completed = 0;
  while (completed < submitted) {
    const int rc = io_uring_submit_and_wait(&ring_, submitted - completed);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN) {
      log::error("io_uring: submit failed: {}", std::strerror(-rc));
    }
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      const uint64_t index = io_uring_cqe_get_data64(cqe);
      if (index < ops.size()) ops[index].result = cqe->res;
      ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
    completed += seen;
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && seen == 0) {
      // The ring is unusable: fail what is still out rather than wait forever. Reaching here
      // means a kernel fault, not a guest's doing.
      break;
    }
  }
  if (completed < submitted) {
    log::error("io_uring: {} transfers did not complete", submitted - completed);
  }
}

}  // namespace libvmm
