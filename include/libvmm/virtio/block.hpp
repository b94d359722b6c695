// The virtIO block device (virtIO 1.2 §5.2): a disk backed by a raw image file or host block
// device, given on the command line as --disk PATH[,readonly][,direct][,serial=ID].
//
// The guest is untrusted: every request is checked (header, direction of each part, lengths,
// sector ranges with overflow-safe arithmetic) and a bad one completes with an error status
// and a rate-limited log line; guest memory is only reached through the validated chain.
#pragma once

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/unique_fd.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

class UringBatch;

// How a disk image carries out reads and writes (docs/PERFORMANCE.md has the measurements).
enum class BlockIo {
  sync,      // preadv/pwritev, one request after another
  io_uring,  // the requests of one queue notification submitted together, then awaited
};

// What one --disk flag asks for.
struct BlockConfig {
  std::string path;
  bool readonly = false;
  bool direct = false;  // O_DIRECT: bypass the host page cache
  std::string serial;   // GET_ID answer: up to 20 printable ASCII characters, may be empty
  BlockIo io = BlockIo::sync;
};

// Parses "PATH[,readonly][,direct][,serial=ID][,io=sync|io_uring]". Throws UserError naming
// --disk and the spec.
BlockConfig parse_disk_spec(std::string_view spec);

// One read or write of a batch handed to BlockBackend::transfer_batch().
struct BlockTransfer {
  bool write = false;
  uint64_t offset = 0;
  std::span<iovec> iov;  // host buffers in guest RAM; the backend may modify the entries
  int result = 0;        // set by transfer_batch(): 0 or an errno value
};

// Where a block device's bytes live. Calls are synchronous and return 0 or an errno value.
// Offsets and lengths are multiples of 512 and lie within size() (the device checks).
class BlockBackend {
 public:
  virtual ~BlockBackend() = default;

  virtual uint64_t size() const = 0;  // bytes, a multiple of 512
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

// A raw image file (or host block device), locked against a second writer.
class BlockImage final : public BlockBackend {
 public:
  // Throws UserError "--disk PATH: reason" (missing file, directory, size not a multiple of
  // 512, image locked by another process, no O_DIRECT support, ...).
  static std::unique_ptr<BlockImage> open(const BlockConfig& config);

  uint64_t size() const override { return size_; }
  bool readonly() const override { return readonly_; }
  int read(uint64_t offset, std::span<iovec> iov) override;
  int write(uint64_t offset, std::span<iovec> iov) override;
  void transfer_batch(std::span<BlockTransfer> batch) override;
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

  UniqueFd fd_;                        // holds the flock; O_DIRECT if asked for
  UniqueFd buffered_fd_;               // only with O_DIRECT
  std::unique_ptr<UringBatch> uring_;  // only with io=io_uring
  uint64_t size_ = 0;
  bool readonly_ = false;
  uint32_t dio_mem_align_ = 1;
  uint32_t dio_offset_align_ = 1;
};

// Requests are carried out inside queue_notify() (under the transport's lock, on the event loop
// or a vCPU thread). Reads and writes are collected into batches of up to kMaxBatch and handed
// to BlockBackend::transfer_batch() together; any other request first completes the batch
// before it. Each request is complete, and a FLUSH is on stable storage, before its status is
// written and its chain returned; nothing stays in flight when queue_notify() returns.
// One notification handles at most kRequestsPerNotify requests when the transport can call
// it again later, so a guest that keeps its queue full cannot starve other devices.
class VirtioBlock final : public VirtioDevice {
 public:
  static constexpr uint32_t kSectorSize = 512;
  // One request queue; a request with seg_max data buffers plus header and status fits it.
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint32_t kSegMax = kQueueSize - 2;
  static constexpr uint32_t kSizeMax = 1u << 20;  // bytes per data buffer (advisory)
  // Per-request limits for DISCARD / WRITE_ZEROES: bound the work one request can ask for.
  static constexpr uint32_t kMaxRangeSectors = (1u << 30) / kSectorSize;  // 1 GiB per segment
  static constexpr uint32_t kMaxRangeSegments = 32;
  static constexpr uint32_t kDiscardAlignmentSectors = 4096 / kSectorSize;
  static constexpr uint32_t kIdBytes = 20;
  static constexpr size_t kMaxBatch = 64;
  static constexpr uint32_t kRequestsPerNotify = 256;

  // `serial` is what GET_ID returns (at most kIdBytes; parse_disk_spec checks it).
  VirtioBlock(std::unique_ptr<BlockBackend> backend, std::string serial);
  // Opens the image named by a parsed --disk spec.
  explicit VirtioBlock(const BlockConfig& config);

  std::string name() const override { return "virtio-blk"; }
  uint32_t device_id() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  uint32_t config_size() const override { return static_cast<uint32_t>(config_.size()); }
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  void activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  void reset() override;

  uint64_t capacity_sectors() const { return backend_->size() / kSectorSize; }

 private:
  struct Outcome {
    uint8_t status;
    uint32_t data_written;  // bytes of data written into the guest's buffers
  };
  // A request taken from the queue, waiting for the batch it is part of to be carried out.
  struct Pending {
    std::optional<DescriptorChain> chain;
    Outcome outcome{};
    bool transfer = false;  // a read or write, still to be done; else `outcome` is final
    bool write = false;
    uint64_t sector = 0;
    std::vector<iovec> iov;  // the data buffers of a transfer (capacity reused)
  };
  // Checks a request and adds it to the batch, or (not a read or write) completes the batch
  // and carries the request out at once.
  void start(Virtqueue& queue, DescriptorChain chain);
  // Carries out the batch's transfers and returns every chain of the batch to the driver.
  void finish_batch(Virtqueue& queue);
  // Writes the status byte and returns the chain.
  void complete(Virtqueue& queue, const DescriptorChain& chain, Outcome outcome);
  // Checks a read (write) and fills in `p`'s transfer, or sets its error outcome.
  void prepare_read(Pending& p, const DescriptorChain& chain, uint64_t sector);
  void prepare_write(Pending& p, const DescriptorChain& chain, uint64_t sector);
  // A request that is neither read nor write.
  Outcome handle_other(const DescriptorChain& chain, uint32_t type);
  Outcome flush();
  Outcome get_id(const DescriptorChain& chain);
  Outcome discard_or_write_zeroes(const DescriptorChain& chain, uint32_t type);
  // True if [sector, sector + sectors) lies within the disk (no overflow for any inputs).
  bool in_range(uint64_t sector, uint64_t sectors) const;
  bool negotiated(unsigned feature_bit) const { return features_ & (1ull << feature_bit); }
  Outcome guest_error(const std::string& message);               // logs (rate-limited); IOERR
  Outcome io_error(const char* what, uint64_t sector, int err);  // host errno; IOERR
  Outcome io_error(const char* what, int err);

  const std::unique_ptr<BlockBackend> backend_;
  const std::string serial_;
  std::string label_ = "virtio-blk";  // log lines name the image when there is one
  std::vector<uint8_t> config_;       // struct virtio_blk_config, built once

  // Set between activate() and reset(); only touched under the transport's lock.
  VirtioTransport* transport_ = nullptr;
  uint64_t features_ = 0;
  std::array<Pending, kMaxBatch> batch_;
  size_t batch_size_ = 0;
  std::vector<BlockTransfer> transfers_;  // reused for every batch

  std::atomic<uint32_t> errors_logged_{0};
};

}  // namespace libvmm
