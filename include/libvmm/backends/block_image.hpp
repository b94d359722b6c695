// A BlockBackend on a raw disk image: a regular file or a host block device, locked against a
// second writer, optionally opened with O_DIRECT, read and written with preadv/pwritev or
// through io_uring (io=auto, io=io_uring; docs/PERFORMANCE.md has the measurements): requests
// kept in flight as they come (BlockAsync, for a device's I/O thread), or a batch at a time.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "libvmm/backends/block_backend.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

class UringBatch;

// How a disk image carries out reads and writes.
enum class BlockIo {
  sync,  // preadv/pwritev, one request after another
  // Requests kept in flight through io_uring (async()); a batch (transfer_batch()) submitted
  // together, then awaited.
  io_uring,
  // As io_uring where the host has it, except that a batch of one request goes with
  // preadv/pwritev (a ring round trip only costs a lone request that nothing else waits
  // behind); all of them synchronously where the host has no io_uring.
  automatic,
};

// How to open an image (from a --disk spec or a <virtio_block> element).
struct BlockImageOptions {
  std::string path;
  bool readonly = false;
  bool direct = false;              // O_DIRECT: bypass the host page cache
  BlockIo io = BlockIo::automatic;  // io=auto (docs/PERFORMANCE.md, "io_uring or not")
};

// A flush that failed once fails from then on. Linux reports a writeback error to an open file
// once and may drop the pages it could not write (marked clean), so an fdatasync() that
// succeeds after one that failed does not mean the guest's earlier writes are on stable
// storage: a retried FLUSH must not answer OK.
class FlushErrorLatch {
 public:
  // The result of a flush whose own outcome was `err` (0 or an errno value).
  int after(int err) {
    if (err != 0) {
      failed_.store(true, std::memory_order_relaxed);
      return err;
    }
    return failed_.load(std::memory_order_relaxed) ? EIO : 0;
  }

 private:
  std::atomic<bool> failed_{false};
};

class BlockImage final : public BlockBackend, public BlockAsync {
 public:
  // Transfers one io_uring submission holds: a device batch (VirtioBlock::kMaxBatch). Larger
  // batches go in several rounds.
  static constexpr unsigned kUringEntries = 64;

  // Throws UserError "--disk PATH: reason" (missing file, directory, size not a multiple of
  // 512, image locked by another process, no O_DIRECT support, no io_uring, ...).
  static std::unique_ptr<BlockImage> open(const BlockImageOptions& options);

  uint64_t size() const override { return size_.load(std::memory_order_relaxed); }
  uint64_t reread_size() override;
  bool readonly() const override { return readonly_; }
  int read(uint64_t offset, std::span<iovec> iov) override;
  int write(uint64_t offset, std::span<iovec> iov) override;
  void transfer_batch(std::span<BlockTransfer> batch) override;
  // Through io_uring (io=auto or io=io_uring where the host has it), else nullptr.
  BlockAsync* async() override;
  bool start(BlockTransfer& t) override;
  void submit() override;
  void reap(std::vector<BlockTransfer*>& done, bool wait) override;
  int completion_fd() const override;
  unsigned capacity() const override { return kUringEntries; }
  // How the transfers went so far, for -v's summary and tests. Counted by the one thread that
  // carries them out; read it when that thread is idle.
  struct IoCounts {
    uint64_t uring_batches = 0;    // batches submitted through io_uring
    uint64_t uring_transfers = 0;  // the transfers in them
    uint64_t sync_transfers = 0;   // transfers with preadv/pwritev
    uint64_t started = 0;          // transfers kept in flight through io_uring (async())
    uint64_t redone = 0;  // given back undone by the kernel (EAGAIN, EINTR), done synchronously
  };
  const IoCounts& io_counts() const { return counts_; }
  bool has_uring() const { return uring_ != nullptr; }
  UringBatch* uring_for_test() { return uring_.get(); }
  int flush() override;
  int discard(uint64_t offset, uint64_t len) override;
  int write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) override;
  ~BlockImage() override;

 private:
  BlockImage();
  // With O_DIRECT, requests the host cannot take directly (misaligned guest buffers) go
  // through a second, buffered descriptor of the same file; Linux keeps the two coherent.
  int fd_for(uint64_t offset, std::span<const iovec> iov) const;
  int write_zeroes_by_writing(uint64_t offset, uint64_t len);
  // A transfer's outcome from what the ring says it moved (the rest, if any, synchronously).
  int finish(BlockTransfer& t, int64_t moved);

  UniqueFd fd_;                        // holds the flock; O_DIRECT if asked for
  UniqueFd buffered_fd_;               // only with O_DIRECT
  std::unique_ptr<UringBatch> uring_;  // with io=io_uring, and io=auto where the host has it
  BlockIo io_ = BlockIo::sync;
  IoCounts counts_;
  std::vector<std::pair<void*, int64_t>> finished_;  // reap()'s, capacity reused
  std::atomic<uint64_t> size_{0};  // written by reread_size(), on another thread than I/O
  FlushErrorLatch flush_error_;
  bool readonly_ = false;
  uint32_t dio_mem_align_ = 1;
  uint32_t dio_offset_align_ = 1;
};

}  // namespace libvmm
