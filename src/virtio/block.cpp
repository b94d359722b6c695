#include "libvmm/virtio/block.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>

#include "block_uring.hpp"
#include "iovec_edit.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

namespace {

// The ABI structures are little-endian, like every host we build for.
static_assert(sizeof(virtio_blk_outhdr) == 16 && sizeof(virtio_blk_discard_write_zeroes) == 16);
constexpr uint64_t kHeaderSize = sizeof(virtio_blk_outhdr);
constexpr uint32_t kMaxErrorLogs = 10;

constexpr uint64_t bit(unsigned n) {
  return 1ull << n;
}

template <GuestPod T>
std::span<uint8_t> bytes_of(T* objects, size_t count) {
  return {reinterpret_cast<uint8_t*>(objects), sizeof(T) * count};
}

// Calls io(iov, count, offset) (preadv/pwritev) until all of `iov` is transferred: the host may
// move less than asked (signals, its 2 GiB per-call limit) and takes at most IOV_MAX buffers.
template <typename Io>
int transfer(std::span<iovec> iov, uint64_t offset, Io&& io) {
  size_t first = 0;
  while (first < iov.size()) {
    if (iov[first].iov_len == 0) {
      ++first;
      continue;
    }
    const int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    const ssize_t n = io(iov.data() + first, count, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // end of file: the image shrank under us
    offset += static_cast<uint64_t>(n);
    for (size_t left = static_cast<size_t>(n); left > 0;) {
      iovec& v = iov[first];
      const size_t step = std::min(left, v.iov_len);
      v.iov_base = static_cast<uint8_t*>(v.iov_base) + step;
      v.iov_len -= step;
      left -= step;
      if (v.iov_len == 0) ++first;
    }
  }
  return 0;
}

bool is_unsupported(int err) {
  return err == EOPNOTSUPP || err == ENOSYS;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// --disk PATH[,readonly][,direct][,serial=ID]

BlockConfig parse_disk_spec(std::string_view spec) {
  auto fail = [&](const std::string& why) {
    return UserError(fmt::format("--disk {}: {}", spec.empty() ? "''" : spec, why));
  };
  BlockConfig config;
  size_t comma = spec.find(',');
  config.path = spec.substr(0, comma);
  if (config.path.empty()) throw fail("missing image path");
  while (comma != std::string_view::npos) {
    const size_t start = comma + 1;
    comma = spec.find(',', start);
    const std::string_view option =
        spec.substr(start, comma == std::string_view::npos ? comma : comma - start);
    if (option == "readonly") {
      config.readonly = true;
    } else if (option == "direct") {
      config.direct = true;
    } else if (option == "io=sync") {
      config.io = BlockIo::sync;
    } else if (option == "io=io_uring") {
      config.io = BlockIo::io_uring;
    } else if (option.starts_with("serial=")) {
      config.serial = option.substr(std::strlen("serial="));
      if (config.serial.size() > VirtioBlock::kIdBytes) {
        throw fail(fmt::format("serial '{}' is longer than {} characters", config.serial,
                               VirtioBlock::kIdBytes));
      }
      for (const char c : config.serial) {
        if (c < 0x20 || c > 0x7e) throw fail("serial must be printable ASCII");
      }
    } else {
      throw fail(fmt::format(
          "unknown option '{}' (expected readonly, direct, serial=ID, io=sync or io=io_uring)",
          option));
    }
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// BlockBackend

void BlockBackend::transfer_batch(std::span<BlockTransfer> batch) {
  for (BlockTransfer& t : batch) {
    t.result = t.write ? write(t.offset, t.iov) : read(t.offset, t.iov);
  }
}

// ---------------------------------------------------------------------------------------------
// BlockImage

std::unique_ptr<BlockImage> BlockImage::open(const BlockConfig& config) {
  auto fail = [&](std::string_view why) {
    return UserError(fmt::format("--disk {}: {}", config.path, why));
  };
  // O_NONBLOCK only so that opening a FIFO by mistake cannot hang; cleared below.
  const int flags = (config.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
  UniqueFd fd(::open(config.path.c_str(), flags | (config.direct ? O_DIRECT : 0)));
  if (!fd) {
    const int err = errno;
    if (err == EISDIR) throw fail("is a directory");
    if (err == EINVAL && config.direct) {
      throw fail("the file system does not support direct I/O (drop ',direct')");
    }
    if ((err == EACCES || err == EROFS || err == EPERM) && !config.readonly) {
      throw fail(fmt::format("{} (add ',readonly' to use it read-only)", std::strerror(err)));
    }
    throw fail(std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw fail(std::strerror(errno));

  auto image = std::unique_ptr<BlockImage>(new BlockImage());
  image->readonly_ = config.readonly;
  if (S_ISDIR(st.st_mode)) throw fail("is a directory");
  if (S_ISREG(st.st_mode)) {
    image->size_ = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd.get(), BLKGETSIZE64, &image->size_) != 0) throw fail(std::strerror(errno));
  } else {
    throw fail("not a regular file or block device");
  }
  if (image->size_ % VirtioBlock::kSectorSize != 0) {
    throw fail(fmt::format("size {} bytes is not a multiple of {}", image->size_,
                           VirtioBlock::kSectorSize));
  }
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK) != 0) {
    throw fail(std::strerror(errno));
  }
  // Two VMs writing one image corrupt it; readers may share it with other readers.
  if (::flock(fd.get(), (config.readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) throw fail("in use by another process");
    throw fail(fmt::format("cannot lock the image: {}", std::strerror(errno)));
  }

  if (config.direct) {
    // Alignment O_DIRECT needs for buffers and offsets; 4 KiB if the host does not say.
    uint32_t mem_align = 4096;
    uint32_t offset_align = 4096;
    struct statx stx {};
    if (::statx(fd.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN)) {
      if (stx.stx_dio_offset_align == 0) throw fail("the file does not support direct I/O");
      mem_align = stx.stx_dio_mem_align;
      offset_align = stx.stx_dio_offset_align;
    } else if (int block_size = 0;
               S_ISBLK(st.st_mode) && ::ioctl(fd.get(), BLKSSZGET, &block_size) == 0) {
      mem_align = offset_align = static_cast<uint32_t>(block_size);
    }
    image->dio_mem_align_ = std::max(mem_align, 1u);
    image->dio_offset_align_ = std::max(offset_align, 1u);
    image->buffered_fd_ = UniqueFd(::open(config.path.c_str(), flags & ~O_NONBLOCK));
    if (!image->buffered_fd_) throw fail(std::strerror(errno));
  }
  if (config.io == BlockIo::io_uring) {
    image->uring_ = UringBatch::create(VirtioBlock::kMaxBatch);
    if (!image->uring_) throw fail("io_uring is not available on this host (use io=sync)");
  }
  image->fd_ = std::move(fd);
  return image;
}

BlockImage::BlockImage() = default;
BlockImage::~BlockImage() = default;

int BlockImage::fd_for(uint64_t offset, std::span<const iovec> iov) const {
  if (!buffered_fd_) return fd_.get();
  bool aligned = offset % dio_offset_align_ == 0;
  for (const iovec& v : iov) {
    aligned = aligned && reinterpret_cast<uintptr_t>(v.iov_base) % dio_mem_align_ == 0 &&
              v.iov_len % dio_offset_align_ == 0;
  }
  return aligned ? fd_.get() : buffered_fd_.get();
}

int BlockImage::read(uint64_t offset, std::span<iovec> iov) {
  const int fd = fd_for(offset, iov);
  return transfer(iov, offset,
                  [fd](const iovec* v, int n, off_t off) { return ::preadv(fd, v, n, off); });
}

int BlockImage::write(uint64_t offset, std::span<iovec> iov) {
  if (readonly_) return EROFS;
  const int fd = fd_for(offset, iov);
  return transfer(iov, offset,
                  [fd](const iovec* v, int n, off_t off) { return ::pwritev(fd, v, n, off); });
}

void BlockImage::transfer_batch(std::span<BlockTransfer> batch) {
  if (!uring_) return BlockBackend::transfer_batch(batch);
  std::vector<UringBatch::Op> ops;
  ops.reserve(batch.size());
  for (BlockTransfer& t : batch) {
    t.result = 0;
    if (t.write && readonly_) {
      t.result = EROFS;
      continue;
    }
    ops.push_back({fd_for(t.offset, t.iov), t.write, t.offset, t.iov, 0, &t});
  }
  uring_->run(ops);
  for (const UringBatch::Op& op : ops) {
    BlockTransfer& t = *static_cast<BlockTransfer*>(op.user);
    if (op.result < 0) {
      t.result = -op.result;
      continue;
    }
    // The host may move less than asked; the rest goes the synchronous way.
    uint64_t done = static_cast<uint64_t>(op.result);
    uint64_t total = 0;
    for (const iovec& v : t.iov) total += v.iov_len;
    if (done == total) continue;
    if (done == 0) {
      t.result = EIO;  // end of file: the image shrank under us
      continue;
    }
    std::vector<iovec> rest(t.iov.begin(), t.iov.end());
    iov_drop_front(rest, done);
    t.result = t.write ? write(t.offset + done, rest) : read(t.offset + done, rest);
  }
}

int BlockImage::flush() {
  // One inode: syncing through either descriptor covers writes made through both.
  return ::fdatasync(fd_.get()) == 0 ? 0 : errno;
}

int BlockImage::discard(uint64_t offset, uint64_t len) {
  if (readonly_) return EROFS;
  if (len == 0) return 0;
  const int rc = ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             static_cast<off_t>(offset), static_cast<off_t>(len));
  if (rc == 0 || is_unsupported(errno)) return 0;  // a hint: nothing to do without holes
  return errno;
}

int BlockImage::write_zeroes(uint64_t offset, uint64_t len, bool may_unmap) {
  if (readonly_) return EROFS;
  if (len == 0) return 0;
  const auto off = static_cast<off_t>(offset);
  const auto size = static_cast<off_t>(len);
  // A hole reads as zeroes; ZERO_RANGE keeps the blocks allocated (unwritten extents).
  if (may_unmap &&
      ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, size) == 0) {
    return 0;
  }
  if (::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, size) == 0) return 0;
  if (!is_unsupported(errno) && errno != EINVAL) return errno;
  return write_zeroes_by_writing(offset, len);
}

int BlockImage::write_zeroes_by_writing(uint64_t offset, uint64_t len) {
  static const std::array<uint8_t, 64 * 1024> zeroes{};
  // The buffered descriptor takes any buffer; without O_DIRECT there is only one.
  const int fd = buffered_fd_ ? buffered_fd_.get() : fd_.get();
  while (len > 0) {
    const uint64_t chunk = std::min<uint64_t>(len, zeroes.size());
    iovec v{const_cast<uint8_t*>(zeroes.data()), chunk};  // pwritev only reads it
    const int err = transfer({&v, 1}, offset, [fd](const iovec* iov, int n, off_t off) {
      return ::pwritev(fd, iov, n, off);
    });
    if (err != 0) return err;
    offset += chunk;
    len -= chunk;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// VirtioBlock: identity, features, configuration

VirtioBlock::VirtioBlock(std::unique_ptr<BlockBackend> backend, std::string serial)
    : backend_(std::move(backend)), serial_(std::move(serial)) {
  if (!backend_) throw std::invalid_argument("virtio-blk: a backend is needed");
  if (backend_->size() % kSectorSize != 0) {
    throw std::invalid_argument("virtio-blk: backend size is not a multiple of 512");
  }
  if (serial_.size() > kIdBytes) throw std::invalid_argument("virtio-blk: serial is too long");

  virtio_blk_config config{};
  config.capacity = capacity_sectors();
  config.size_max = kSizeMax;
  config.seg_max = kSegMax;
  config.blk_size = kSectorSize;
  if (!backend_->readonly()) {
    config.max_discard_sectors = kMaxRangeSectors;
    config.max_discard_seg = kMaxRangeSegments;
    config.discard_sector_alignment = kDiscardAlignmentSectors;
    config.max_write_zeroes_sectors = kMaxRangeSectors;
    config.max_write_zeroes_seg = kMaxRangeSegments;
    config.write_zeroes_may_unmap = 1;  // with the unmap flag we punch a hole
  }
  config_.resize(sizeof(config));
  std::memcpy(config_.data(), &config, sizeof(config));
}

VirtioBlock::VirtioBlock(const BlockConfig& config)
    : VirtioBlock(BlockImage::open(config), config.serial) {
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
}

void VirtioBlock::reset() {
  transport_ = nullptr;  // requests complete synchronously: nothing is in flight
  features_ = 0;
}

// ---------------------------------------------------------------------------------------------
// VirtioBlock: requests

void VirtioBlock::queue_notify(uint16_t index, Virtqueue& queue) {
  if (index != 0 || transport_ == nullptr) return;
  uint32_t taken = 0;
  do {
    queue.disable_notifications();  // no kicks while we drain the queue anyway
    while (true) {
      if (taken == kRequestsPerNotify && transport_->renotify(0)) {
        // Come back after the event loop's other work; notifications stay off until then.
        finish_batch(queue);
        transport_->signal_used(0);
        return;
      }
      auto chain = queue.pop();
      if (!chain) break;
      ++taken;
      start(queue, std::move(*chain));
      if (batch_size_ == kMaxBatch) finish_batch(queue);
    }
    finish_batch(queue);
    transport_->signal_used(0);
  } while (queue.enable_notifications());
}

void VirtioBlock::start(Virtqueue& queue, DescriptorChain chain) {
  Pending& p = batch_[batch_size_];
  p.transfer = false;
  p.outcome = {VIRTIO_BLK_S_IOERR, 0};
  virtio_blk_outhdr header{};
  if (chain.writable_bytes() == 0) {
    p.outcome = guest_error("request without a device-writable status byte; not carried out");
  } else if (chain.readable_bytes() < kHeaderSize || !chain.read_at(0, bytes_of(&header, 1))) {
    p.outcome = guest_error(fmt::format("request header needs {} device-readable bytes, got {}",
                                        kHeaderSize, chain.readable_bytes()));
  } else if (header.type == VIRTIO_BLK_T_IN) {
    prepare_read(p, chain, header.sector);
  } else if (header.type == VIRTIO_BLK_T_OUT) {
    prepare_write(p, chain, header.sector);
  } else {
    // FLUSH covers the writes before it; the rest is rare: no need to overlap them.
    finish_batch(queue);
    complete(queue, chain, handle_other(chain, header.type));
    return;
  }
  p.chain.emplace(std::move(chain));
  ++batch_size_;
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

VirtioBlock::Outcome VirtioBlock::handle_other(const DescriptorChain& chain, uint32_t type) {
  switch (type) {
    case VIRTIO_BLK_T_FLUSH:
      return flush();
    case VIRTIO_BLK_T_GET_ID:
      return get_id(chain);
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return discard_or_write_zeroes(chain, type);
    default:
      log::debug("{}: request type {} is not supported", name(), type);
      return {VIRTIO_BLK_S_UNSUPP, 0};
  }
}

void VirtioBlock::prepare_read(Pending& p, const DescriptorChain& chain, uint64_t sector) {
  if (chain.readable_bytes() != kHeaderSize) {
    p.outcome =
        guest_error(fmt::format("read request has {} device-readable data bytes; they must "
                                "be device-writable",
                                chain.readable_bytes() - kHeaderSize));
    return;
  }
  const uint64_t len = chain.writable_bytes() - 1;
  if (len % kSectorSize != 0) {
    p.outcome = guest_error(fmt::format("read of {} bytes is not a whole number of sectors", len));
    return;
  }
  if (!in_range(sector, len / kSectorSize)) {
    p.outcome = guest_error(fmt::format("read of sectors [{}, +{}) is beyond the disk's {} sectors",
                                        sector, len / kSectorSize, capacity_sectors()));
    return;
  }
  p.iov.clear();
  if (!chain.iovecs(true, p.iov)) {
    p.outcome = guest_error("read buffers are not writable guest RAM");
    return;
  }
  iov_drop_back(p.iov, 1);  // the status byte
  p.transfer = true;
  p.write = false;
  p.sector = sector;
}

void VirtioBlock::prepare_write(Pending& p, const DescriptorChain& chain, uint64_t sector) {
  if (chain.writable_bytes() != 1) {
    p.outcome =
        guest_error(fmt::format("write request has {} device-writable data bytes; they "
                                "must be device-readable",
                                chain.writable_bytes() - 1));
    return;
  }
  if (backend_->readonly()) {
    p.outcome = guest_error("write to a read-only disk refused");
    return;
  }
  const uint64_t len = chain.readable_bytes() - kHeaderSize;
  if (len % kSectorSize != 0) {
    p.outcome = guest_error(fmt::format("write of {} bytes is not a whole number of sectors", len));
    return;
  }
  if (!in_range(sector, len / kSectorSize)) {
    p.outcome =
        guest_error(fmt::format("write of sectors [{}, +{}) is beyond the disk's {} sectors",
                                sector, len / kSectorSize, capacity_sectors()));
    return;
  }
  p.iov.clear();
  if (!chain.iovecs(false, p.iov)) {
    p.outcome = guest_error("write buffers are not guest RAM");
    return;
  }
  iov_drop_front(p.iov, kHeaderSize);
  p.transfer = true;
  p.write = true;
  p.sector = sector;
}

VirtioBlock::Outcome VirtioBlock::flush() {
  // Synchronous: the data is on stable storage before the caller writes the status.
  if (const int err = backend_->flush()) return io_error("flush", err);
  return {VIRTIO_BLK_S_OK, 0};
}

VirtioBlock::Outcome VirtioBlock::get_id(const DescriptorChain& chain) {
  if (chain.readable_bytes() != kHeaderSize || chain.writable_bytes() != kIdBytes + 1) {
    return guest_error(
        fmt::format("GET_ID request needs exactly {} device-writable bytes "
                    "and the status; got {} readable, {} writable",
                    kIdBytes, chain.readable_bytes() - kHeaderSize, chain.writable_bytes()));
  }
  std::array<uint8_t, kIdBytes> id{};  // NUL-padded; no terminator when 20 bytes long
  std::copy(serial_.begin(), serial_.end(), id.begin());
  if (!chain.write_at(0, id)) return guest_error("GET_ID buffer is not writable guest RAM");
  return {VIRTIO_BLK_S_OK, kIdBytes};
}

VirtioBlock::Outcome VirtioBlock::discard_or_write_zeroes(const DescriptorChain& chain,
                                                          uint32_t type) {
  const bool discard = type == VIRTIO_BLK_T_DISCARD;
  const char* what = discard ? "discard" : "write-zeroes";
  if (!negotiated(discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES)) {
    log::debug("{}: {} request, but the feature was not negotiated", name(), what);
    return {VIRTIO_BLK_S_UNSUPP, 0};
  }
  if (backend_->readonly()) return guest_error(fmt::format("{} on a read-only disk", what));
  if (chain.writable_bytes() != 1) {
    return guest_error(
        fmt::format("{} request has {} device-writable data bytes; its "
                    "segments must be device-readable",
                    what, chain.writable_bytes() - 1));
  }
  const uint64_t len = chain.readable_bytes() - kHeaderSize;
  constexpr uint64_t kSegmentSize = sizeof(virtio_blk_discard_write_zeroes);
  if (len == 0 || len % kSegmentSize != 0) {
    return guest_error(
        fmt::format("{} request has {} data bytes, not a whole number of "
                    "{}-byte segments",
                    what, len, kSegmentSize));
  }
  const uint64_t count = len / kSegmentSize;
  if (count > kMaxRangeSegments) {
    return guest_error(fmt::format("{} request has {} segments, more than the {} advertised", what,
                                   count, kMaxRangeSegments));
  }
  std::array<virtio_blk_discard_write_zeroes, kMaxRangeSegments> segments{};
  if (!chain.read_at(kHeaderSize, bytes_of(segments.data(), count))) {
    return guest_error(fmt::format("{} segments are not readable guest RAM", what));
  }

  // Check every segment before touching the disk.
  const uint32_t known_flags = discard ? 0 : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
  for (uint64_t i = 0; i < count; ++i) {
    const auto& s = segments[i];
    if (s.flags & ~known_flags) {
      log::debug("{}: {} segment with flags {:#x} is not supported", name(), what, s.flags);
      return {VIRTIO_BLK_S_UNSUPP, 0};
    }
    if (s.num_sectors > kMaxRangeSectors) {
      return guest_error(fmt::format("{} of {} sectors is more than the {} advertised", what,
                                     s.num_sectors, kMaxRangeSectors));
    }
    if (!in_range(s.sector, s.num_sectors)) {
      return guest_error(fmt::format("{} of sectors [{}, +{}) is beyond the disk's {} sectors",
                                     what, s.sector, s.num_sectors, capacity_sectors()));
    }
  }
  for (uint64_t i = 0; i < count; ++i) {
    const auto& s = segments[i];
    const uint64_t offset = s.sector * kSectorSize;
    const uint64_t bytes = uint64_t{s.num_sectors} * kSectorSize;
    const int err = discard ? backend_->discard(offset, bytes)
                            : backend_->write_zeroes(offset, bytes,
                                                     s.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
    if (err != 0) return io_error(what, s.sector, err);
  }
  if (!negotiated(VIRTIO_BLK_F_FLUSH)) return flush();  // write-through, as for writes
  return {VIRTIO_BLK_S_OK, 0};
}

bool VirtioBlock::in_range(uint64_t sector, uint64_t sectors) const {
  const uint64_t capacity = capacity_sectors();
  return sector <= capacity && sectors <= capacity - sector;
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
