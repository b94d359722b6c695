#include "libvmm/backends/block_image.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>
#include <vector>

#include "block_uring.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

namespace {

// A regular file's length or a block device's capacity; empty (errno set) when the host cannot
// say.
std::optional<uint64_t> size_of(int fd, const struct stat& st) {
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) return std::nullopt;
    return bytes;
  }
  return static_cast<uint64_t>(st.st_size);
}

// Drops `n` bytes from the front of `iov` (what a transfer already moved), and any empty
// entries there; the first entry left is adjusted in place.
std::span<iovec> drop_front(std::span<iovec> iov, uint64_t n) {
  while (!iov.empty()) {
    iovec& v = iov.front();
    const uint64_t step = std::min<uint64_t>(n, v.iov_len);
    v.iov_base = static_cast<uint8_t*>(v.iov_base) + step;
    v.iov_len -= step;
    n -= step;
    if (v.iov_len != 0) break;
    iov = iov.subspan(1);
  }
  return iov;
}

// Calls io(iov, count, offset) (preadv/pwritev) until all of `iov` is transferred: the host may
// move less than asked (signals, its 2 GiB per-call limit) and takes at most IOV_MAX buffers.
template <typename Io>
int transfer(std::span<iovec> iov, uint64_t offset, Io&& io) {
  iov = drop_front(iov, 0);
  while (!iov.empty()) {
    const int count = static_cast<int>(std::min<size_t>(iov.size(), IOV_MAX));
    const ssize_t n = io(iov.data(), count, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // end of file: the image shrank under us
    offset += static_cast<uint64_t>(n);
    iov = drop_front(iov, static_cast<uint64_t>(n));
  }
  return 0;
}

bool is_unsupported(int err) {
  return err == EOPNOTSUPP || err == ENOSYS;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// BlockBackend

void BlockBackend::transfer_batch(std::span<BlockTransfer> batch) {
  for (BlockTransfer& t : batch) {
    t.result = t.write ? write(t.offset, t.iov) : read(t.offset, t.iov);
  }
}

// ---------------------------------------------------------------------------------------------
// BlockImage

std::unique_ptr<BlockImage> BlockImage::open(const BlockImageOptions& options) {
  auto fail = [&](std::string_view why) {
    return UserError(fmt::format("image {}: {}", options.path, why));
  };
  // O_NONBLOCK only so that opening a FIFO by mistake cannot hang; cleared below.
  const int flags = (options.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
  UniqueFd fd(::open(options.path.c_str(), flags | (options.direct ? O_DIRECT : 0)));
  if (!fd) {
    const int err = errno;
    if (err == EISDIR) throw fail("is a directory");
    if (err == EINVAL && options.direct) {
      throw fail("the file system does not support direct I/O (drop ',direct')");
    }
    if ((err == EACCES || err == EROFS || err == EPERM) && !options.readonly) {
      throw fail(fmt::format("{} (add ',readonly' to use it read-only)", std::strerror(err)));
    }
    throw fail(std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw fail(std::strerror(errno));

  auto image = std::unique_ptr<BlockImage>(new BlockImage());
  image->readonly_ = options.readonly;
  if (S_ISDIR(st.st_mode)) throw fail("is a directory");
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    throw fail("not a regular file or block device");
  }
  const auto size = size_of(fd.get(), st);
  if (!size) throw fail(std::strerror(errno));
  if (*size % kSectorSize != 0) {
    throw fail(fmt::format("size {} bytes is not a multiple of {}", *size, kSectorSize));
  }
  image->size_ = *size;
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK) != 0) {
    throw fail(std::strerror(errno));
  }
  // Two VMs writing one image corrupt it; readers may share it with other readers.
  if (::flock(fd.get(), (options.readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) throw fail("in use by another process");
    throw fail(fmt::format("cannot lock the image: {}", std::strerror(errno)));
  }

  if (options.direct) {
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
    image->buffered_fd_ = UniqueFd(::open(options.path.c_str(), flags & ~O_NONBLOCK));
    if (!image->buffered_fd_) throw fail(std::strerror(errno));
  }
  image->io_ = options.io;
  if (options.io == BlockIo::io_uring) {
    image->uring_ = UringBatch::create(kUringEntries);
    if (!image->uring_) throw fail("io_uring is not available on this host (use io=sync)");
  } else if (options.io == BlockIo::automatic) {
    image->uring_ = UringBatch::create(kUringEntries, /*quiet=*/true);
    if (image->uring_) {
      log::debug(
          "image {}: io=auto: requests kept in flight through io_uring (in batches: one on "
          "its own with preadv/pwritev)",
          options.path);
    } else {
      log::debug("image {}: io=auto: no io_uring on this host; every request with preadv/pwritev",
                 options.path);
    }
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
  // One request gains nothing from a ring round trip (io=auto); several overlap in the host.
  // (The ring is not shared with transfers kept in flight.)
  if (!uring_ || uring_->broken() || (io_ == BlockIo::automatic && batch.size() < 2) ||
      uring_->outstanding() > 0) {
    counts_.sync_transfers += batch.size();
    return BlockBackend::transfer_batch(batch);
  }
  ++counts_.uring_batches;
  counts_.uring_transfers += batch.size();
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
    t.result = finish(t, op.result);
  }
}

int BlockImage::finish(BlockTransfer& t, int64_t moved) {
  if (moved == -EAGAIN || moved == -EINTR) {
    // Not done this time, and not an error of the image: Linux answers EAGAIN for an O_DIRECT
    // transfer split over several bios when the device ran out of tags, and does not issue
    // it again outside the submitting task. Done again (the whole of it) the synchronous way.
    ++counts_.redone;
    return t.write ? write(t.offset, t.iov) : read(t.offset, t.iov);
  }
  if (moved < 0) return static_cast<int>(-moved);
  // The host may move less than asked; the rest goes the synchronous way.
  const auto done = static_cast<uint64_t>(moved);
  uint64_t total = 0;
  for (const iovec& v : t.iov) total += v.iov_len;
  if (done == total) return 0;
  if (done == 0) return EIO;  // end of file: the image shrank under us
  const std::span<iovec> rest = drop_front(t.iov, done);
  return t.write ? write(t.offset + done, rest) : read(t.offset + done, rest);
}

BlockAsync* BlockImage::async() {
  return uring_ ? this : nullptr;
}

bool BlockImage::start(BlockTransfer& t) {
  // A write to a read-only image (the device refuses those first) goes the synchronous way,
  // where write() refuses it.
  if (!uring_ || (t.write && readonly_)) return false;
  if (!uring_->start(fd_for(t.offset, t.iov), t.write, t.offset, t.iov, &t)) return false;
  ++counts_.started;
  return true;
}

void BlockImage::submit() {
  if (uring_) uring_->submit();
}

void BlockImage::reap(std::vector<BlockTransfer*>& done, bool wait) {
  if (!uring_) return;
  finished_.clear();
  uring_->reap(finished_, wait);
  for (const auto& [user, moved] : finished_) {
    auto& t = *static_cast<BlockTransfer*>(user);
    t.result = finish(t, moved);
    done.push_back(&t);
  }
}

int BlockImage::completion_fd() const {
  return uring_ ? uring_->event_fd() : -1;
}

uint64_t BlockImage::reread_size() {
  struct stat st {};
  std::optional<uint64_t> size;
  if (::fstat(fd_.get(), &st) == 0) size = size_of(fd_.get(), st);
  if (!size) throw_errno("reading the image's size");
  // A partial last sector is not the guest's: it could not be written as a whole.
  const uint64_t whole = *size / kSectorSize * kSectorSize;
  size_.store(whole, std::memory_order_relaxed);
  return whole;
}

int BlockImage::flush() {
  // One inode: syncing through either descriptor covers writes made through both.
  return flush_error_.after(::fdatasync(fd_.get()) == 0 ? 0 : errno);
}

int BlockImage::discard(uint64_t offset, uint64_t len) {
  if (readonly_) return EROFS;
  if (len == 0) return 0;
  const int rc = ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             static_cast<off_t>(offset), static_cast<off_t>(len));
  // A hint: nothing to do without holes, nor on a block device whose logical blocks the range
  // does not line up with (EINVAL: the guest's 512-byte sectors against a 4 KiB-sector disk).
  if (rc == 0 || is_unsupported(errno) || errno == EINVAL) return 0;
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
  // Bounded memory (one shared 64 KiB buffer) and bounded time: the device keeps `len` to what
  // it advertises for WRITE_ZEROES (at most 32 MiB a request; kBlockMaxWriteZeroesSectors).
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

}  // namespace libvmm
