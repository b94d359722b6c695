#include "libvmm/virtio/block_request.hpp"

#include <fmt/format.h>
#include <linux/virtio_blk.h>

#include <algorithm>
#include <optional>

#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {

namespace {

using Kind = BlockRequestError::Kind;

// The ABI structures are little-endian, like every host we build for.
static_assert(sizeof(virtio_blk_outhdr) == kBlockHeaderSize);
static_assert(sizeof(virtio_blk_discard_write_zeroes) == 16);

template <GuestPod T>
std::span<uint8_t> bytes_of(T* objects, size_t count) {
  return {reinterpret_cast<uint8_t*>(objects), sizeof(T) * count};
}

BlockRequestError refuse(Kind kind, std::string message) {
  return {kind, std::move(message)};
}

// True if [sector, sector + sectors) lies within the disk (no overflow for any inputs).
bool in_range(const BlockDisk& disk, uint64_t sector, uint64_t sectors) {
  return sector <= disk.capacity_sectors && sectors <= disk.capacity_sectors - sector;
}

// Checks the data of a read or write, bytes [begin, end) of the chain's device-writable (or
// device-readable) part, against size_max, seg_max and max_request_bytes. A data buffer is a
// descriptor holding some of those bytes (the header or the status may share one with data).
std::optional<BlockRequestError> check_data_buffers(const DescriptorChain& chain, bool writable,
                                                    uint64_t begin, uint64_t end,
                                                    const BlockLimits& limits, const char* what) {
  const uint64_t total = end - begin;
  if (total > limits.max_request_bytes) {
    return refuse(Kind::request_too_large,
                  fmt::format("{} of {} bytes is more than the {} a request may have", what, total,
                              limits.max_request_bytes));
  }
  uint64_t position = 0;  // of the current descriptor within its part
  uint32_t buffers = 0;
  for (const DescriptorSegment& segment : chain.segments()) {
    if (segment.device_writable != writable) continue;
    const uint64_t first = std::max(position, begin);
    const uint64_t last = std::min(position + segment.len, end);
    position += segment.len;
    if (first >= last) continue;
    if (last - first > limits.size_max) {
      return refuse(Kind::buffer_too_large,
                    fmt::format("{} data buffer of {} bytes is more than the size_max of {}", what,
                                last - first, limits.size_max));
    }
    if (++buffers > limits.seg_max) {
      return refuse(
          Kind::too_many_buffers,
          fmt::format("{} has more than the seg_max of {} data buffers", what, limits.seg_max));
    }
  }
  return std::nullopt;
}

ParsedBlockRequest parse_read(const DescriptorChain& chain, uint64_t sector,
                              const BlockDisk& disk) {
  if (chain.readable_bytes() != kBlockHeaderSize) {
    return refuse(Kind::wrong_direction,
                  fmt::format("read request has {} device-readable data bytes; they must "
                              "be device-writable",
                              chain.readable_bytes() - kBlockHeaderSize));
  }
  const uint64_t len = chain.writable_bytes() - 1;
  if (len % kBlockSectorSize != 0) {
    return refuse(Kind::partial_sector,
                  fmt::format("read of {} bytes is not a whole number of sectors", len));
  }
  if (!in_range(disk, sector, len / kBlockSectorSize)) {
    return refuse(Kind::out_of_range,
                  fmt::format("read of sectors [{}, +{}) is beyond the disk's {} sectors", sector,
                              len / kBlockSectorSize, disk.capacity_sectors));
  }
  if (auto error = check_data_buffers(chain, true, 0, len, disk.limits, "read")) {
    return std::move(*error);
  }
  BlockRequest request;
  request.type = BlockRequestType::read;
  request.sector = sector;
  request.data_bytes = len;
  return request;
}

ParsedBlockRequest parse_write(const DescriptorChain& chain, uint64_t sector,
                               const BlockDisk& disk) {
  if (chain.writable_bytes() != 1) {
    return refuse(Kind::wrong_direction,
                  fmt::format("write request has {} device-writable data bytes; they "
                              "must be device-readable",
                              chain.writable_bytes() - 1));
  }
  if (disk.readonly) return refuse(Kind::read_only, "write to a read-only disk refused");
  const uint64_t len = chain.readable_bytes() - kBlockHeaderSize;
  if (len % kBlockSectorSize != 0) {
    return refuse(Kind::partial_sector,
                  fmt::format("write of {} bytes is not a whole number of sectors", len));
  }
  if (!in_range(disk, sector, len / kBlockSectorSize)) {
    return refuse(Kind::out_of_range,
                  fmt::format("write of sectors [{}, +{}) is beyond the disk's {} sectors", sector,
                              len / kBlockSectorSize, disk.capacity_sectors));
  }
  if (auto error = check_data_buffers(chain, false, kBlockHeaderSize, kBlockHeaderSize + len,
                                      disk.limits, "write")) {
    return std::move(*error);
  }
  BlockRequest request;
  request.type = BlockRequestType::write;
  request.sector = sector;
  request.data_bytes = len;
  return request;
}

ParsedBlockRequest parse_get_id(const DescriptorChain& chain) {
  if (chain.readable_bytes() != kBlockHeaderSize || chain.writable_bytes() != kBlockIdBytes + 1) {
    return refuse(Kind::bad_id_buffer,
                  fmt::format("GET_ID request needs exactly {} device-writable bytes "
                              "and the status; got {} readable, {} writable",
                              kBlockIdBytes, chain.readable_bytes() - kBlockHeaderSize,
                              chain.writable_bytes()));
  }
  BlockRequest request;
  request.type = BlockRequestType::get_id;
  request.data_bytes = kBlockIdBytes;
  return request;
}

ParsedBlockRequest parse_ranges(const DescriptorChain& chain, bool discard, const BlockDisk& disk) {
  const char* what = discard ? "discard" : "write-zeroes";
  if (!(discard ? disk.discard : disk.write_zeroes)) {
    return refuse(Kind::not_negotiated,
                  fmt::format("{} request, but the feature was not negotiated", what));
  }
  if (disk.readonly) return refuse(Kind::read_only, fmt::format("{} on a read-only disk", what));
  if (chain.writable_bytes() != 1) {
    return refuse(Kind::wrong_direction,
                  fmt::format("{} request has {} device-writable data bytes; its "
                              "segments must be device-readable",
                              what, chain.writable_bytes() - 1));
  }
  const uint64_t len = chain.readable_bytes() - kBlockHeaderSize;
  constexpr uint64_t kSegmentSize = sizeof(virtio_blk_discard_write_zeroes);
  if (len == 0 || len % kSegmentSize != 0) {
    return refuse(Kind::bad_segment_bytes,
                  fmt::format("{} request has {} data bytes, not a whole number of "
                              "{}-byte segments",
                              what, len, kSegmentSize));
  }
  const uint64_t count = len / kSegmentSize;
  const uint32_t max_segments =
      std::min(discard ? disk.limits.max_discard_seg : disk.limits.max_write_zeroes_seg,
               kBlockMaxRangeSegments);
  const uint32_t max_sectors =
      discard ? disk.limits.max_discard_sectors : disk.limits.max_write_zeroes_sectors;
  if (count > max_segments) {
    return refuse(Kind::too_many_segments,
                  fmt::format("{} request has {} segments, more than the {} advertised", what,
                              count, max_segments));
  }
  std::array<virtio_blk_discard_write_zeroes, kBlockMaxRangeSegments> segments{};
  if (!chain.read_at(kBlockHeaderSize, bytes_of(segments.data(), count))) {
    return refuse(Kind::unreadable_segments,
                  fmt::format("{} segments are not readable guest RAM", what));
  }

  // Every segment is checked before the device touches the disk.
  BlockRequest request;
  request.type = discard ? BlockRequestType::discard : BlockRequestType::write_zeroes;
  request.range_count = static_cast<uint32_t>(count);
  const uint32_t known_flags = discard ? 0 : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
  for (uint64_t i = 0; i < count; ++i) {
    const auto& s = segments[i];
    if (s.flags & ~known_flags) {
      return refuse(Kind::unknown_flags,
                    fmt::format("{} segment with flags {:#x} is not supported", what, s.flags));
    }
    if (s.num_sectors > max_sectors || s.num_sectors > kBlockMaxRangeSectors) {
      return refuse(Kind::range_too_long,
                    fmt::format("{} of {} sectors is more than the {} advertised", what,
                                s.num_sectors, std::min(max_sectors, kBlockMaxRangeSectors)));
    }
    if (!in_range(disk, s.sector, s.num_sectors)) {
      return refuse(Kind::out_of_range,
                    fmt::format("{} of sectors [{}, +{}) is beyond the disk's {} sectors", what,
                                s.sector, s.num_sectors, disk.capacity_sectors));
    }
    request.ranges[i] = {s.sector, s.num_sectors,
                         (s.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != 0};
  }
  return request;
}

}  // namespace

bool BlockRequestHeader::is_transfer() const {
  return type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_OUT;
}

uint8_t BlockRequestError::status() const {
  switch (kind) {
    case Kind::unknown_type:
    case Kind::not_negotiated:
    case Kind::unknown_flags:
      return VIRTIO_BLK_S_UNSUPP;
    default:
      return VIRTIO_BLK_S_IOERR;
  }
}

ParsedBlockHeader parse_block_header(const DescriptorChain& chain) {
  if (chain.writable_bytes() == 0) {
    return refuse(Kind::no_status,
                  "request without a device-writable status byte; not carried out");
  }
  virtio_blk_outhdr header{};
  if (chain.readable_bytes() < kBlockHeaderSize || !chain.read_at(0, bytes_of(&header, 1))) {
    return refuse(Kind::short_header,
                  fmt::format("request header needs {} device-readable bytes, got {}",
                              kBlockHeaderSize, chain.readable_bytes()));
  }
  return BlockRequestHeader{header.type, header.sector};
}

ParsedBlockRequest parse_block_request(const DescriptorChain& chain,
                                       const BlockRequestHeader& header, const BlockDisk& disk) {
  switch (header.type) {
    case VIRTIO_BLK_T_IN:
      return parse_read(chain, header.sector, disk);
    case VIRTIO_BLK_T_OUT:
      return parse_write(chain, header.sector, disk);
    case VIRTIO_BLK_T_FLUSH: {
      BlockRequest flush;  // whatever its buffers: it only needs the status
      flush.type = BlockRequestType::flush;
      return flush;
    }
    case VIRTIO_BLK_T_GET_ID:
      return parse_get_id(chain);
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return parse_ranges(chain, header.type == VIRTIO_BLK_T_DISCARD, disk);
    default:
      return refuse(Kind::unknown_type,
                    fmt::format("request type {} is not supported", header.type));
  }
}

ParsedBlockRequest parse_block_request(const DescriptorChain& chain, const BlockDisk& disk) {
  ParsedBlockHeader header = parse_block_header(chain);
  if (auto* error = std::get_if<BlockRequestError>(&header)) return std::move(*error);
  return parse_block_request(chain, std::get<BlockRequestHeader>(header), disk);
}

}  // namespace libvmm
