#include "libvmm/virtio/block.hpp"

#include <fmt/format.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>
#include <variant>

#include "iovec_edit.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

namespace {

static_assert(VirtioBlock::kSectorSize == BlockBackend::kSectorSize);
static_assert(VirtioBlock::kMaxBatch <= BlockImage::kUringEntries, "a batch fits one submission");
constexpr uint32_t kMaxErrorLogs = 10;

constexpr uint64_t bit(unsigned n) {
  return 1ull << n;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// VirtioBlock: identity, features, configuration

VirtioBlock::VirtioBlock(std::unique_ptr<BlockBackend> backend, std::string serial)
    : backend_(std::move(backend)), serial_(std::move(serial)) {
  if (!backend_) throw std::invalid_argument("virtio-blk: a backend is needed");
  if (backend_->size() % kSectorSize != 0) {
    throw std::invalid_argument("virtio-blk: backend size is not a multiple of 512");
  }
  if (serial_.size() > kIdBytes) throw std::invalid_argument("virtio-blk: serial is too long");

  // What the device advertises is what parse_block_request() holds requests to (disk_.limits).
  const BlockLimits limits;
  virtio_blk_config config{};
  config.capacity = capacity_sectors();
  config.size_max = limits.size_max;
  config.seg_max = limits.seg_max;
  config.blk_size = kSectorSize;
  if (!backend_->readonly()) {
    config.max_discard_sectors = limits.max_discard_sectors;
    config.max_discard_seg = limits.max_discard_seg;
    config.discard_sector_alignment = kDiscardAlignmentSectors;
    config.max_write_zeroes_sectors = limits.max_write_zeroes_sectors;
    config.max_write_zeroes_seg = limits.max_write_zeroes_seg;
    config.write_zeroes_may_unmap = 1;  // with the unmap flag we punch a hole
  }
  config_.resize(sizeof(config));
  std::memcpy(config_.data(), &config, sizeof(config));
}

VirtioBlock::VirtioBlock(const BlockConfig& config)
    : VirtioBlock(BlockImage::open({config.path, config.readonly, config.direct, config.io}),
                  config.serial) {
  label_ = fmt::format("virtio-blk {}", config.path);
}

uint32_t VirtioBlock::device_id() const {
  return VIRTIO_ID_BLOCK;
}

uint64_t VirtioBlock::device_features() const {
  uint64_t features = bit(VIRTIO_BLK_F_SIZE_MAX) | bit(VIRTIO_BLK_F_SEG_MAX) |
                      bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH);
  if (backend_->readonly()) {
    features |= bit(VIRTIO_BLK_F_RO);
  } else {
    features |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
  }
  return features;
}

void VirtioBlock::read_config(uint32_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset > config_.size() || data.size() > config_.size() - offset) return;
  std::memcpy(data.data(), config_.data() + offset, data.size());
}

void VirtioBlock::activate(VirtioTransport& transport, uint64_t features) {
  transport_ = &transport;
  features_ = features;
  disk_ = {capacity_sectors(), backend_->readonly(), negotiated(VIRTIO_BLK_F_DISCARD),
           negotiated(VIRTIO_BLK_F_WRITE_ZEROES)};
}

void VirtioBlock::reset() {
  transport_ = nullptr;  // requests complete synchronously: nothing is in flight
  features_ = 0;
  disk_ = {};
}

// ---------------------------------------------------------------------------------------------
// VirtioBlock: requests

void VirtioBlock::queue_notify(uint16_t index, Virtqueue& queue) {
  if (index != 0 || transport_ == nullptr) return;
  uint32_t taken = 0;
  uint64_t bytes = 0;  // of host I/O the requests taken ask for
  bool asked = false;  // to be called again (once: if the transport cannot, we drain)
  do {
    queue.disable_notifications();  // no kicks while we drain the queue anyway
    while (true) {
      if (!asked && (taken >= kRequestsPerNotify || bytes >= kBytesPerNotify)) {
        asked = true;
        if (transport_->renotify(0)) {
          // Come back after the event loop's other work; notifications stay off until then.
          finish_batch(queue);
          transport_->signal_used(0);
          return;
        }
      }
      auto chain = queue.pop();
      if (!chain) break;
      ++taken;
      bytes += start(queue, std::move(*chain));
      if (batch_size_ == kMaxBatch) finish_batch(queue);
    }
    finish_batch(queue);
    transport_->signal_used(0);
  } while (queue.enable_notifications());
}

uint64_t VirtioBlock::start(Virtqueue& queue, DescriptorChain chain) {
  Pending& p = batch_[batch_size_];
  p.transfer = false;
  uint64_t bytes = 0;
  const ParsedBlockHeader header = parse_block_header(chain);
  const auto* h = std::get_if<BlockRequestHeader>(&header);
  if (h != nullptr && !h->is_transfer()) {
    // FLUSH covers the writes before it; the rest is rare: no need to overlap them.
    finish_batch(queue);
    const ParsedBlockRequest parsed = parse_block_request(chain, *h, disk_);
    if (const auto* request = std::get_if<BlockRequest>(&parsed)) {
      for (const BlockRange& range : request->segments()) {
        bytes += uint64_t{range.sectors} * kSectorSize;
      }
    }
    complete(queue, chain, carry_out(chain, parsed));
    return bytes;
  }
  if (h == nullptr) {
    p.outcome = refuse(std::get<BlockRequestError>(header));
  } else {
    const ParsedBlockRequest parsed = parse_block_request(chain, *h, disk_);
    if (const auto* error = std::get_if<BlockRequestError>(&parsed)) {
      p.outcome = refuse(*error);
    } else {
      const BlockRequest& request = std::get<BlockRequest>(parsed);
      prepare_transfer(p, chain, request);
      if (p.transfer) bytes = request.data_bytes;
    }
  }
  p.chain.emplace(std::move(chain));
  ++batch_size_;
  return bytes;
}

void VirtioBlock::finish_batch(Virtqueue& queue) {
  const std::span<Pending> batch(batch_.data(), batch_size_);
  batch_size_ = 0;
  transfers_.clear();
  bool wrote = false;
  for (Pending& p : batch) {
    if (!p.transfer) continue;
    transfers_.push_back({p.write, p.sector * kSectorSize, p.iov, 0});
    wrote = wrote || p.write;
  }
  if (!transfers_.empty()) backend_->transfer_batch(transfers_);
  // A driver that did not take FLUSH gets write-through: completed writes are stable
  // (spec §5.2.6.2). One flush covers the whole batch.
  int flush_error = 0;
  if (wrote && !negotiated(VIRTIO_BLK_F_FLUSH)) flush_error = backend_->flush();

  size_t next_transfer = 0;
  for (Pending& p : batch) {
    if (p.transfer) {
      const int err = transfers_[next_transfer++].result;
      const uint64_t len = p.write ? 0 : p.chain->writable_bytes() - 1;
      if (err != 0) {
        p.outcome = io_error(p.write ? "write" : "read", p.sector, err);
      } else if (p.write && flush_error != 0) {
        p.outcome = io_error("flush", flush_error);
      } else {
        p.outcome = {VIRTIO_BLK_S_OK, static_cast<uint32_t>(len)};
      }
    }
    complete(queue, *p.chain, p.outcome);
    p.chain.reset();
  }
}

void VirtioBlock::complete(Virtqueue& queue, const DescriptorChain& chain, Outcome outcome) {
  // The status goes in the last writable byte; without one the driver learns nothing, but
  // still gets its buffers back.
  uint32_t used = 0;
  const uint64_t writable = chain.writable_bytes();
  if (writable > 0 && chain.write_at(writable - 1, std::span(&outcome.status, 1))) {
    used = outcome.data_written + 1;
  }
  queue.push(chain.head(), used);
}

VirtioBlock::Outcome VirtioBlock::carry_out(const DescriptorChain& chain,
                                            const ParsedBlockRequest& parsed) {
  if (const auto* error = std::get_if<BlockRequestError>(&parsed)) return refuse(*error);
  const BlockRequest& request = std::get<BlockRequest>(parsed);
  switch (request.type) {
    case BlockRequestType::flush:
      return flush();
    case BlockRequestType::get_id:
      return get_id(chain);
    case BlockRequestType::discard:
    case BlockRequestType::write_zeroes:
      return discard_or_write_zeroes(request);
    case BlockRequestType::read:
    case BlockRequestType::write:
      break;  // start() batches them
  }
  return {VIRTIO_BLK_S_IOERR, 0};
}

void VirtioBlock::prepare_transfer(Pending& p, const DescriptorChain& chain,
                                   const BlockRequest& request) {
  const bool write = request.type == BlockRequestType::write;
  p.iov.clear();
  if (!chain.iovecs(!write, p.iov)) {
    p.outcome = guest_error(write ? "write buffers are not guest RAM"
                                  : "read buffers are not writable guest RAM");
    return;
  }
  if (write) {
    iov_drop_front(p.iov, kBlockHeaderSize);
  } else {
    iov_drop_back(p.iov, 1);  // the status byte
  }
  p.transfer = true;
  p.write = write;
  p.sector = request.sector;
}

VirtioBlock::Outcome VirtioBlock::flush() {
  // Synchronous: the data is on stable storage before the caller writes the status.
  if (const int err = backend_->flush()) return io_error("flush", err);
  return {VIRTIO_BLK_S_OK, 0};
}

VirtioBlock::Outcome VirtioBlock::get_id(const DescriptorChain& chain) {
  std::array<uint8_t, kIdBytes> id{};  // NUL-padded; no terminator when 20 bytes long
  std::copy(serial_.begin(), serial_.end(), id.begin());
  if (!chain.write_at(0, id)) return guest_error("GET_ID buffer is not writable guest RAM");
  return {VIRTIO_BLK_S_OK, kIdBytes};
}

VirtioBlock::Outcome VirtioBlock::discard_or_write_zeroes(const BlockRequest& request) {
  const bool discard = request.type == BlockRequestType::discard;
  for (const BlockRange& range : request.segments()) {
    const uint64_t offset = range.sector * kSectorSize;
    const uint64_t bytes = uint64_t{range.sectors} * kSectorSize;
    const int err = discard ? backend_->discard(offset, bytes)
                            : backend_->write_zeroes(offset, bytes, range.unmap);
    if (err != 0) return io_error(discard ? "discard" : "write-zeroes", range.sector, err);
  }
  if (!negotiated(VIRTIO_BLK_F_FLUSH)) return flush();  // write-through, as for writes
  return {VIRTIO_BLK_S_OK, 0};
}

VirtioBlock::Outcome VirtioBlock::refuse(const BlockRequestError& error) {
  // What the device does not implement is the driver's to probe, not an error worth a warning.
  if (error.status() == VIRTIO_BLK_S_UNSUPP) {
    log::debug("{}: {}", name(), error.message);
    return {VIRTIO_BLK_S_UNSUPP, 0};
  }
  return guest_error(error.message);
}

VirtioBlock::Outcome VirtioBlock::guest_error(const std::string& message) {
  const uint32_t n = errors_logged_.fetch_add(1, std::memory_order_relaxed);
  if (n < kMaxErrorLogs) log::warn("{}: {}", label_, message);
  if (n + 1 == kMaxErrorLogs) log::warn("{}: further request errors are not logged", label_);
  return {VIRTIO_BLK_S_IOERR, 0};
}

VirtioBlock::Outcome VirtioBlock::io_error(const char* what, uint64_t sector, int err) {
  return guest_error(
      fmt::format("host I/O error: {} at sector {}: {}", what, sector, std::strerror(err)));
}

VirtioBlock::Outcome VirtioBlock::io_error(const char* what, int err) {
  return guest_error(fmt::format("host I/O error: {}: {}", what, std::strerror(err)));
}

}  // namespace libvmm
