// The virtIO block device (virtIO 1.2 §5.2): a disk backed by a BlockBackend, usually a raw
// image (backends/block_image.hpp) given on the command line as
// --disk PATH[,readonly][,direct][,serial=ID][,io=sync|io_uring].
//
// The guest is untrusted: every request is checked by parse_block_request() (header, direction
// of each part, lengths, sector ranges with overflow-safe arithmetic, and the limits the device
// advertises: size_max, seg_max, max_*_sectors, max_*_seg; block_request.hpp) and a bad one
// completes with an error status and a rate-limited log line; guest memory is only reached
// through the validated chain.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/backends/block_backend.hpp"
#include "libvmm/backends/block_image.hpp"
#include "libvmm/virtio/block_request.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

// What one --disk flag asks for.
struct BlockConfig {
  std::string path;
  bool readonly = false;
  bool direct = false;  // O_DIRECT: bypass the host page cache
  std::string serial;   // GET_ID answer: up to 20 printable ASCII characters, may be empty
  BlockIo io = BlockIo::sync;
};

// Parses "PATH[,readonly][,direct][,serial=ID][,io=sync|io_uring]" (the --disk flag, through
// the device registry's virtio_block kind), without looking at the image. Throws UserError
// naming --disk and the spec.
BlockConfig parse_disk_spec(std::string_view spec);

// Requests are carried out inside queue_notify() (under the transport's lock, on the event loop
// or a vCPU thread). Reads and writes are collected into batches of up to kMaxBatch and handed
// to BlockBackend::transfer_batch() together; any other request first completes the batch
// before it. Each request is complete, and a FLUSH is on stable storage, before its status is
// written and its chain returned; nothing stays in flight when queue_notify() returns.
// One notification takes at most kRequestsPerNotify requests, and stops taking more once those
// taken ask for kBytesPerNotify bytes of host I/O (data read or written, sectors discarded or
// zeroed), when the transport can call it again later: a guest that keeps its queue full of
// large requests cannot hold the device's lock (and the event loop) for long, nor starve
// other devices. The bytes of one notification stay below kBytesPerNotify plus one request.
class VirtioBlock final : public VirtioDevice {
 public:
  static constexpr uint32_t kSectorSize = kBlockSectorSize;
  // One request queue; a request with seg_max data buffers plus header and status fits it.
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint32_t kSegMax = kQueueSize - 2;
  static_assert(kSegMax == kBlockSegMax);
  // Bytes per data buffer; a read or write with a larger one is refused (IOERR), so a request
  // moves at most kSegMax * kSizeMax bytes (kMaxRequestBytes, 63.5 MiB).
  static constexpr uint32_t kSizeMax = kBlockSizeMax;
  static constexpr uint64_t kMaxRequestBytes = kBlockMaxRequestBytes;
  // Per-request limits for DISCARD / WRITE_ZEROES: bound the work one request can ask for.
  static constexpr uint32_t kMaxRangeSectors = kBlockMaxRangeSectors;  // 1 GiB per segment
  // WRITE_ZEROES may be written zeroes on the host: 1 MiB per segment (block_request.hpp).
  static constexpr uint32_t kMaxWriteZeroesSectors = kBlockMaxWriteZeroesSectors;
  static constexpr uint32_t kMaxRangeSegments = kBlockMaxRangeSegments;
  static constexpr uint32_t kDiscardAlignmentSectors = 4096 / kSectorSize;
  static constexpr uint32_t kIdBytes = kBlockIdBytes;
  static constexpr size_t kMaxBatch = 64;
  static constexpr uint32_t kRequestsPerNotify = 256;
  static constexpr uint64_t kBytesPerNotify = 64ull << 20;

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
  // Parses a request and adds it to the batch, or (not a read or write) completes the batch
  // and carries the request out at once. Returns the bytes of host I/O it asks for (0 if
  // refused): what counts against kBytesPerNotify.
  uint64_t start(Virtqueue& queue, DescriptorChain chain);
  // Carries out the batch's transfers and returns every chain of the batch to the driver.
  void finish_batch(Virtqueue& queue);
  // Writes the status byte and returns the chain.
  void complete(Virtqueue& queue, const DescriptorChain& chain, Outcome outcome);
  // Fills in `p`'s transfer for a parsed read or write, or sets its error outcome.
  void prepare_transfer(Pending& p, const DescriptorChain& chain, const BlockRequest& request);
  // Carries out a parsed request that is neither read nor write, or refuses a malformed one.
  Outcome carry_out(const DescriptorChain& chain, const ParsedBlockRequest& parsed);
  Outcome flush();
  Outcome get_id(const DescriptorChain& chain);
  Outcome discard_or_write_zeroes(const BlockRequest& request);
  Outcome refuse(const BlockRequestError& error);                // logs (debug or rate-limited) why
  Outcome guest_error(const std::string& message);               // logs (rate-limited); IOERR
  Outcome io_error(const char* what, uint64_t sector, int err);  // host errno; IOERR
  Outcome io_error(const char* what, int err);
  bool negotiated(unsigned feature_bit) const { return features_ & (1ull << feature_bit); }

  const std::unique_ptr<BlockBackend> backend_;
  const std::string serial_;
  std::string label_ = "virtio-blk";  // log lines name the image when there is one
  std::vector<uint8_t> config_;       // struct virtio_blk_config, built once

  // Set between activate() and reset(); only touched under the transport's lock.
  VirtioTransport* transport_ = nullptr;
  uint64_t features_ = 0;
  BlockDisk disk_;  // what requests are checked against
  std::array<Pending, kMaxBatch> batch_;
  size_t batch_size_ = 0;
  std::vector<BlockTransfer> transfers_;  // reused for every batch

  std::atomic<uint32_t> errors_logged_{0};
};

}  // namespace libvmm
