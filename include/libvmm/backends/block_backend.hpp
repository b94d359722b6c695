// Where a virtIO block device's bytes live on the host. BlockImage (block_image.hpp) keeps them
// in a raw image file or host block device; tests keep them in host memory.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <vector>

namespace libvmm {

// One read or write of a batch handed to BlockBackend::transfer_batch(), or started with
// BlockAsync::start().
struct BlockTransfer {
  bool write = false;
  uint64_t offset = 0;
  std::span<iovec> iov;  // host buffers in guest RAM; the backend may modify the entries
  int result = 0;        // set when carried out: 0 or an errno value
  uint64_t tag = 0;      // the caller's, untouched
};

// Transfers that go on while their caller does other things: a device's I/O thread starts each
// request as it comes and completes each as it finishes, so a disk with latency of its own has
// as many requests at once as the guest gives it. BlockBackend::async() offers it where the
// backend has it (BlockImage, through io_uring). One thread at a time uses it.
class BlockAsync {
 public:
  virtual ~BlockAsync() = default;
  // Queues `t` to start with the next submit(). From then on `t`, its iov entries and its
  // buffers are the backend's until reap() gives `t` back with its result. False when the
  // backend takes no more now (capacity() out, or its host facility failed): the caller
  // carries the transfer out with transfer_batch() instead.
  virtual bool start(BlockTransfer& t) = 0;
  // Starts what start() queued.
  virtual void submit() = 0;
  // Appends each transfer that finished (its result set) to `done`. With `wait`, first waits
  // until one has, if any is out.
  virtual void reap(std::vector<BlockTransfer*>& done, bool wait) = 0;
  // Readable (a non-blocking eventfd) when a transfer may have finished: poll it, read its
  // counter, reap(). The device also reads it to drop a signal it no longer needs.
  virtual int completion_fd() const = 0;
  // Transfers started and not yet given back, at most.
  virtual unsigned capacity() const = 0;
};

// Calls are synchronous and return 0 or an errno value. Offsets and lengths are multiples of
// kSectorSize and lie within size() (the device checks).
class BlockBackend {
 public:
  static constexpr uint32_t kSectorSize = 512;

  virtual ~BlockBackend() = default;

  virtual uint64_t size() const = 0;  // bytes, a multiple of kSectorSize
  // Reads the size again (the host file or device may have grown or shrunk since), rounded
  // down to whole sectors, and returns it; size() returns it from then on. Throws
  // SystemError when the host cannot say. The default: the size never changes.
  virtual uint64_t reread_size() { return size(); }
  virtual bool readonly() const = 0;
  // Transfer the whole of `iov` (host buffers in guest RAM). The entries may be modified.
  virtual int read(uint64_t offset, std::span<iovec> iov) = 0;
  virtual int write(uint64_t offset, std::span<iovec> iov) = 0;
  // Carries out every transfer of `batch`, possibly at the same time and in any order, and
  // sets each one's result. The default runs them one after another with read() and write().
  virtual void transfer_batch(std::span<BlockTransfer> batch);
  // Transfers kept in flight, where the backend has them (nullptr: transfer_batch() only).
  virtual BlockAsync* async() { return nullptr; }
  // Everything written before is on stable storage when this returns 0.
  virtual int flush() = 0;
  // A hint: the range may be deallocated; its contents are unspecified afterwards.
  virtual int discard(uint64_t offset, uint64_t len) = 0;
  // The range reads as zeroes afterwards; `may_unmap` allows deallocating it to get there.
  virtual int write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) = 0;
};

}  // namespace libvmm
