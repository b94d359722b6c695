#include "libvmm/virtio/block.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <array>
#include <cstddef>
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

}  // namespace

// ---------------------------------------------------------------------------------------------
// VirtioBlock: identity, features, configuration

VirtioBlock::VirtioBlock(std::unique_ptr<BlockBackend> backend, std::string serial,
                         BlockThreading threading, uint16_t num_queues)
    : backend_(std::move(backend)),
      serial_(std::move(serial)),
      num_queues_(num_queues),
      poll_(threading.io_thread ? threading.poll_max_us : 0),
      finish_poll_(threading.io_thread ? threading.poll_max_us : 0) {
  if (!backend_) throw std::invalid_argument("virtio-blk: a backend is needed");
  if (num_queues_ < 1 || num_queues_ > kMaxQueues) {
    throw std::invalid_argument("virtio-blk: the number of queues is out of range");
  }
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
  config.num_queues = num_queues_;  // read only with VIRTIO_BLK_F_MQ
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

  if (threading.io_thread) {
    async_ = backend_->async();
    if (async_ != nullptr) {
      for (size_t slot = kMaxBatch; slot-- > 0;) free_.push_back(slot);
    }
    io_thread_ = std::make_unique<IoThread>(
        std::move(threading.name), [this] { return serve(); }, std::move(threading.on_thread_start),
        [this] { finish_paused_in_flight(); });
    if (async_ != nullptr) {
      // The thread wakes for a finished transfer as for a notification.
      UniqueFd own(::fcntl(async_->completion_fd(), F_DUPFD_CLOEXEC, 0));
      if (!own) throw_errno(label_ + ": dup of the backend's completion eventfd");
      io_thread_->watch(std::move(own));
    }
  }
}

VirtioBlock::VirtioBlock(const BlockConfig& config, BlockThreading threading)
    : VirtioBlock(
          BlockImage::open({config.path, config.readonly, config.direct, config.io}), config.serial,
          [&] {
            threading.io_thread = config.iothread;
            threading.poll_max_us = config.poll_us;
            return std::move(threading);
          }(),
          config.num_queues) {
  label_ = fmt::format("virtio-blk {}", config.path);
}

VirtioBlock::~VirtioBlock() {
  // Joined, so it starts nothing any more (the object stays: the work may be reading the
  // pointer to it until then).
  if (io_thread_) io_thread_->stop();
  // Nothing may still write into guest memory; the transport (and its rings) may be gone.
  if (async_ != nullptr) finish_in_flight(nullptr);
  const auto* image = dynamic_cast<const BlockImage*>(backend_.get());
  if (image == nullptr || !image->has_uring()) return;
  // Whether the guest kept several requests in flight: what io_uring is for.
  const BlockImage::IoCounts& counts = image->io_counts();
  log::debug(
      "{}: {} requests kept in flight through io_uring, {} with preadv/pwritev, {} through "
      "io_uring in {} batches, {} given back undone and done again",
      label_, counts.started, counts.sync_transfers, counts.uring_transfers, counts.uring_batches,
      counts.redone);
}

uint32_t VirtioBlock::device_id() const {
  return VIRTIO_ID_BLOCK;
}

uint64_t VirtioBlock::device_features() const {
  uint64_t features = feature_bit(VIRTIO_BLK_F_SIZE_MAX) | feature_bit(VIRTIO_BLK_F_SEG_MAX) |
                      feature_bit(VIRTIO_BLK_F_BLK_SIZE) | feature_bit(VIRTIO_BLK_F_FLUSH);
  if (num_queues_ > 1) features |= feature_bit(VIRTIO_BLK_F_MQ);
  if (backend_->readonly()) {
    features |= feature_bit(VIRTIO_BLK_F_RO);
  } else {
    features |= feature_bit(VIRTIO_BLK_F_DISCARD) | feature_bit(VIRTIO_BLK_F_WRITE_ZEROES);
  }
  return features;
}

void VirtioBlock::read_config(uint32_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset > config_.size() || data.size() > config_.size() - offset) return;
  std::memcpy(data.data(), config_.data() + offset, data.size());
  // The capacity as it is now (rescan() changes it on another thread): the part asked for.
  const uint64_t capacity = capacity_sectors();
  constexpr uint32_t kCapacityEnd = sizeof(capacity);
  static_assert(offsetof(virtio_blk_config, capacity) == 0);
  for (uint32_t at = offset; at < kCapacityEnd && at - offset < data.size(); ++at) {
    data[at - offset] = static_cast<uint8_t>(capacity >> (8 * at));  // little-endian
  }
}

bool VirtioBlock::rescan() {
  const uint64_t before = capacity_sectors();
  uint64_t after = before;
  try {
    after = backend_->reread_size() / kSectorSize;
  } catch (const SystemError& e) {
    log::warn("{}: keeps {} sectors: {}", label_, before, e.what());
    return false;
  }
  if (after == before) return false;
  // The driver learns it from the config interrupt; requests are checked against it from the
  // next batch on (take()). A shrunk disk's requests past the end get IOERR.
  log::info("{}: {} sectors now ({} before)", label_, after, before);
  return true;
}

void VirtioBlock::activate(VirtioTransport& transport, uint64_t features) {
  features_ = features;
  disk_ = {capacity_sectors(), backend_->readonly(), negotiated(VIRTIO_BLK_F_DISCARD),
           negotiated(VIRTIO_BLK_F_WRITE_ZEROES)};
  ++epoch_;
  transport_ = &transport;
}

void VirtioBlock::reset() {
  // Without an I/O thread nothing is in flight. With one, the transport paused it first
  // (pause_io()); should a round still be in flight, the epoch keeps its chains from the rings
  // the driver sets up next.
  transport_ = nullptr;
  ++epoch_;
  features_ = 0;
  disk_ = {};
}

void VirtioBlock::queue_reset(uint16_t index) {
  static_cast<void>(index);
  ++epoch_;  // as for reset(): a round in flight returns nothing to the new ring
}

// ---------------------------------------------------------------------------------------------
// VirtioBlock: where requests are carried out

void VirtioBlock::queue_notify(uint16_t index, Virtqueue& queue) {
  if (index >= num_queues_ || transport_ == nullptr) return;
  if (io_thread_) return io_thread_->kick();
  VirtioTransport& transport = *transport_;
  uint32_t taken = 0;
  uint64_t bytes = 0;  // of host I/O the requests taken ask for
  bool asked = false;  // to be called again (once: if the transport cannot, we drain)
  do {
    queue.disable_notifications();  // no kicks while we drain the queue anyway
    while (true) {
      if (!asked && (taken >= kRequestsPerNotify || bytes >= kBytesPerNotify)) {
        asked = true;
        if (transport.renotify(index)) {
          // Come back after the event loop's other work; notifications stay off until then.
          transport.signal_used(index);
          return;
        }
      }
      const uint32_t max_requests =
          asked ? kMaxBatch : std::min<uint32_t>(kMaxBatch, kRequestsPerNotify - taken);
      const uint64_t max_bytes = asked ? UINT64_MAX : kBytesPerNotify - bytes;
      const Taken round = take(queue, max_requests, max_bytes);
      if (round.requests == 0) break;
      taken += round.requests;
      bytes += round.bytes;
      execute([&](size_t first, size_t last) { give_back(queue, first, last); });
    }
    transport.signal_used(index);
  } while (queue.enable_notifications());
}

bool VirtioBlock::serve() {
  VirtioTransport* transport = transport_.load();
  if (async_ != nullptr) return serve_in_flight(transport);
  if (transport == nullptr) return false;
  poll_.woke();
  while (!io_thread_->yield_requested()) {
    bool served = false;  // some queue had requests in this pass
    bool gone = false;    // reset since (when the transport did not pause us)
    // One round of each queue per pass: no queue waits for another's backlog.
    for (uint16_t q = 0; q < num_queues_ && !gone; ++q) {
      uint64_t epoch = 0;
      const bool live = transport->with_queues([&](std::span<Virtqueue> queues) {
        if (transport_ != transport || queues.size() <= q) {
          gone = true;
          return;
        }
        epoch = epoch_;
        if (!poll_.polling()) queues[q].disable_notifications();
        take(queues[q], kMaxBatch, kBytesPerNotify);
      });
      gone = gone || !live;
      if (batch_size_ == 0) continue;
      served = true;
      // Host I/O without the transport's lock; each part of the round is returned under it.
      bool stale = false;  // a reset came in between (only when the transport did not pause us)
      execute([&](size_t first, size_t last) {
        if (stale) return;
        stale = true;
        transport->with_queues([&](std::span<Virtqueue> queues) {
          if (transport_ != transport || epoch_ != epoch || queues.size() <= q) return;
          give_back(queues[q], first, last);
          transport->signal_used(q);
          stale = false;
        });
      });
      if (stale) drop();
      if (io_thread_->yield_requested()) return true;
    }
    if (gone) return false;
    if (served) {
      poll_.found();
      continue;
    }
    // Empty queues are looked at again (notifications stay off), or we turn them on.
    if (poll_.keep_polling()) continue;
    const std::optional<bool> more = notifications_on(*transport);
    if (!more) return false;
    if (!*more) {
      poll_.sleeping();
      return false;
    }
  }
  // Paused or ending: the next round after resume_io(). Notifications may still be off (a
  // poll cut short): that round looks at the queues first and turns them on when empty.
  return true;
}

std::optional<bool> VirtioBlock::notifications_on(VirtioTransport& transport) {
  bool more = false;
  const bool live = transport.with_queues([&](std::span<Virtqueue> queues) {
    if (transport_ != &transport) return;
    for (uint16_t q = 0; q < num_queues_ && q < queues.size(); ++q) {
      more = queues[q].enable_notifications() || more;
    }
  });
  if (!live) return std::nullopt;
  return more;
}

void VirtioBlock::pause_io() {
  if (!io_thread_) return;
  // The thread finishes and returns what it left in flight before it parks (its on_pause:
  // the host I/O stays on the thread allowed to make it, never a vCPU's).
  io_thread_->pause();
  // Only a thread that had already ended leaves anything (teardown, on the main thread).
  finish_paused_in_flight();
}

void VirtioBlock::finish_paused_in_flight() {
  if (async_ == nullptr) return;
  // Before the pauser changes the rings (one finisher at a time).
  const std::lock_guard lock(pause_mutex_);
  finish_in_flight(transport_.load());
}

void VirtioBlock::resume_io() {
  if (io_thread_) io_thread_->resume();
}

bool VirtioBlock::watch_queue_notify(uint16_t index, int eventfd) {
  if (index >= num_queues_ || !io_thread_) return false;
  UniqueFd own(::fcntl(eventfd, F_DUPFD_CLOEXEC, 0));
  if (!own) throw_errno(label_ + ": dup of a queue notify eventfd");
  io_thread_->watch(std::move(own));
  return true;
}

void VirtioBlock::wait_idle() {
  if (!io_thread_) return;
  while (true) {
    io_thread_->wait_idle();
    const unsigned in_flight = in_flight_.load();
    if (in_flight == 0) return;
    in_flight_.wait(in_flight);  // a finished transfer wakes the thread, which returns it
  }
}

// ---------------------------------------------------------------------------------------------
// VirtioBlock: a round of requests

VirtioBlock::Taken VirtioBlock::take(Virtqueue& queue, uint32_t max_requests, uint64_t max_bytes) {
  refresh_disk();
  Taken taken;
  while (batch_size_ < std::min<size_t>(max_requests, kMaxBatch) && taken.bytes < max_bytes) {
    auto chain = queue.pop();
    if (!chain) break;
    Pending& p = batch_[batch_size_++];
    p.chain.emplace(std::move(*chain));
    taken.bytes += parse(p);
    ++taken.requests;
  }
  return taken;
}

void VirtioBlock::refresh_disk() {
  write_through_ = !negotiated(VIRTIO_BLK_F_FLUSH);
  disk_.capacity_sectors = capacity_sectors();
}

uint64_t VirtioBlock::parse(Pending& p) {
  p.step = Pending::Step::done;
  const ParsedBlockRequest parsed = parse_block_request(*p.chain, disk_);
  if (const auto* error = std::get_if<BlockRequestError>(&parsed)) {
    p.outcome = refuse(*error);
    return 0;
  }
  const BlockRequest& request = std::get<BlockRequest>(parsed);
  switch (request.type) {
    case BlockRequestType::read:
    case BlockRequestType::write:
      prepare_transfer(p, *p.chain, request);
      return p.step == Pending::Step::transfer ? request.data_bytes : 0;
    case BlockRequestType::flush:
    case BlockRequestType::get_id:
    case BlockRequestType::discard:
    case BlockRequestType::write_zeroes:
      break;
  }
  p.step = Pending::Step::other;
  p.request = request;
  uint64_t bytes = 0;
  for (const BlockRange& range : request.segments()) {
    bytes += uint64_t{range.sectors} * kSectorSize;
  }
  return bytes;
}

void VirtioBlock::execute(const std::function<void(size_t, size_t)>& done) {
  // Reads and writes go to the backend together, up to the next other request, and are
  // returned before it is carried out: a FLUSH covers the writes before it.
  size_t first = 0;  // the first request not yet returned
  for (size_t i = 0; i < batch_size_; ++i) {
    if (batch_[i].step != Pending::Step::other) continue;
    if (i > first) {
      run_transfers(first, i);
      done(first, i);
      first = i;
    }
    batch_[i].outcome = carry_out(*batch_[i].chain, batch_[i].request);
  }
  if (first < batch_size_) {
    run_transfers(first, batch_size_);
    done(first, batch_size_);
  }
  batch_size_ = 0;
}

void VirtioBlock::run_transfers(size_t first, size_t last) {
  transfers_.clear();
  bool wrote = false;
  for (size_t i = first; i < last; ++i) {
    const Pending& p = batch_[i];
    if (p.step != Pending::Step::transfer) continue;
    transfers_.push_back({p.write, p.sector * kSectorSize, batch_[i].iov, 0});
    wrote = wrote || p.write;
  }
  if (transfers_.empty()) return write_statuses(first, last);
  backend_->transfer_batch(transfers_);
  // A driver that did not take FLUSH gets write-through: completed writes are stable
  // (spec §5.2.6.2). One flush covers the whole batch.
  int flush_error = 0;
  if (wrote && write_through_) flush_error = backend_->flush();

  size_t next_transfer = 0;
  for (size_t i = first; i < last; ++i) {
    Pending& p = batch_[i];
    if (p.step != Pending::Step::transfer) continue;
    p.outcome = transfer_outcome(p, transfers_[next_transfer++].result, flush_error);
  }
  write_statuses(first, last);
}

VirtioBlock::Outcome VirtioBlock::transfer_outcome(const Pending& p, int err, int flush_error) {
  if (err != 0) return io_error(p.write ? "write" : "read", p.sector, err);
  if (p.write && flush_error != 0) return io_error("flush", flush_error);
  const uint64_t len = p.write ? 0 : p.chain->writable_bytes() - 1;
  return {VIRTIO_BLK_S_OK, static_cast<uint32_t>(len)};
}

void VirtioBlock::write_status(Pending& p) {
  // The status goes in the last writable byte; without one the driver learns nothing, but
  // still gets its buffers back. The used length counts bytes written from the first writable
  // one on (§2.7.8.2), so the status counts only when the data before it filled the gap: an
  // error reply to a read says 0, not 1.
  const uint64_t writable = p.chain->writable_bytes();
  p.used = 0;
  if (writable > 0 && p.chain->write_at(writable - 1, std::span(&p.outcome.status, 1))) {
    p.used = p.outcome.data_written + 1 == writable ? static_cast<uint32_t>(writable)
                                                    : p.outcome.data_written;
  }
}

void VirtioBlock::write_statuses(size_t first, size_t last) {
  for (size_t i = first; i < last; ++i) write_status(batch_[i]);
}

void VirtioBlock::give_back(Virtqueue& queue, size_t first, size_t last) {
  for (size_t i = first; i < last; ++i) {
    queue.push(batch_[i].chain->head(), batch_[i].used);
    batch_[i].chain.reset();
  }
}

void VirtioBlock::drop() {
  for (Pending& p : batch_) p.chain.reset();
  batch_size_ = 0;
}

// ---------------------------------------------------------------------------------------------
// VirtioBlock: requests

VirtioBlock::Outcome VirtioBlock::carry_out(const DescriptorChain& chain,
                                            const BlockRequest& request) {
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
      break;  // parse() made them transfers
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
  p.step = Pending::Step::transfer;
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
  if (write_through_) return flush();  // write-through, as for writes
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
  request_errors_.warn(label_, message);
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
