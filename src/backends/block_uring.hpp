// A batch of preadv/pwritev-style transfers run through io_uring: all submitted with one
// system call, then awaited together, so the host can work on them at the same time.
// Internal to BlockImage.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <cstdint>
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

  // A ring for up to `entries` operations at once; nullptr (and a log line) where the host
  // has no io_uring (old kernel, seccomp, io_uring_disabled).
  static std::unique_ptr<UringBatch> create(unsigned entries);
  ~UringBatch();
  UringBatch(const UringBatch&) = delete;
  UringBatch& operator=(const UringBatch&) = delete;

  // Runs every op and returns when all have completed. Any number of ops: more than the ring
  // holds go in several rounds.
  void run(std::span<Op> ops);

 private:
  UringBatch(unsigned entries) : entries_(entries) {}
  void run_round(std::span<Op> ops);

  io_uring ring_{};
  unsigned entries_;
};

}  // namespace libvmm
