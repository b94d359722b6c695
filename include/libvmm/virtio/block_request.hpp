// virtio-blk requests (virtIO 1.2 §5.2.6) parsed from descriptor chains the queue has already
// validated: which request a chain carries, or exactly what the driver got wrong in it.
//
// Parsing is a pure function of the chain's bytes and the disk it is checked against: it does
// no I/O, writes nothing and logs nothing. VirtioBlock carries out what it returns; the fuzzer
// (fuzz/block_request_fuzzer.cpp) calls it directly. The guest is untrusted: sector arithmetic
// is overflow-safe for any input, and every length is checked against the chain's.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <variant>

namespace libvmm {

class DescriptorChain;

// What the device advertises (struct virtio_blk_config) and holds every request to.
inline constexpr uint32_t kBlockSectorSize = 512;
inline constexpr uint64_t kBlockHeaderSize = 16;  // struct virtio_blk_outhdr
inline constexpr uint32_t kBlockIdBytes = 20;     // GET_ID's answer
// Reads and writes: the data buffers of one request (size_max, seg_max) and what they add up
// to. The device enforces what it advertises, so one request moves at most 63.5 MiB.
inline constexpr uint32_t kBlockSizeMax = 256 * 1024;  // bytes of data per buffer
inline constexpr uint32_t kBlockSegMax = 254;          // data buffers per request
inline constexpr uint64_t kBlockMaxRequestBytes = uint64_t{kBlockSizeMax} * kBlockSegMax;
// DISCARD / WRITE_ZEROES: bound the work one request can ask for. kBlockMaxRangeSectors and
// kBlockMaxRangeSegments bound both kinds (the parser's storage); BlockLimits has each one's.
inline constexpr uint32_t kBlockMaxRangeSectors = (1u << 30) / kBlockSectorSize;  // 1 GiB
inline constexpr uint32_t kBlockMaxRangeSegments = 32;
// WRITE_ZEROES: 1 MiB per segment, so 32 MiB per request, like a read or write. Where the host
// has no fast way to zero (tmpfs and NFS lack FALLOC_FL_ZERO_RANGE; a block device without a
// write-zeroes command makes the kernel write zero pages), zeroing is writing, done
// synchronously under the device's lock. Whether it will be cannot be learnt at start without
// changing the image (fallocate() refuses a zero length before the file system looks at the
// mode), and Linux reads this limit once, when it probes the device, so it must hold for the
// slow case from the start. On a fast file system the cost is more, smaller requests, each one
// fallocate().
inline constexpr uint32_t kBlockMaxWriteZeroesSectors = (1u << 20) / kBlockSectorSize;

// What the device advertises in struct virtio_blk_config and refuses requests beyond
// (VIRTIO_BLK_S_IOERR): a driver that keeps to it never sees one refused.
struct BlockLimits {
  uint32_t size_max = kBlockSizeMax;                   // bytes of data per buffer
  uint32_t seg_max = kBlockSegMax;                     // data buffers per read or write
  uint64_t max_request_bytes = kBlockMaxRequestBytes;  // data bytes per read or write
  uint32_t max_discard_sectors = kBlockMaxRangeSectors;
  uint32_t max_discard_seg = kBlockMaxRangeSegments;
  uint32_t max_write_zeroes_sectors = kBlockMaxWriteZeroesSectors;
  uint32_t max_write_zeroes_seg = kBlockMaxRangeSegments;
};

// What a request is checked against: the disk, the features the driver accepted, and the
// limits the device advertised.
struct BlockDisk {
  uint64_t capacity_sectors = 0;
  bool readonly = false;
  bool discard = false;       // VIRTIO_BLK_F_DISCARD negotiated
  bool write_zeroes = false;  // VIRTIO_BLK_F_WRITE_ZEROES negotiated
  BlockLimits limits{};
};

// The header every request starts with (struct virtio_blk_outhdr, minus its reserved field).
struct BlockRequestHeader {
  uint32_t type = 0;  // VIRTIO_BLK_T_*
  uint64_t sector = 0;
  // Reads and writes are carried out in batches; other requests one at a time.
  bool is_transfer() const;
};

enum class BlockRequestType { read, write, flush, get_id, discard, write_zeroes };

// One DISCARD or WRITE_ZEROES segment: within the disk, at most kBlockMaxRangeSectors long.
struct BlockRange {
  uint64_t sector = 0;
  uint32_t sectors = 0;
  bool unmap = false;  // WRITE_ZEROES may deallocate the range to zero it
};

// A well-formed request. Its chain has a status byte at the end of its device-writable part.
struct BlockRequest {
  BlockRequestType type = BlockRequestType::flush;
  // read, write: the first sector, and the bytes of data (whole sectors, within the disk) in
  // the device-writable part before the status (read) or the device-readable part after the
  // header (write). get_id: data_bytes is kBlockIdBytes, the device-writable part before the
  // status.
  uint64_t sector = 0;
  uint64_t data_bytes = 0;
  // discard, write_zeroes: at least one segment.
  uint32_t range_count = 0;
  std::array<BlockRange, kBlockMaxRangeSegments> ranges{};

  std::span<const BlockRange> segments() const { return {ranges.data(), range_count}; }
};

// A request the device refuses.
struct BlockRequestError {
  enum class Kind {
    no_status,            // no device-writable byte to put the status in
    short_header,         // fewer than kBlockHeaderSize device-readable bytes
    unknown_type,         // a request type the device does not implement
    not_negotiated,       // DISCARD or WRITE_ZEROES without its feature
    unknown_flags,        // a DISCARD or WRITE_ZEROES segment with flags it cannot have
    wrong_direction,      // data the device reads is device-writable, or the other way round
    read_only,            // a write, DISCARD or WRITE_ZEROES on a read-only disk
    partial_sector,       // read or write data that is not a whole number of sectors
    out_of_range,         // sectors beyond the end of the disk
    range_too_long,       // a segment of more than max_discard_sectors / max_write_zeroes_sectors
    bad_id_buffer,        // GET_ID without exactly kBlockIdBytes and the status to write
    bad_segment_bytes,    // segment data that is not whole 16-byte segments, or none
    too_many_segments,    // more than max_discard_seg / max_write_zeroes_seg
    unreadable_segments,  // the segments could not be read from the chain
    buffer_too_large,     // a read or write data buffer of more than size_max bytes
    too_many_buffers,     // a read or write with more than seg_max data buffers
    request_too_large     // a read or write of more than max_request_bytes
  };
  Kind kind;
  std::string message;  // what the driver got wrong, for the log: "read of 500 bytes is ..."

  // What the driver is told: VIRTIO_BLK_S_UNSUPP for what the device does not implement,
  // else VIRTIO_BLK_S_IOERR. (No status reaches it for no_status.)
  uint8_t status() const;
};

using ParsedBlockHeader = std::variant<BlockRequestHeader, BlockRequestError>;
using ParsedBlockRequest = std::variant<BlockRequest, BlockRequestError>;

// The first step: the chain has room for a status byte and starts with a readable header.
ParsedBlockHeader parse_block_header(const DescriptorChain& chain);
// The second step: the rest of the request that starts with `header`.
ParsedBlockRequest parse_block_request(const DescriptorChain& chain,
                                       const BlockRequestHeader& header, const BlockDisk& disk);
// Both steps.
ParsedBlockRequest parse_block_request(const DescriptorChain& chain, const BlockDisk& disk);

}  // namespace libvmm
