// Where a virtIO block device's bytes live on the host. BlockImage (block_image.hpp) keeps them
// in a raw image file or host block device; tests keep them in host memory.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>

namespace libvmm {

// One read or write of a batch handed to BlockBackend::transfer_batch().
struct BlockTransfer {
  bool write = false;
  uint64_t offset = 0;
  std::span<iovec> iov;  // host buffers in guest RAM; the backend may modify the entries
  int result = 0;        // set by transfer_batch(): 0 or an errno value
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
  // Everything written before is on stable storage when this returns 0.
  virtual int flush() = 0;
  // A hint: the range may be deallocated; its contents are unspecified afterwards.
  virtual int discard(uint64_t offset, uint64_t len) = 0;
  // The range reads as zeroes afterwards; `may_unmap` allows deallocating it to get there.
  virtual int write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) = 0;
};

}  // namespace libvmm
