// Feeds virtio-blk request chains built from fuzz input, the way a hostile driver could, to
// parse_block_request() directly, checking that whatever it accepts is within the chain and
// the disk, and then to VirtioBlock over small temporary images, checking what comes back in
// the used ring.
//
// Built twice: block_request_fuzzer with the devices' default synchronous I/O, and
// block_uring_fuzzer with LIBVMM_FUZZ_BLOCK_IO=",io=io_uring", where each notification's reads
// and writes go through one io_uring batch.
//
// Input: a selector byte (which image, negotiated features, the disk size the parser checks
// against), then up to 8 chains, each a segment count and per segment a flags byte, a length
// and, for device-readable segments, the bytes the driver put there (the request header,
// data, discard segments).
#include <linux/virtio_blk.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/block_request.hpp"
#include "libvmm/virtio/virtqueue.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using fuzz::check;

#ifndef LIBVMM_FUZZ_BLOCK_IO
#define LIBVMM_FUZZ_BLOCK_IO ""  // the --disk option choosing the I/O engine
#endif

namespace {

constexpr uint64_t kRamSize = 256 * KiB;
constexpr uint64_t kRomBase = kRamSize;  // read-only, right after RAM
constexpr uint64_t kRomSize = 4 * KiB;
constexpr uint16_t kQueueSize = 32;
constexpr test::RingLayout kLayout{0x0, 0x400, 0x800, 0x1000};
constexpr size_t kMaxChains = 8;
constexpr uint64_t kImageSize = 64 * KiB;

// A temporary image, unlinked once open (the device keeps it alive). Its requests are carried
// out inside queue_notify() (iothread=off): what the fuzzer checks right after it; the rounds
// are the same code on the I/O thread.
std::shared_ptr<VirtioBlock> make_device(const std::string& options) {
  char path[] = "/tmp/block_request_fuzzer.XXXXXX";
  const int fd = ::mkstemp(path);
  check(fd >= 0 && ::ftruncate(fd, kImageSize) == 0);
  ::close(fd);
  auto device = std::make_shared<VirtioBlock>(
      parse_disk_spec(path + options + LIBVMM_FUZZ_BLOCK_IO ",serial=fuzz,iothread=off"));
  ::unlink(path);
  return device;
}

struct Guest {
  test::TestMemory memory{kRamSize, kRomBase, kRomSize};
  std::array<std::shared_ptr<VirtioBlock>, 3> devices{make_device(""), make_device(",readonly"),
                                                      make_device(",direct")};
};

// What parse_block_request() accepts must be within the chain and the disk; what it refuses
// gets a reason and a status.
void check_parse(const DescriptorChain& chain, const BlockDisk& disk) {
  const ParsedBlockRequest parsed = parse_block_request(chain, disk);
  if (const auto* error = std::get_if<BlockRequestError>(&parsed)) {
    check(!error->message.empty());
    check(error->status() == VIRTIO_BLK_S_IOERR || error->status() == VIRTIO_BLK_S_UNSUPP);
    check((error->kind == BlockRequestError::Kind::no_status) == (chain.writable_bytes() == 0));
    return;
  }
  const BlockRequest& request = std::get<BlockRequest>(parsed);
  check(chain.writable_bytes() >= 1 && chain.readable_bytes() >= kBlockHeaderSize);
  const uint64_t readable_data = chain.readable_bytes() - kBlockHeaderSize;
  const uint64_t writable_data = chain.writable_bytes() - 1;
  auto within = [&](uint64_t sector, uint64_t sectors) {
    return sector <= disk.capacity_sectors && sectors <= disk.capacity_sectors - sector;
  };
  virtio_blk_outhdr header{};
  check(chain.read_at(0, {reinterpret_cast<uint8_t*>(&header), sizeof header}));
  const bool ranges =
      request.type == BlockRequestType::discard || request.type == BlockRequestType::write_zeroes;
  check(ranges || request.range_count == 0);
  switch (request.type) {
    case BlockRequestType::read:
    case BlockRequestType::write: {
      const bool write = request.type == BlockRequestType::write;
      check(header.type == (write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN));
      check(request.sector == header.sector);
      check((write ? writable_data : readable_data) == 0);
      check(request.data_bytes == (write ? readable_data : writable_data));
      check(request.data_bytes % kBlockSectorSize == 0);
      check(within(request.sector, request.data_bytes / kBlockSectorSize));
      check(!write || !disk.readonly);
      check(request.data_bytes <= disk.limits.max_request_bytes);
      break;
    }
    case BlockRequestType::flush:
      check(header.type == VIRTIO_BLK_T_FLUSH);
      break;
    case BlockRequestType::get_id:
      check(header.type == VIRTIO_BLK_T_GET_ID);
      check(readable_data == 0 && writable_data == kBlockIdBytes);
      break;
    case BlockRequestType::discard:
    case BlockRequestType::write_zeroes: {
      const bool discard = request.type == BlockRequestType::discard;
      check(header.type == (discard ? VIRTIO_BLK_T_DISCARD : VIRTIO_BLK_T_WRITE_ZEROES));
      check(discard ? disk.discard : disk.write_zeroes);
      check(!disk.readonly && writable_data == 0);
      check(request.range_count >= 1 && request.range_count <= kBlockMaxRangeSegments);
      check(request.range_count <=
            (discard ? disk.limits.max_discard_seg : disk.limits.max_write_zeroes_seg));
      check(readable_data == 16ull * request.range_count);
      const uint32_t max_sectors =
          discard ? disk.limits.max_discard_sectors : disk.limits.max_write_zeroes_sectors;
      for (const BlockRange& range : request.segments()) {
        check(range.sectors <= kBlockMaxRangeSectors && within(range.sector, range.sectors));
        check(range.sectors <= max_sectors);
        check(!(discard && range.unmap));
      }
      break;
    }
  }
}

struct Expect {
  uint16_t head;
  uint64_t writable;    // bytes the chain offers the device
  uint64_t status_gpa;  // where its last writable byte is, if it has one in RAM
  bool status_in_ram;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Guest guest;
  fuzz::Input in(data, size);

  const uint8_t selector = in.u8();
  VirtioBlock& device = *guest.devices[selector % 3];
  uint64_t features = device.device_features();
  if (selector & 0x04) features &= ~(1ull << VIRTIO_BLK_F_FLUSH);
  if (selector & 0x08) features &= ~(1ull << VIRTIO_BLK_F_DISCARD);
  if (selector & 0x10) features &= ~(1ull << VIRTIO_BLK_F_WRITE_ZEROES);
  const uint64_t ring_features = selector & 0x20 ? 1ull << VIRTIO_RING_F_INDIRECT_DESC : 0;

  guest.memory.fill(0, 0, kRamSize);
  test::DriverRing ring(guest.memory, kQueueSize, kLayout);
  Virtqueue queue(guest.memory, kQueueSize);
  ring.configure(queue, ring_features);
  test::FakeTransport transport;
  device.activate(transport, features);

  // Lay out the chains: descriptors linked in ring order, buffers packed after the rings.
  std::vector<Expect> expected;
  uint64_t next_buffer = kLayout.buffers;
  bool crowded = false;
  size_t descriptors = 0;
  const size_t chains = 1 + in.u8() % kMaxChains;
  for (size_t c = 0; c < chains && !in.empty(); ++c) {
    // Descriptors are not reused, so what the table holds is what we expect.
    const size_t segments = std::min<size_t>(1 + in.u8() % kQueueSize, kQueueSize - descriptors);
    if (segments == 0) break;
    descriptors += segments;
    std::vector<test::Buffer> buffers;
    Expect e{0, 0, 0, false};
    for (size_t s = 0; s < segments; ++s) {
      const uint8_t flags = in.u8();
      const bool writable = flags & 1;
      uint64_t len = in.u16() & 0x1fff;
      uint64_t gpa = next_buffer + (flags >> 4);  // sometimes misaligned
      if (flags & 2) len = in.u32();              // any length: the queue must refuse bad ones
      if (flags & 4) gpa = kRomBase + (flags >> 4);
      if (!writable) {
        const auto content = in.take(std::min<uint64_t>(len, 4096));
        guest.memory.write(gpa, content.data(), content.size());
      }
      if (gpa < kRomBase) {
        // Buffers never overlap, unless RAM runs out: then statuses may be overwritten.
        crowded |= gpa + len > kRamSize;
        next_buffer = std::min(gpa + len, kRamSize - 1);
      }
      buffers.push_back({gpa, static_cast<uint32_t>(len), writable});
      if (writable && len > 0) {
        e.writable += len;
        e.status_gpa = gpa + len - 1;
        e.status_in_ram = gpa + len <= kRamSize;
      }
    }
    e.head = ring.add_chain(buffers);
    expected.push_back(e);
  }
  // Poison the status bytes so that we can see the device wrote them.
  for (const auto& e : expected) {
    if (e.status_in_ram) guest.memory.write_obj<uint8_t>(e.status_gpa, 0xee);
  }

  // The parser first, on its own queue over the same ring, against the disk or one of a size
  // that tests the range arithmetic at its edges.
  static constexpr uint64_t kCapacities[] = {0, 1ull << 55, ~0ull};
  BlockDisk disk{device.capacity_sectors(), (features & (1ull << VIRTIO_BLK_F_RO)) != 0,
                 (features & (1ull << VIRTIO_BLK_F_DISCARD)) != 0,
                 (features & (1ull << VIRTIO_BLK_F_WRITE_ZEROES)) != 0};
  if (selector & 0xc0) disk.capacity_sectors = kCapacities[(selector >> 6) - 1];
  Virtqueue parse_queue(guest.memory, kQueueSize);
  ring.configure(parse_queue, ring_features);
  while (auto chain = parse_queue.pop()) check_parse(*chain, disk);

  device.queue_notify(0, queue);

  // Every chain the device took back has a sane length and, if it had room, a status.
  const uint16_t used_idx = ring.used_idx();
  check(used_idx <= expected.size());
  for (uint16_t i = 0; i < used_idx; ++i) {
    const vring_used_elem elem = ring.used(i);
    const Expect& e = expected[i];
    check(elem.id == e.head);
    check(elem.len <= e.writable);
    if (e.writable > 0 && e.status_in_ram && !crowded) {
      const uint8_t status = *guest.memory.read_obj<uint8_t>(e.status_gpa);
      check(status == VIRTIO_BLK_S_OK || status == VIRTIO_BLK_S_IOERR ||
            status == VIRTIO_BLK_S_UNSUPP);
      // The used length counts a prefix of the writable bytes (§2.7.8.2): an error reply wrote
      // only its status, so it counts it only when the status is the first writable byte.
      if (status != VIRTIO_BLK_S_OK) check(elem.len == (e.writable == 1 ? 1u : 0u));
    }
  }
  device.reset();
  check(device.capacity_sectors() == kImageSize / 512);
  return 0;
}
