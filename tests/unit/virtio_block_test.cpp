// virtio-blk against hand-built rings in test guest memory and temporary image files: what a
// well-behaved driver asks for, and each way a hostile one can get a request wrong.
#include <gtest/gtest.h>

#define VIRTIO_RING_NO_LEGACY
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/block_request.hpp"
#include "libvmm/virtio/mmio_transport.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;

namespace virtio_block_test {

constexpr uint64_t kRamSize = 4 * MiB;
constexpr uint64_t kDesc = 0x1000;  // 256 descriptors
constexpr uint64_t kAvail = 0x2000;
constexpr uint64_t kUsed = 0x3000;
constexpr uint64_t kIndirect = 0x4000;
constexpr uint64_t kBuffers = 0x10000;
constexpr uint16_t kQueueSize = VirtioBlock::kQueueSize;
constexpr uint32_t kSector = 512;

uint8_t pattern(uint64_t offset) {
  return static_cast<uint8_t>(offset * 7 + offset / kSector * 13 + 1);
}

std::vector<uint8_t> pattern_bytes(uint64_t offset, uint64_t len) {
  std::vector<uint8_t> bytes(len);
  for (uint64_t i = 0; i < len; ++i) bytes[i] = pattern(offset + i);
  return bytes;
}

// A temporary image file, filled with pattern() unless asked otherwise.
class TempImage {
 public:
  explicit TempImage(uint64_t size, bool fill = true, const std::string& dir = "/tmp") {
    std::string path = dir + "/virtio_block_test.XXXXXX";
    fd_ = ::mkstemp(path.data());
    EXPECT_GE(fd_, 0) << path;
    path_ = path;
    if (fill) {
      write(0, pattern_bytes(0, size));
    } else {
      EXPECT_EQ(::ftruncate(fd_, static_cast<off_t>(size)), 0);
    }
  }
  ~TempImage() {
    ::unlink(path_.c_str());
    ::close(fd_);
  }
  TempImage(const TempImage&) = delete;
  TempImage& operator=(const TempImage&) = delete;

  const std::string& path() const { return path_; }
  std::vector<uint8_t> read(uint64_t offset, uint64_t len) const {
    std::vector<uint8_t> bytes(len);
    EXPECT_EQ(::pread(fd_, bytes.data(), len, static_cast<off_t>(offset)),
              static_cast<ssize_t>(len));
    return bytes;
  }
  void write(uint64_t offset, const std::vector<uint8_t>& bytes) {
    ASSERT_EQ(::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(bytes.size()));
    ASSERT_EQ(::fsync(fd_), 0);
  }
  void resize(uint64_t size) { ASSERT_EQ(::ftruncate(fd_, static_cast<off_t>(size)), 0); }
  uint64_t allocated_bytes() const {
    struct stat st {};
    EXPECT_EQ(::fstat(fd_, &st), 0);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }
  // The start of the first hole at or after `offset` (the file size if there is none).
  uint64_t next_hole(uint64_t offset) const {
    return static_cast<uint64_t>(::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE));
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// A backend in host memory that records what the device asks of it.
class RecordingBackend final : public BlockBackend {
 public:
  explicit RecordingBackend(uint64_t size, bool readonly = false)
      : data(size), readonly_(readonly) {}

  uint64_t size() const override { return data.size(); }
  bool readonly() const override { return readonly_; }
  int read(uint64_t offset, std::span<iovec> iov) override {
    if (fail_with) return fail_with;
    for (const iovec& v : iov) {
      std::memcpy(v.iov_base, data.data() + offset, v.iov_len);
      offset += v.iov_len;
    }
    return 0;
  }
  int write(uint64_t offset, std::span<iovec> iov) override {
    if (fail_with) return fail_with;
    ++writes;
    for (const iovec& v : iov) {
      std::memcpy(data.data() + offset, v.iov_base, v.iov_len);
      offset += v.iov_len;
    }
    return 0;
  }
  void transfer_batch(std::span<BlockTransfer> batch) override {
    batch_sizes.push_back(batch.size());
    if (on_batch) on_batch();
    BlockBackend::transfer_batch(batch);
  }
  int flush() override {
    ++flushes;
    if (on_flush) on_flush();
    return fail_with;
  }
  int discard(uint64_t, uint64_t) override { return fail_with; }
  int write_zeroes(uint64_t offset, uint64_t len, bool) override {
    if (fail_with) return fail_with;
    std::fill_n(data.begin() + static_cast<ptrdiff_t>(offset), len, 0);
    return 0;
  }

  std::vector<uint8_t> data;
  int fail_with = 0;
  int writes = 0;
  int flushes = 0;
  std::function<void()> on_flush;
  std::vector<size_t> batch_sizes;
  std::function<void()> on_batch;

 private:
  bool readonly_;
};

struct Completion {
  uint8_t status;
  uint32_t len;  // what the device put in the used ring
};

constexpr uint8_t kNoStatus = 0xee;  // what the status byte holds until the device writes it

// Every device test runs twice: with the device's I/O thread (GetParam(), the default) and
// with the I/O done inside queue_notify() (iothread=off).
class VirtioBlockTest : public ::testing::TestWithParam<bool> {
 protected:
  bool io_thread() const { return GetParam(); }
  std::string threading_option() const { return io_thread() ? ",iothread=on" : ",iothread=off"; }
  BlockThreading threading() const { return {io_thread(), "blk-io-test", {}}; }

  void TearDown() override {
    // The device has one queue: whatever it signals or asks to be renotified is queue 0.
    EXPECT_EQ(transport.signals(), transport.signals(0));
    EXPECT_EQ(transport.renotifies(), transport.renotifies(0));
  }

  // --- Devices

  void use(std::shared_ptr<VirtioBlock> dev, uint64_t features) {
    device = std::move(dev);
    EXPECT_EQ(device->has_io_thread(), io_thread());
    ring.configure(queue, feature_bit(VIRTIO_RING_F_INDIRECT_DESC));
    transport.serve(std::span(&queue, 1));  // where the I/O thread finds the queue
    device->activate(transport, features);
  }
  void open(const TempImage& image, const std::string& options = "") {
    auto dev =
        std::make_shared<VirtioBlock>(parse_disk_spec(image.path() + options + threading_option()));
    const uint64_t features = dev->device_features();
    use(std::move(dev), features);
  }
  RecordingBackend& open_recording(uint64_t size, uint64_t features_to_drop = 0) {
    auto backend = std::make_unique<RecordingBackend>(size);
    RecordingBackend& ref = *backend;
    auto dev = std::make_shared<VirtioBlock>(std::move(backend), "", threading());
    const uint64_t features = dev->device_features() & ~features_to_drop;
    use(std::move(dev), features);
    return ref;
  }

  // --- Guest buffers

  uint64_t alloc(uint64_t len, uint64_t align = 16) { return ring.alloc(len, align); }
  uint64_t header(uint32_t type, uint64_t sector) {
    const uint64_t gpa = alloc(16);
    EXPECT_TRUE(memory.write_obj(gpa, virtio_blk_outhdr{type, 0, sector}));
    return gpa;
  }
  uint64_t status_byte() {
    const uint64_t gpa = alloc(1);
    EXPECT_TRUE(memory.write_obj<uint8_t>(gpa, kNoStatus));
    return gpa;
  }
  uint64_t bytes(const std::vector<uint8_t>& data, uint64_t align = 16) {
    return ring.place(data, align);
  }
  std::vector<uint8_t> guest(uint64_t gpa, uint64_t len) { return memory.bytes(gpa, len); }

  // --- The driver's side of the ring

  // The driver notifies queue 0; returns once the device has done what it will do about it
  // (with an I/O thread: once the thread is idle again).
  void notify() {
    device->queue_notify(0, queue);
    device->wait_idle();
  }

  // Links `bufs` into a chain (in the ring's table, or an indirect one) and makes it available.
  void publish(const std::vector<Buffer>& bufs, bool indirect = false) {
    if (indirect) {
      ring.add_indirect_chain(kIndirect, bufs);
    } else {
      ring.add_chain(bufs);
    }
  }
  uint16_t used_idx() { return ring.used_idx(); }
  vring_used_elem used(uint16_t idx) { return ring.used(idx); }

  // Publishes one chain, notifies the device and returns its completion.
  Completion run(const std::vector<Buffer>& bufs, uint64_t status_gpa, bool indirect = false) {
    const uint16_t before = used_idx();
    publish(bufs, indirect);
    notify();
    EXPECT_FALSE(queue.broken()) << queue.error();
    EXPECT_EQ(used_idx(), static_cast<uint16_t>(before + 1)) << "one chain in, one chain out";
    return {*memory.read_obj<uint8_t>(status_gpa), used(before).len};
  }

  // --- Requests as a Linux driver lays them out

  Completion read(uint64_t sector, uint32_t len, uint64_t& data_gpa) {
    const uint64_t h = header(VIRTIO_BLK_T_IN, sector);
    data_gpa = alloc(len, 512);
    const uint64_t s = status_byte();
    return run({{h, 16, false}, {data_gpa, len, true}, {s, 1, true}}, s);
  }
  Completion write(uint64_t sector, const std::vector<uint8_t>& data) {
    const uint64_t h = header(VIRTIO_BLK_T_OUT, sector);
    const uint64_t d = bytes(data, 512);
    const uint64_t s = status_byte();
    return run({{h, 16, false}, {d, static_cast<uint32_t>(data.size()), false}, {s, 1, true}}, s);
  }
  Completion command(uint32_t type, uint64_t sector = 0) {
    const uint64_t h = header(type, sector);
    const uint64_t s = status_byte();
    return run({{h, 16, false}, {s, 1, true}}, s);
  }
  Completion ranges(uint32_t type, const std::vector<virtio_blk_discard_write_zeroes>& segs) {
    const uint64_t h = header(type, 0);
    const uint64_t d = alloc(16 * segs.size());
    EXPECT_TRUE(memory.write(d, segs.data(), 16 * segs.size()));
    const uint64_t s = status_byte();
    return run({{h, 16, false}, {d, static_cast<uint32_t>(16 * segs.size()), false}, {s, 1, true}},
               s);
  }

  TestMemory memory{kRamSize};
  Virtqueue queue{memory, kQueueSize};
  DriverRing ring{memory, kQueueSize, {kDesc, kAvail, kUsed, kBuffers}};
  FakeTransport transport;
  std::shared_ptr<VirtioBlock> device;
};

template <typename T>
T config_field(VirtioBlock& device, size_t offset) {
  T value{};
  device.read_config(static_cast<uint32_t>(offset),
                     {reinterpret_cast<uint8_t*>(&value), sizeof(value)});
  return value;
}

std::string user_error(const std::string& spec) {
  try {
    VirtioBlock device(parse_disk_spec(spec));
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

// ---------------------------------------------------------------------------------------------
// --disk spec and opening the image

TEST(DiskSpec, PathAndOptions) {
  auto c = parse_disk_spec("/images/root.img");
  EXPECT_EQ(c.path, "/images/root.img");
  EXPECT_FALSE(c.readonly);
  EXPECT_FALSE(c.direct);
  EXPECT_EQ(c.serial, "");

  c = parse_disk_spec("a.img,readonly,direct,serial=disk-0001");
  EXPECT_EQ(c.path, "a.img");
  EXPECT_TRUE(c.readonly);
  EXPECT_TRUE(c.direct);
  EXPECT_EQ(c.serial, "disk-0001");

  EXPECT_EQ(parse_disk_spec("a.img,serial=12345678901234567890").serial.size(), 20u);
  EXPECT_EQ(c.io, BlockIo::automatic) << "io=auto by default";
  EXPECT_EQ(parse_disk_spec("a.img,io=io_uring").io, BlockIo::io_uring);
  EXPECT_EQ(parse_disk_spec("a.img,io=sync").io, BlockIo::sync);
  EXPECT_EQ(parse_disk_spec("a.img,io=auto").io, BlockIo::automatic);
  EXPECT_TRUE(c.iothread) << "an I/O thread by default";
  EXPECT_FALSE(parse_disk_spec("a.img,iothread=off").iothread);
  EXPECT_TRUE(parse_disk_spec("a.img,iothread=on").iothread);
}

TEST(DiskSpec, ErrorsNameTheFlagAndSpec) {
  auto error = [](const std::string& spec) {
    try {
      parse_disk_spec(spec);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error("a.img,bogus"),
            "--disk a.img,bogus: unknown option 'bogus' (expected readonly, direct, serial=ID, "
            "io=auto, io=sync or io=io_uring, iothread=on or iothread=off, poll_us=N, "
            "num_queues=N, transport=pci|mmio)");
  EXPECT_EQ(error("a.img,"), "--disk a.img,: empty option between commas");
  EXPECT_EQ(error("a.img,io=io_uring,io=sync"),
            "--disk a.img,io=io_uring,io=sync: option 'io' given twice");
  EXPECT_EQ(error(""), "--disk '': missing image path");
  EXPECT_EQ(error("a.img,io=aio"),
            "--disk a.img,io=aio: io=\"aio\" must be auto, sync or io_uring");
  EXPECT_EQ(error("a.img,iothread=yes"),
            "--disk a.img,iothread=yes: iothread=\"yes\" must be on or off");
  EXPECT_EQ(error("a.img,readonly=yes"),
            "--disk a.img,readonly=yes: readonly=\"yes\" must be true or false");
  EXPECT_EQ(error(",readonly"), "--disk ,readonly: missing image path");
  EXPECT_EQ(error("a.img,serial=123456789012345678901"),
            "--disk a.img,serial=123456789012345678901: serial '123456789012345678901' is "
            "longer than 20 characters");
  EXPECT_EQ(error("a.img,serial=a\tb"), "--disk a.img,serial=a\tb: serial must be printable ASCII");
}

// The image backend names the image; the device registry adds the flag or file:line (see
// virtio_device_kind_test.cpp).
TEST(DiskOpen, ErrorsNameTheImage) {
  EXPECT_EQ(user_error("/nonexistent-dir/y.img"),
            "image /nonexistent-dir/y.img: No such file or directory");
  EXPECT_EQ(user_error("/tmp"), "image /tmp: is a directory");
  EXPECT_EQ(user_error("/tmp,readonly"), "image /tmp: is a directory");

  TempImage odd(1000);
  EXPECT_EQ(user_error(odd.path()),
            "image " + odd.path() + ": size 1000 bytes is not a multiple of 512");

  const std::string fifo = odd.path() + ".fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(user_error(fifo + ",readonly"),
            "image " + fifo + ": not a regular file or block device");
  ::unlink(fifo.c_str());
}

TEST(DiskOpen, EmptyImageHasNoSectors) {
  TempImage empty(0);
  VirtioBlock device(parse_disk_spec(empty.path()));
  EXPECT_EQ(device.capacity_sectors(), 0u);
  EXPECT_EQ(config_field<uint64_t>(device, offsetof(virtio_blk_config, capacity)), 0u);
}

TEST(DiskOpen, LockKeepsASecondWriterOut) {
  TempImage image(4096);
  {
    VirtioBlock writer(parse_disk_spec(image.path()));
    EXPECT_EQ(user_error(image.path()), "image " + image.path() + ": in use by another process");
    EXPECT_EQ(user_error(image.path() + ",readonly"),
              "image " + image.path() + ": in use by another process");
  }
  {
    VirtioBlock reader1(parse_disk_spec(image.path() + ",readonly"));
    VirtioBlock reader2(parse_disk_spec(image.path() + ",readonly"));  // readers share
    EXPECT_EQ(user_error(image.path()), "image " + image.path() + ": in use by another process");
  }
  VirtioBlock writer(parse_disk_spec(image.path()));  // the locks went with the devices
}

TEST(DiskOpen, ReadOnlyImageRefusesWrites) {
  TempImage image(4096);
  auto backend = BlockImage::open({.path = image.path(), .readonly = true});
  EXPECT_TRUE(backend->readonly());
  std::vector<uint8_t> data(512, 0);
  iovec v{data.data(), data.size()};
  EXPECT_EQ(backend->write(0, {&v, 1}), EROFS);
  EXPECT_EQ(backend->write_zeroes(0, 512, false), EROFS);
  EXPECT_EQ(backend->discard(0, 512), EROFS);
  EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096));
}

// Linux reports a lost writeback once: after one failed fdatasync the next may succeed with
// the guest's data gone, so every later flush fails too.
TEST(DiskFlush, AFailedFlushFailsEveryLaterOne) {
  FlushErrorLatch latch;
  EXPECT_EQ(latch.after(0), 0);
  EXPECT_EQ(latch.after(0), 0);
  EXPECT_EQ(latch.after(ENOSPC), ENOSPC);
  EXPECT_EQ(latch.after(0), EIO);
  EXPECT_EQ(latch.after(0), EIO);
  EXPECT_EQ(latch.after(EIO), EIO);
}

// ---------------------------------------------------------------------------------------------
// Identity, features and configuration space

TEST_P(VirtioBlockTest, AdvertisesFeaturesAndConfig) {
  TempImage image(64 * KiB);
  open(image, ",serial=abc");
  EXPECT_EQ(device->name(), "virtio-blk");
  EXPECT_EQ(device->device_id(), 2u);
  EXPECT_EQ(device->queue_max_sizes(), std::vector<uint16_t>{256});
  const uint64_t features = device->device_features();
  for (unsigned f : {VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE,
                     VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES}) {
    EXPECT_TRUE(features & feature_bit(f)) << f;
  }
  EXPECT_FALSE(features & feature_bit(VIRTIO_BLK_F_RO));
  EXPECT_EQ(features & ~0x7fffull, 0u) << "no transport or unknown bits";

  EXPECT_EQ(device->config_size(), sizeof(virtio_blk_config));
  EXPECT_EQ(config_field<uint64_t>(*device, offsetof(virtio_blk_config, capacity)), 128u);
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, seg_max)), 254u);
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, size_max)), 256 * KiB);
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, blk_size)), 512u);
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, max_discard_sectors)),
            VirtioBlock::kMaxRangeSectors);
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, max_discard_seg)),
            VirtioBlock::kMaxRangeSegments);
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, discard_sector_alignment)),
            8u);
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, max_write_zeroes_sectors)),
            2048u);
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, max_write_zeroes_seg)),
            VirtioBlock::kMaxRangeSegments);
  EXPECT_EQ(config_field<uint8_t>(*device, offsetof(virtio_blk_config, write_zeroes_may_unmap)),
            1u);
  // Byte-wise reads see the same little-endian value.
  EXPECT_EQ(config_field<uint8_t>(*device, offsetof(virtio_blk_config, capacity)), 128u);
  EXPECT_EQ(config_field<uint8_t>(*device, offsetof(virtio_blk_config, capacity) + 1), 0u);
}

TEST_P(VirtioBlockTest, WorksBehindTheMmioTransport) {
  TempImage image(8 * KiB);
  auto dev = std::make_shared<VirtioBlock>(parse_disk_spec(image.path()));
  VirtioMmioTransport window(dev, memory, std::make_shared<FakeIrq>());
  const MmioDriver mmio(window);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_DEVICE_ID), 2u);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_QUEUE_NUM_MAX), 256u);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_CONFIG + offsetof(virtio_blk_config, capacity)), 16u);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_CONFIG + offsetof(virtio_blk_config, blk_size)), 512u);
}

// ---------------------------------------------------------------------------------------------
// Reads, writes, flush, GET_ID

TEST_P(VirtioBlockTest, ReadsSectors) {
  TempImage image(64 * KiB);
  open(image);
  uint64_t data = 0;
  const auto c = read(3, 2 * kSector, data);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(c.len, 2 * kSector + 1) << "data and status";
  EXPECT_EQ(guest(data, 2 * kSector), pattern_bytes(3 * kSector, 2 * kSector));
  EXPECT_GE(transport.signals(0), 1);
}

TEST_P(VirtioBlockTest, ReadsLastSectorAndEmptyRange) {
  TempImage image(64 * KiB);
  open(image);
  uint64_t data = 0;
  EXPECT_EQ(read(127, kSector, data).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(data, kSector), pattern_bytes(127 * kSector, kSector));
  const auto c = read(128, 0, data);  // no data, at the very end: nothing to do
  EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(c.len, 1u);
}

TEST_P(VirtioBlockTest, WritesSectors) {
  TempImage image(64 * KiB);
  open(image);
  std::vector<uint8_t> data(3 * kSector);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(255 - i % 251);
  const auto c = write(10, data);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(c.len, 1u) << "only the status was written into the chain";
  EXPECT_EQ(image.read(10 * kSector, data.size()), data);
  EXPECT_EQ(image.read(9 * kSector, kSector), pattern_bytes(9 * kSector, kSector));
  EXPECT_EQ(image.read(13 * kSector, kSector), pattern_bytes(13 * kSector, kSector));
}

TEST_P(VirtioBlockTest, FlushCompletesOnlyAfterTheBackendSynced) {
  RecordingBackend& backend = open_recording(64 * KiB);
  const uint64_t h = header(VIRTIO_BLK_T_FLUSH, 0);
  const uint64_t s = status_byte();
  bool completed_early = true;
  backend.on_flush = [&] {
    completed_early = used_idx() != 0 || *memory.read_obj<uint8_t>(s) != kNoStatus;
  };
  const auto c = run({{h, 16, false}, {s, 1, true}}, s);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(c.len, 1u);
  EXPECT_EQ(backend.flushes, 1);
  EXPECT_FALSE(completed_early) << "status and used entry must come after the sync";
}

TEST_P(VirtioBlockTest, FlushOnImageFile) {
  TempImage image(64 * KiB);
  open(image);
  EXPECT_EQ(command(VIRTIO_BLK_T_FLUSH).status, VIRTIO_BLK_S_OK);
}

TEST_P(VirtioBlockTest, WritesAreWriteThroughWithoutFlushFeature) {
  RecordingBackend& backend = open_recording(64 * KiB, feature_bit(VIRTIO_BLK_F_FLUSH));
  EXPECT_EQ(write(0, std::vector<uint8_t>(kSector, 1)).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(backend.flushes, 1);
}

TEST_P(VirtioBlockTest, WritesAreNotSyncedWhenTheDriverFlushes) {
  RecordingBackend& backend = open_recording(64 * KiB);
  EXPECT_EQ(write(0, std::vector<uint8_t>(kSector, 1)).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(backend.flushes, 0);
}

TEST_P(VirtioBlockTest, GetIdReturnsSerialNulPadded) {
  TempImage image(4096);
  open(image, ",serial=vol-7");
  const uint64_t h = header(VIRTIO_BLK_T_GET_ID, 0);
  const uint64_t id = bytes(std::vector<uint8_t>(20, 0xaa));
  const uint64_t s = status_byte();
  const auto c = run({{h, 16, false}, {id, 20, true}, {s, 1, true}}, s);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(c.len, 21u);
  std::vector<uint8_t> expected(20, 0);
  std::memcpy(expected.data(), "vol-7", 5);
  EXPECT_EQ(guest(id, 20), expected);
}

TEST_P(VirtioBlockTest, GetIdOfTwentyCharactersHasNoTerminator) {
  TempImage image(4096);
  open(image, ",serial=ABCDEFGHIJKLMNOPQRST");
  const uint64_t h = header(VIRTIO_BLK_T_GET_ID, 0);
  const uint64_t id = alloc(21);  // data and status in one buffer
  EXPECT_EQ(run({{h, 16, false}, {id, 21, true}}, id + 20).status, VIRTIO_BLK_S_OK);
  const auto bytes = guest(id, 20);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "ABCDEFGHIJKLMNOPQRST");
}

TEST_P(VirtioBlockTest, GetIdNeedsTwentyBytes) {
  TempImage image(4096);
  open(image, ",serial=x");
  const uint64_t h = header(VIRTIO_BLK_T_GET_ID, 0);
  const uint64_t id = bytes(std::vector<uint8_t>(16, 0xaa));
  const uint64_t s = status_byte();
  const auto c = run({{h, 16, false}, {id, 16, true}, {s, 1, true}}, s);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(c.len, 0u) << "the status is not next to written data (§2.7.8.2)";
  EXPECT_EQ(guest(id, 16), std::vector<uint8_t>(16, 0xaa));
}

// ---------------------------------------------------------------------------------------------
// DISCARD and WRITE_ZEROES

TEST_P(VirtioBlockTest, DiscardPunchesAHoleThatReadsAsZeroes) {
  TempImage image(1 * MiB);
  open(image);
  ASSERT_EQ(image.next_hole(0), 1 * MiB) << "fully allocated to begin with";
  const uint64_t allocated = image.allocated_bytes();

  EXPECT_EQ(ranges(VIRTIO_BLK_T_DISCARD, {{256, 256, 0}}).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.next_hole(0), 128 * KiB);
  EXPECT_EQ(image.allocated_bytes(), allocated - 128 * KiB);

  uint64_t data = 0;
  ASSERT_EQ(read(255, 258 * kSector, data).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(data, kSector), pattern_bytes(255 * kSector, kSector));
  EXPECT_EQ(guest(data + kSector, 256 * kSector), std::vector<uint8_t>(256 * kSector, 0));
  EXPECT_EQ(guest(data + 257 * kSector, kSector), pattern_bytes(512 * kSector, kSector));
}

TEST_P(VirtioBlockTest, DiscardTakesSeveralSegments) {
  TempImage image(1 * MiB);
  open(image);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_DISCARD, {{0, 8, 0}, {64, 8, 0}, {100, 0, 0}}).status,
            VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(0, 4096), std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(image.read(32 * KiB, 4096), std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(image.read(4096, 4096), pattern_bytes(4096, 4096));
}

TEST_P(VirtioBlockTest, DiscardRefusesFlags) {
  TempImage image(64 * KiB);
  open(image);
  // The unmap flag is for WRITE_ZEROES only; other flags are unknown (spec §5.2.6.2).
  EXPECT_EQ(ranges(VIRTIO_BLK_T_DISCARD, {{0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP}}).status,
            VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_DISCARD, {{0, 8, 0x2}}).status, VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{0, 8, 0x4}}).status, VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096));
}

TEST_P(VirtioBlockTest, WriteZeroesReadsBackZeroes) {
  TempImage image(1 * MiB);
  open(image);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{3, 5, 0}}).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(3 * kSector, 5 * kSector), std::vector<uint8_t>(5 * kSector, 0));
  EXPECT_EQ(image.read(2 * kSector, kSector), pattern_bytes(2 * kSector, kSector));
  EXPECT_EQ(image.read(8 * kSector, kSector), pattern_bytes(8 * kSector, kSector));

  // With unmap the device may punch a hole; the sectors still read as zeroes.
  EXPECT_EQ(
      ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{256, 256, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP}}).status,
      VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(128 * KiB, 128 * KiB), std::vector<uint8_t>(128 * KiB, 0));
  EXPECT_EQ(image.next_hole(64 * KiB), 128 * KiB);
  uint64_t data = 0;
  ASSERT_EQ(read(256, 8 * kSector, data).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(data, 8 * kSector), std::vector<uint8_t>(8 * kSector, 0));
}

TEST_P(VirtioBlockTest, WriteZeroesFallsBackToWritingZeroes) {
  // tmpfs has holes but no FALLOC_FL_ZERO_RANGE: without unmap the device writes zeroes.
  if (::access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no writable /dev/shm";
  TempImage image(1 * MiB, true, "/dev/shm");
  open(image);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{1, 300, 0}}).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(kSector, 300 * kSector), std::vector<uint8_t>(300 * kSector, 0));
  EXPECT_EQ(image.read(0, kSector), pattern_bytes(0, kSector));
  EXPECT_EQ(image.read(301 * kSector, kSector), pattern_bytes(301 * kSector, kSector));
  EXPECT_EQ(image.next_hole(0), 1 * MiB) << "written, not punched";
}

// WRITE_ZEROES may be carried out by writing zeroes (tmpfs, NFS): it is held to 1 MiB a
// segment, 32 MiB a request, where DISCARD (a hole punched, or nothing) may ask for 1 GiB.
TEST_P(VirtioBlockTest, WriteZeroesIsBoundedLikeAWrite) {
  TempImage image(4 * MiB, false);
  open(image);
  const uint32_t max = VirtioBlock::kMaxWriteZeroesSectors;
  EXPECT_LE(uint64_t{max} * kSector * VirtioBlock::kMaxRangeSegments, 32 * MiB);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{0, max + 1, 0}}).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(
      ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{0, max + 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP}}).status,
      VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(image.allocated_bytes(), 0u) << "nothing zeroed by writing";
  EXPECT_EQ(ranges(VIRTIO_BLK_T_DISCARD, {{0, max + 1, 0}}).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{0, max, 0}, {max, max, 0}}).status,
            VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(0, 2 * MiB), std::vector<uint8_t>(2 * MiB, 0));
}

TEST_P(VirtioBlockTest, RangeRequestsAreCheckedBeforeAnySegmentIsDone) {
  TempImage image(64 * KiB);
  open(image);
  struct Case {
    std::vector<virtio_blk_discard_write_zeroes> segs;
  };
  for (const uint32_t type : {VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES}) {
    const uint32_t max = type == VIRTIO_BLK_T_DISCARD ? VirtioBlock::kMaxRangeSectors
                                                      : VirtioBlock::kMaxWriteZeroesSectors;
    const Case cases[] = {
        {{{0, 8, 0}, {120, 9, 0}}},         // second segment ends past the disk
        {{{0, 8, 0}, {128, 1, 0}}},         // starts at the end
        {{{0, 8, 0}, {~0ull, 2, 0}}},       // sector + num_sectors overflows
        {{{0, 8, 0}, {1ull << 55, 1, 0}}},  // sector * 512 overflows
        {{{0, 8, 0}, {0, max + 1, 0}}},     // more than max_*_sectors
    };
    for (const auto& c : cases) {
      EXPECT_EQ(ranges(type, c.segs).status, VIRTIO_BLK_S_IOERR) << c.segs[1].sector;
      EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096)) << "first segment left alone";
    }
    std::vector<virtio_blk_discard_write_zeroes> too_many(VirtioBlock::kMaxRangeSegments + 1,
                                                          {0, 1, 0});
    EXPECT_EQ(ranges(type, too_many).status, VIRTIO_BLK_S_IOERR);
    // Not a whole number of 16-byte segments, or none.
    const uint64_t h = header(type, 0);
    const uint64_t d = alloc(24);
    const uint64_t s = status_byte();
    EXPECT_EQ(run({{h, 16, false}, {d, 24, false}, {s, 1, true}}, s).status, VIRTIO_BLK_S_IOERR);
    EXPECT_EQ(command(type).status, VIRTIO_BLK_S_IOERR);
  }
}

TEST_P(VirtioBlockTest, RangeRequestsNeedTheirFeature) {
  RecordingBackend& backend = open_recording(
      64 * KiB, feature_bit(VIRTIO_BLK_F_DISCARD) | feature_bit(VIRTIO_BLK_F_WRITE_ZEROES));
  std::fill(backend.data.begin(), backend.data.end(), 1);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_DISCARD, {{0, 8, 0}}).status, VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{0, 8, 0}}).status, VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(backend.data[0], 1);
}

TEST_P(VirtioBlockTest, WriteZeroesInDataBuffersIsRefused) {
  TempImage image(64 * KiB);
  open(image);
  const uint64_t h = header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
  const uint64_t d = alloc(16);
  ASSERT_TRUE(memory.write_obj(d, virtio_blk_discard_write_zeroes{0, 8, 0}));
  const uint64_t s = status_byte();
  EXPECT_EQ(run({{h, 16, false}, {d, 16, true}, {s, 1, true}}, s).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096));
}

// ---------------------------------------------------------------------------------------------
// Read-only disks

TEST_P(VirtioBlockTest, ReadOnlyDiskAdvertisesRoAndRefusesWrites) {
  TempImage image(64 * KiB);
  open(image, ",readonly");
  const uint64_t features = device->device_features();
  EXPECT_TRUE(features & feature_bit(VIRTIO_BLK_F_RO));
  EXPECT_FALSE(features & feature_bit(VIRTIO_BLK_F_DISCARD));
  EXPECT_FALSE(features & feature_bit(VIRTIO_BLK_F_WRITE_ZEROES));
  EXPECT_EQ(config_field<uint32_t>(*device, offsetof(virtio_blk_config, max_discard_sectors)), 0u);

  const auto c = write(0, std::vector<uint8_t>(kSector, 0));
  EXPECT_EQ(c.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(c.len, 1u);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_DISCARD, {{0, 8, 0}}).status, VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{0, 8, 0}}).status, VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(image.read(0, 64 * KiB), pattern_bytes(0, 64 * KiB));

  uint64_t data = 0;
  EXPECT_EQ(read(1, kSector, data).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(data, kSector), pattern_bytes(kSector, kSector));
  EXPECT_EQ(command(VIRTIO_BLK_T_FLUSH).status, VIRTIO_BLK_S_OK);
}

// ---------------------------------------------------------------------------------------------
// O_DIRECT

TEST_P(VirtioBlockTest, DirectImageTakesAlignedAndMisalignedBuffers) {
  TempImage image(64 * KiB);
  open(image, ",direct");
  // Page-aligned guest buffer: straight to the disk.
  uint64_t data = 0;
  ASSERT_EQ(read(8, 4096, data).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(data, 4096), pattern_bytes(8 * kSector, 4096));
  // A buffer at an odd address cannot go through O_DIRECT; it still works.
  const uint64_t h = header(VIRTIO_BLK_T_IN, 1);
  const uint64_t odd = alloc(kSector + 3, 4096) + 3;
  const uint64_t s = status_byte();
  ASSERT_EQ(run({{h, 16, false}, {odd, kSector, true}, {s, 1, true}}, s).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(odd, kSector), pattern_bytes(kSector, kSector));

  std::vector<uint8_t> ones(4096, 1);
  const uint64_t wh = header(VIRTIO_BLK_T_OUT, 16);
  const uint64_t wd = bytes(ones, 4096);
  const uint64_t ws = status_byte();
  ASSERT_EQ(run({{wh, 16, false}, {wd, 4096, false}, {ws, 1, true}}, ws).status, VIRTIO_BLK_S_OK);
  const uint64_t mh = header(VIRTIO_BLK_T_OUT, 24);
  const uint64_t md = alloc(kSector + 5, 4096) + 5;
  ASSERT_TRUE(memory.fill(md, 2, kSector));
  const uint64_t ms = status_byte();
  ASSERT_EQ(run({{mh, 16, false}, {md, kSector, false}, {ms, 1, true}}, ms).status,
            VIRTIO_BLK_S_OK);
  EXPECT_EQ(command(VIRTIO_BLK_T_FLUSH).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(16 * kSector, 4096), ones);
  EXPECT_EQ(image.read(24 * kSector, kSector), std::vector<uint8_t>(kSector, 2));
  // Mixed paths stay coherent: an aligned (direct) read sees the buffered write.
  ASSERT_EQ(read(24, 4096, data).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(data, kSector), std::vector<uint8_t>(kSector, 2));
}

// ---------------------------------------------------------------------------------------------
// Descriptor layouts a driver may choose

TEST_P(VirtioBlockTest, DataSpreadOverManySmallDescriptors) {
  TempImage image(64 * KiB);
  open(image);
  // Header in two pieces, 2 sectors of data in 64 buffers of 16 bytes, status after.
  const uint64_t h = header(VIRTIO_BLK_T_IN, 5);
  std::vector<Buffer> bufs{{h, 8, false}, {h + 8, 8, false}};
  std::vector<uint64_t> pieces;
  for (int i = 0; i < 64; ++i) {
    pieces.push_back(alloc(16, 64));  // scattered, not contiguous
    bufs.push_back({pieces.back(), 16, true});
  }
  const uint64_t s = status_byte();
  bufs.push_back({s, 1, true});
  const auto c = run(bufs, s);
  ASSERT_EQ(c.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(c.len, 1025u);
  std::vector<uint8_t> got;
  for (uint64_t p : pieces) {
    const auto piece = guest(p, 16);
    got.insert(got.end(), piece.begin(), piece.end());
  }
  EXPECT_EQ(got, pattern_bytes(5 * kSector, 1024));

  // The same for a write, with the header sharing its descriptor with the first data bytes.
  const auto data = pattern_bytes(999, 1024);
  const uint64_t hd = alloc(16 + 100);
  ASSERT_TRUE(memory.write_obj(hd, virtio_blk_outhdr{VIRTIO_BLK_T_OUT, 0, 40}));
  ASSERT_TRUE(memory.write(hd + 16, data.data(), 100));
  std::vector<Buffer> wbufs{{hd, 116, false}};
  for (uint64_t done = 100; done < 1024;) {
    const uint64_t n = std::min<uint64_t>(37, 1024 - done);
    const uint64_t p = alloc(n, 64);
    EXPECT_TRUE(memory.write(p, data.data() + done, n));
    wbufs.push_back({p, static_cast<uint32_t>(n), false});
    done += n;
  }
  const uint64_t ws = status_byte();
  wbufs.push_back({ws, 1, true});
  ASSERT_EQ(run(wbufs, ws).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(40 * kSector, 1024), data);
}

TEST_P(VirtioBlockTest, StatusMayShareTheLastDataBuffer) {
  TempImage image(64 * KiB);
  open(image);
  const uint64_t h = header(VIRTIO_BLK_T_IN, 2);
  const uint64_t d = alloc(kSector + 1);
  ASSERT_TRUE(memory.write_obj<uint8_t>(d + kSector, kNoStatus));
  const auto c = run({{h, 16, false}, {d, kSector + 1, true}}, d + kSector);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(c.len, kSector + 1);
  EXPECT_EQ(guest(d, kSector), pattern_bytes(2 * kSector, kSector));
}

TEST_P(VirtioBlockTest, ChainThroughIndirectTable) {
  TempImage image(64 * KiB);
  open(image);
  const uint64_t h = header(VIRTIO_BLK_T_IN, 4);
  const uint64_t d = alloc(kSector, 512);
  const uint64_t s = status_byte();
  const auto c = run({{h, 16, false}, {d, kSector, true}, {s, 1, true}}, s, /*indirect=*/true);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(d, kSector), pattern_bytes(4 * kSector, kSector));
}

TEST_P(VirtioBlockTest, ProcessesEveryAvailableChainInOneNotify) {
  TempImage image(64 * KiB);
  open(image);
  std::vector<uint64_t> statuses, data;
  for (uint64_t sector = 0; sector < 5; ++sector) {
    const uint64_t h = header(VIRTIO_BLK_T_IN, sector);
    data.push_back(alloc(kSector, 512));
    statuses.push_back(status_byte());
    publish({{h, 16, false}, {data.back(), kSector, true}, {statuses.back(), 1, true}});
  }
  notify();
  EXPECT_EQ(used_idx(), 5);
  for (uint64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(*memory.read_obj<uint8_t>(statuses[i]), VIRTIO_BLK_S_OK);
    EXPECT_EQ(guest(data[i], kSector), pattern_bytes(i * kSector, kSector));
    EXPECT_EQ(used(static_cast<uint16_t>(i)).len, kSector + 1);
  }
  EXPECT_GE(transport.signals(0), 1);
}

TEST_P(VirtioBlockTest, ReadsAndWritesOfOneNotifyGoToTheBackendAsOneBatch) {
  RecordingBackend& backend = open_recording(64 * KiB);
  std::vector<uint64_t> statuses;
  auto publish_io = [&](uint32_t type, uint64_t sector) {
    const uint64_t h = header(type, sector);
    const uint64_t d = alloc(kSector, 512);
    statuses.push_back(status_byte());
    publish({{h, 16, false}, {d, kSector, type == VIRTIO_BLK_T_IN}, {statuses.back(), 1, true}});
  };
  for (uint64_t i = 0; i < 5; ++i) publish_io(VIRTIO_BLK_T_IN, i);
  const uint64_t flush_header = header(VIRTIO_BLK_T_FLUSH, 0);
  statuses.push_back(status_byte());
  publish({{flush_header, 16, false}, {statuses.back(), 1, true}});
  for (uint64_t i = 0; i < 3; ++i) publish_io(VIRTIO_BLK_T_OUT, 10 + i);
  int completed_before_flush = -1;
  backend.on_flush = [&] { completed_before_flush = used_idx(); };

  notify();
  EXPECT_EQ(backend.batch_sizes, (std::vector<size_t>{5, 3})) << "the flush splits the batch";
  EXPECT_EQ(completed_before_flush, 5) << "the reads before the flush completed first";
  EXPECT_EQ(used_idx(), 9);
  for (const uint64_t s : statuses) EXPECT_EQ(*memory.read_obj<uint8_t>(s), VIRTIO_BLK_S_OK);
}

TEST_P(VirtioBlockTest, WriteThroughSyncsABatchOnceBeforeAnyStatus) {
  RecordingBackend& backend = open_recording(64 * KiB, feature_bit(VIRTIO_BLK_F_FLUSH));
  std::vector<uint64_t> statuses;
  for (uint64_t i = 0; i < 4; ++i) {
    const uint64_t h = header(VIRTIO_BLK_T_OUT, i);
    const uint64_t d = bytes(std::vector<uint8_t>(kSector, static_cast<uint8_t>(i)), 512);
    statuses.push_back(status_byte());
    publish({{h, 16, false}, {d, kSector, false}, {statuses.back(), 1, true}});
  }
  bool completed_early = true;
  backend.on_flush = [&] { completed_early = used_idx() != 0; };
  notify();
  EXPECT_EQ(backend.flushes, 1);
  EXPECT_FALSE(completed_early);
  for (const uint64_t s : statuses) EXPECT_EQ(*memory.read_obj<uint8_t>(s), VIRTIO_BLK_S_OK);
}

TEST_P(VirtioBlockTest, FailedWriteThroughSyncFailsTheBatchsWrites) {
  RecordingBackend& backend = open_recording(64 * KiB, feature_bit(VIRTIO_BLK_F_FLUSH));
  backend.on_flush = [&] { backend.fail_with = EIO; };
  EXPECT_EQ(write(0, std::vector<uint8_t>(kSector, 1)).status, VIRTIO_BLK_S_IOERR);
}

TEST_P(VirtioBlockTest, BusyQueueYieldsAfterItsBudgetWhenTheTransportCanRenotify) {
  if (io_thread()) GTEST_SKIP() << "the notification budget is for iothread=off";
  RecordingBackend& backend = open_recording(64 * KiB);
  transport.can_renotify = true;
  // A driver that refills the queue as fast as the device empties it.
  auto publish_read = [&] {
    const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
    const uint64_t s = status_byte();
    publish({{h, 16, false}, {s, 1, true}});  // an empty read: just header and status
  };
  for (int i = 0; i < 64; ++i) publish_read();
  int published = 64;
  backend.on_batch = [&] {
    for (int i = 0; i < 64; ++i, ++published) publish_read();
  };
  notify();
  EXPECT_EQ(transport.renotifies(0), 1);
  EXPECT_EQ(used_idx(), VirtioBlock::kRequestsPerNotify) << "everything taken was completed";
  EXPECT_GE(transport.signals(0), 1);

  backend.on_batch = nullptr;  // the driver stops; the renotified call drains the rest
  notify();
  EXPECT_EQ(used_idx(), static_cast<uint16_t>(published));
}

TEST_P(VirtioBlockTest, LargeRequestsYieldAfterTheByteBudget) {
  if (io_thread()) GTEST_SKIP() << "the notification budget is for iothread=off";
  // Few requests, each moving 1 MiB: the request count alone would take them all at once.
  RecordingBackend& backend = open_recording(1 * MiB);
  transport.can_renotify = true;
  constexpr uint32_t kMiBReads = 80;
  static_assert(uint64_t{kMiBReads} * MiB > VirtioBlock::kBytesPerNotify);
  static_assert(kMiBReads < VirtioBlock::kRequestsPerNotify);
  const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
  const uint64_t d = alloc(VirtioBlock::kSizeMax, 4096);
  const uint64_t s = status_byte();
  const uint32_t piece = VirtioBlock::kSizeMax;
  std::vector<Buffer> bufs{{h, 16, false}};
  for (uint64_t done = 0; done < 1 * MiB; done += piece) bufs.push_back({d, piece, true});
  bufs.push_back({s, 1, true});
  for (uint32_t i = 0; i < kMiBReads; ++i) publish(bufs, true);  // one indirect table for all

  notify();
  const uint64_t budget_reads = VirtioBlock::kBytesPerNotify / MiB;
  EXPECT_EQ(used_idx(), budget_reads) << "stopped once the requests taken reached the budget";
  EXPECT_EQ(transport.renotifies(0), 1);
  EXPECT_EQ(used(0).len, 1 * MiB + 1);
  notify();
  EXPECT_EQ(used_idx(), kMiBReads);
  EXPECT_EQ(transport.renotifies(0), 1) << "the rest was under the budget";
  EXPECT_TRUE(backend.batch_sizes.size() >= 2);
}

// Sectors to discard or zero count too: each of these asks for 32 GiB.
TEST_P(VirtioBlockTest, RangeRequestsCountAgainstTheByteBudget) {
  if (io_thread()) GTEST_SKIP() << "the notification budget is for iothread=off";
  class NullBackend final : public BlockBackend {
   public:
    uint64_t size() const override { return 64 * GiB; }
    bool readonly() const override { return false; }
    int read(uint64_t, std::span<iovec>) override { return 0; }
    int write(uint64_t, std::span<iovec>) override { return 0; }
    int flush() override { return 0; }
    int discard(uint64_t, uint64_t) override {
      ++discards;
      return 0;
    }
    int write_zeroes(uint64_t, uint64_t, bool) override { return 0; }
    int discards = 0;
  };
  auto owned = std::make_unique<NullBackend>();
  NullBackend& backend = *owned;
  auto dev = std::make_shared<VirtioBlock>(std::move(owned), "", threading());
  use(dev, dev->device_features());
  transport.can_renotify = true;
  const std::vector<virtio_blk_discard_write_zeroes> segs(VirtioBlock::kMaxRangeSegments,
                                                          {0, VirtioBlock::kMaxRangeSectors, 0});
  const uint64_t d = alloc(16 * segs.size());
  ASSERT_TRUE(memory.write(d, segs.data(), 16 * segs.size()));
  const uint64_t h = header(VIRTIO_BLK_T_DISCARD, 0);
  const uint64_t s = status_byte();
  for (int i = 0; i < 3; ++i) {
    publish({{h, 16, false}, {d, static_cast<uint32_t>(16 * segs.size()), false}, {s, 1, true}});
  }
  notify();
  EXPECT_EQ(used_idx(), 1);
  EXPECT_EQ(backend.discards, static_cast<int>(VirtioBlock::kMaxRangeSegments));
  EXPECT_EQ(transport.renotifies(0), 1);
  notify();
  notify();
  EXPECT_EQ(used_idx(), 3);
}

// The bound docs/SECURITY.md states: the worst notification the device accepts holds its lock
// (and the event loop) for a bounded time. Worst on a tmpfs image: writes into holes (the host
// allocates and fills pages) of the largest request, 254 buffers of size_max, until the byte
// budget stops it: under kBytesPerNotify + kMaxRequestBytes (127.5 MiB). A bound check with a
// wide margin, not a performance test.
TEST_P(VirtioBlockTest, WorstNotificationOnATmpfsImageEndsWithinItsBound) {
  if (io_thread()) GTEST_SKIP() << "the notification budget is for iothread=off";
  constexpr auto kBound = std::chrono::milliseconds(2000);
  if (::access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no writable /dev/shm";
  constexpr uint64_t kRequest = VirtioBlock::kMaxRequestBytes;
  static_assert(kRequest < VirtioBlock::kBytesPerNotify &&
                2 * kRequest >= VirtioBlock::kBytesPerNotify);
  TempImage image(3 * kRequest, false, "/dev/shm");  // sparse
  open(image);
  transport.can_renotify = true;
  const uint64_t data = alloc(VirtioBlock::kSizeMax, 4096);
  ASSERT_TRUE(memory.fill(data, 0x77, VirtioBlock::kSizeMax));
  std::vector<uint64_t> statuses;
  for (uint64_t i = 0; i < 3; ++i) {
    std::vector<Buffer> bufs{{header(VIRTIO_BLK_T_OUT, i * kRequest / kSector), 16, false}};
    for (uint32_t b = 0; b < VirtioBlock::kSegMax; ++b) {
      bufs.push_back({data, VirtioBlock::kSizeMax, false});
    }
    statuses.push_back(status_byte());
    bufs.push_back({statuses.back(), 1, true});
    ring.add_indirect_chain(alloc(16 * bufs.size(), 16), bufs);
  }

  const auto start = std::chrono::steady_clock::now();
  notify();
  const auto took = std::chrono::steady_clock::now() - start;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took);
  RecordProperty("notification_ms", static_cast<int>(ms.count()));
  std::printf("worst notification: %lld ms for %llu MiB\n", static_cast<long long>(ms.count()),
              static_cast<unsigned long long>(2 * kRequest / MiB));
  EXPECT_LT(took, kBound);
  ASSERT_EQ(used_idx(), 2) << "the budget stopped it after two requests";
  EXPECT_EQ(transport.renotifies(0), 1);
  EXPECT_EQ(*memory.read_obj<uint8_t>(statuses[0]), VIRTIO_BLK_S_OK);
  EXPECT_EQ(*memory.read_obj<uint8_t>(statuses[1]), VIRTIO_BLK_S_OK);
  EXPECT_EQ(image.read(2 * kRequest - kSector, kSector), std::vector<uint8_t>(kSector, 0x77));
  notify();
  EXPECT_EQ(used_idx(), 3);
}

TEST_P(VirtioBlockTest, BusyQueueDrainsFullyWhenTheTransportCannotRenotify) {
  if (io_thread()) GTEST_SKIP() << "the notification budget is for iothread=off";
  RecordingBackend& backend = open_recording(64 * KiB);
  auto publish_read = [&] {
    const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
    const uint64_t s = status_byte();
    publish({{h, 16, false}, {s, 1, true}});
  };
  for (int i = 0; i < 64; ++i) publish_read();
  int batches = 0;
  backend.on_batch = [&] {
    if (++batches < 6) {
      for (int i = 0; i < 64; ++i) publish_read();
    }
  };
  notify();
  EXPECT_EQ(used_idx(), 6 * 64);
  EXPECT_EQ(transport.renotifies(0), 1) << "asked once, refused, went on";
}

// With the I/O thread there is no notification to yield: the thread drains the queue in
// rounds, and returns (and signals) each round's chains before it takes the next, so a driver
// that keeps its queue full still gets completions at a steady pace.
TEST_P(VirtioBlockTest, IoThreadReturnsEachRoundBeforeTakingTheNext) {
  if (!io_thread()) GTEST_SKIP() << "rounds on the I/O thread";
  RecordingBackend& backend = open_recording(64 * KiB);
  auto publish_read = [&] {
    const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
    const uint64_t s = status_byte();
    publish({{h, 16, false}, {s, 1, true}});
  };
  for (int i = 0; i < 64; ++i) publish_read();
  std::vector<int> used_at_batch, signals_at_batch;
  backend.on_batch = [&] {  // on the I/O thread, while the round is at the backend
    used_at_batch.push_back(used_idx());
    signals_at_batch.push_back(transport.signals(0));
    if (used_at_batch.size() < 5) {
      for (int i = 0; i < 64; ++i) publish_read();
    }
  };
  notify();
  EXPECT_EQ(used_at_batch, (std::vector<int>{0, 64, 128, 192, 256}));
  EXPECT_EQ(signals_at_batch, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(used_idx(), 5 * 64);
  EXPECT_EQ(transport.renotifies(), 0) << "the thread needs no renotify";
}

TEST_P(VirtioBlockTest, IoThreadRoundsStopAtTheByteBudget) {
  if (!io_thread()) GTEST_SKIP() << "rounds on the I/O thread";
  RecordingBackend& backend = open_recording(2 * MiB);
  constexpr uint32_t kReads = 40;  // of 2 MiB: 32 of them make kBytesPerNotify
  static_assert(VirtioBlock::kBytesPerNotify == 32 * 2 * MiB);
  const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
  const uint64_t d = alloc(VirtioBlock::kSizeMax, 4096);
  const uint64_t s = status_byte();
  std::vector<Buffer> bufs{{h, 16, false}};
  for (uint64_t done = 0; done < 2 * MiB; done += VirtioBlock::kSizeMax) {
    bufs.push_back({d, VirtioBlock::kSizeMax, true});
  }
  bufs.push_back({s, 1, true});
  for (uint32_t i = 0; i < kReads; ++i) publish(bufs, true);
  notify();
  EXPECT_EQ(used_idx(), kReads);
  EXPECT_EQ(backend.batch_sizes, (std::vector<size_t>{32, 8}));
  EXPECT_EQ(transport.signals(0), 2) << "one per round";
}

TEST_P(VirtioBlockTest, IoUringImageCarriesOutABatch) {
  TempImage image(256 * KiB);
  open(image, ",io=io_uring");
  EXPECT_EQ(device->keeps_requests_in_flight(), io_thread()) << "without the thread: batches";
  std::vector<uint64_t> statuses, data;
  for (uint64_t i = 0; i < 20; ++i) {
    const bool reading = i % 2 == 0;
    const uint64_t h = header(reading ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT, 8 * i);
    data.push_back(reading ? alloc(4096, 512)
                           : bytes(std::vector<uint8_t>(4096, static_cast<uint8_t>(i)), 512));
    statuses.push_back(status_byte());
    publish({{h, 16, false}, {data.back(), 4096, reading}, {statuses.back(), 1, true}});
  }
  notify();
  ASSERT_EQ(used_idx(), 20);
  for (uint64_t i = 0; i < 20; ++i) {
    EXPECT_EQ(*memory.read_obj<uint8_t>(statuses[i]), VIRTIO_BLK_S_OK);
    if (i % 2 == 0) {
      EXPECT_EQ(guest(data[i], 4096), pattern_bytes(8 * i * kSector, 4096));
    } else {
      EXPECT_EQ(image.read(8 * i * kSector, 4096), std::vector<uint8_t>(4096, i));
    }
  }
  uint64_t beyond = 0;
  EXPECT_EQ(read(512, kSector, beyond).status, VIRTIO_BLK_S_IOERR) << "range checks still apply";
}

TEST_P(VirtioBlockTest, IoUringDirectImageTakesMisalignedBuffers) {
  TempImage image(256 * KiB);
  open(image, ",direct,io=io_uring");
  uint64_t data = 0;
  EXPECT_EQ(read(8, 4096, data).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(data, 4096), pattern_bytes(8 * kSector, 4096));
  const uint64_t h = header(VIRTIO_BLK_T_IN, 1);  // sector 1 into an odd address: buffered
  const uint64_t d = alloc(kSector + 3, 4096) + 3;
  const uint64_t s = status_byte();
  EXPECT_EQ(run({{h, 16, false}, {d, kSector, true}, {s, 1, true}}, s).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(d, kSector), pattern_bytes(kSector, kSector));
}

// ---------------------------------------------------------------------------------------------
// Malformed requests: an error status (or nothing to write it to), never a crash

TEST_P(VirtioBlockTest, SectorsBeyondTheDiskAreRefused) {
  TempImage image(64 * KiB);  // 128 sectors
  open(image);
  uint64_t data = 0;
  EXPECT_EQ(read(128, kSector, data).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(read(127, 2 * kSector, data).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(read(129, 0, data).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(write(128, std::vector<uint8_t>(kSector, 0)).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(write(120, std::vector<uint8_t>(9 * kSector, 0)).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(image.read(0, 64 * KiB), pattern_bytes(0, 64 * KiB));
}

// ---------------------------------------------------------------------------------------------
// The image's size read again (SIGUSR1 in vmm and vmm-device)

TEST(DiskRescan, ImageGrownOrShrunkOnTheHostChangesTheCapacity) {
  TempImage image(64 * KiB);
  VirtioBlock device(parse_disk_spec(image.path()));
  EXPECT_FALSE(device.rescan()) << "nothing changed";
  image.resize(1 * MiB);
  EXPECT_TRUE(device.rescan());
  EXPECT_EQ(device.capacity_sectors(), 2048u);
  EXPECT_EQ(config_field<uint64_t>(device, offsetof(virtio_blk_config, capacity)), 2048u);
  EXPECT_EQ(config_field<uint8_t>(device, offsetof(virtio_blk_config, capacity) + 1), 8u);
  EXPECT_FALSE(device.rescan());
  // A partial last sector is left out; a shrunk image is smaller.
  image.resize(32 * KiB + 100);
  EXPECT_TRUE(device.rescan());
  EXPECT_EQ(config_field<uint64_t>(device, offsetof(virtio_blk_config, capacity)), 64u);
  // The rest of the config space stays: a read across the capacity's end sees both.
  std::array<uint8_t, 12> across{};
  device.read_config(4, across);
  EXPECT_EQ(across[0], 0u);
  EXPECT_EQ(across[4], static_cast<uint8_t>(VirtioBlock::kSizeMax & 0xff));
  EXPECT_EQ(across[4 + 2], static_cast<uint8_t>((VirtioBlock::kSizeMax >> 16) & 0xff));
}

TEST_P(VirtioBlockTest, RequestsFollowARescannedCapacity) {
  TempImage image(64 * KiB);  // 128 sectors
  open(image);
  uint64_t data = 0;
  EXPECT_EQ(read(128, kSector, data).status, VIRTIO_BLK_S_IOERR);
  image.resize(128 * KiB);
  EXPECT_TRUE(device->rescan());
  EXPECT_EQ(write(200, pattern_bytes(0, kSector)).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(read(200, kSector, data).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(guest(data, kSector), pattern_bytes(0, kSector));
  EXPECT_EQ(read(256, kSector, data).status, VIRTIO_BLK_S_IOERR);
  // Shrunk: what lies past the new end is refused, not read from a file that no longer has it.
  image.resize(32 * KiB);
  EXPECT_TRUE(device->rescan());
  EXPECT_EQ(read(64, kSector, data).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(read(63, kSector, data).status, VIRTIO_BLK_S_OK);
}

TEST(DiskRescan, TheTransportShowsTheNewCapacityUnderANewGeneration) {
  TempImage image(64 * KiB);
  TestMemory memory(kRamSize);
  auto device = std::make_shared<VirtioBlock>(parse_disk_spec(image.path()));
  auto irq = std::make_shared<FakeIrq>();
  VirtioMmioTransport window(device, memory, irq);
  const MmioDriver mmio(window);
  const uint32_t generation = mmio.reg(VIRTIO_MMIO_CONFIG_GENERATION);
  image.resize(128 * KiB);
  ASSERT_TRUE(device->rescan());
  window.signal_config_change();  // as Vm::rescan_devices() does for a device that changed
  EXPECT_NE(mmio.reg(VIRTIO_MMIO_CONFIG_GENERATION), generation);
  EXPECT_EQ(mmio.reg(VIRTIO_MMIO_CONFIG + offsetof(virtio_blk_config, capacity)), 256u);
}

TEST_P(VirtioBlockTest, SectorArithmeticDoesNotOverflow) {
  TempImage image(64 * KiB);
  open(image);
  uint64_t data = 0;
  // sector + count wraps to a small number; sector * 512 wraps to 0.
  for (const uint64_t sector : {~0ull, ~0ull - 1, 1ull << 55, (1ull << 55) + 1, 1ull << 63}) {
    const auto c = read(sector, 2 * kSector, data);
    EXPECT_EQ(c.status, VIRTIO_BLK_S_IOERR) << sector;
    EXPECT_EQ(c.len, 0u);
    EXPECT_EQ(write(sector, std::vector<uint8_t>(2 * kSector, 0)).status, VIRTIO_BLK_S_IOERR)
        << sector;
  }
  EXPECT_EQ(image.read(0, 64 * KiB), pattern_bytes(0, 64 * KiB));
}

TEST_P(VirtioBlockTest, DataMustBeWholeSectors) {
  TempImage image(64 * KiB);
  open(image);
  uint64_t data = 0;
  EXPECT_EQ(read(0, 500, data).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(read(0, 513, data).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(write(0, std::vector<uint8_t>(513, 0)).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(write(0, std::vector<uint8_t>(1, 0)).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096));
}

// What the device advertises (size_max, seg_max) it enforces: beyond it, IOERR and no I/O.
TEST_P(VirtioBlockTest, DataBufferLargerThanSizeMaxIsRefused) {
  TempImage image(4 * MiB, false);
  open(image);
  const uint32_t size_max = VirtioBlock::kSizeMax;
  uint64_t data = 0;
  EXPECT_EQ(read(0, size_max, data).status, VIRTIO_BLK_S_OK) << "size_max itself is fine";
  const uint64_t before = image.allocated_bytes();
  const Completion c = write(0, std::vector<uint8_t>(size_max + kSector, 1));
  EXPECT_EQ(c.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(c.len, 1u);
  EXPECT_EQ(image.allocated_bytes(), before) << "nothing written";
  EXPECT_EQ(image.read(0, kSector), std::vector<uint8_t>(kSector, 0));

  // A status byte sharing the last buffer does not count as data.
  const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
  const uint64_t d = alloc(size_max + 1, 512);
  ASSERT_TRUE(memory.write_obj<uint8_t>(d + size_max, kNoStatus));
  EXPECT_EQ(run({{h, 16, false}, {d, size_max + 1, true}}, d + size_max).status, VIRTIO_BLK_S_OK);
}

TEST_P(VirtioBlockTest, HostileReadOfOneBufferRepeatedIsRefusedWithoutIo) {
  // The attack: every data descriptor names the same large guest buffer, so a small guest asks
  // for hundreds of MiB of host I/O in one request. 254 x 1 MiB: each buffer is over size_max.
  TempImage image(256 * MiB, false);  // sparse
  open(image);
  const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
  const uint64_t big = alloc(1 * MiB, 4096);
  const uint64_t s = status_byte();
  std::vector<Buffer> bufs{{h, 16, false}};
  for (uint32_t i = 0; i < VirtioBlock::kSegMax; ++i) bufs.push_back({big, 1 * MiB, true});
  bufs.push_back({s, 1, true});
  ASSERT_TRUE(memory.fill(big, 0x5a, 1 * MiB));
  const Completion c = run(bufs, s);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(c.len, 0u) << "no data written";
  EXPECT_EQ(guest(big, 16), std::vector<uint8_t>(16, 0x5a)) << "the buffer is untouched";
}

TEST_P(VirtioBlockTest, MoreDataBuffersThanSegMaxAreRefused) {
  RecordingBackend& backend = open_recording(1 * MiB);
  const uint32_t seg_max = VirtioBlock::kSegMax;
  // A read: header alone, seg_max + 1 sector buffers, the status sharing the last (256
  // descriptors: the most a chain may have).
  const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
  std::vector<Buffer> bufs{{h, 16, false}};
  for (uint32_t i = 0; i < seg_max; ++i) bufs.push_back({alloc(kSector), kSector, true});
  const uint64_t last = alloc(kSector + 1);
  ASSERT_TRUE(memory.write_obj<uint8_t>(last + kSector, kNoStatus));
  bufs.push_back({last, kSector + 1, true});
  ASSERT_EQ(bufs.size(), kQueueSize);
  EXPECT_EQ(run(bufs, last + kSector).status, VIRTIO_BLK_S_IOERR);

  // A write: the header sharing the first data buffer, seg_max + 1 of them in all.
  const uint64_t hd = alloc(16 + kSector);
  ASSERT_TRUE(memory.write_obj(hd, virtio_blk_outhdr{VIRTIO_BLK_T_OUT, 0, 0}));
  std::vector<Buffer> wbufs{{hd, 16 + kSector, false}};
  for (uint32_t i = 0; i < seg_max; ++i) wbufs.push_back({alloc(kSector), kSector, false});
  const uint64_t s = status_byte();
  wbufs.push_back({s, 1, true});
  ASSERT_EQ(wbufs.size(), kQueueSize);
  EXPECT_EQ(run(wbufs, s).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(backend.writes, 0);

  // seg_max buffers are fine.
  wbufs.erase(wbufs.end() - 2);
  const uint64_t s2 = status_byte();
  wbufs.back() = {s2, 1, true};
  ASSERT_TRUE(memory.write_obj(hd, virtio_blk_outhdr{VIRTIO_BLK_T_OUT, 0, 0}));
  EXPECT_EQ(run(wbufs, s2).status, VIRTIO_BLK_S_OK);
  EXPECT_EQ(backend.writes, 1);
}

TEST_P(VirtioBlockTest, HeaderInAWritableDescriptorIsRefused) {
  TempImage image(64 * KiB);
  open(image);
  const uint64_t h = header(VIRTIO_BLK_T_OUT, 0);
  const uint64_t s = status_byte();
  const auto c = run({{h, 16, true}, {s, 1, true}}, s);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(c.len, 0u) << "the status byte is not the first writable one";
  EXPECT_EQ(image.read(0, 4096), pattern_bytes(0, 4096));
}

TEST_P(VirtioBlockTest, ShortHeaderIsRefused) {
  TempImage image(64 * KiB);
  open(image);
  const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
  const uint64_t d = alloc(kSector);
  const uint64_t s = status_byte();
  EXPECT_EQ(run({{h, 8, false}, {d, kSector, true}, {s, 1, true}}, s).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(run({{s, 1, true}}, s).status, VIRTIO_BLK_S_IOERR) << "no header at all";
}

TEST_P(VirtioBlockTest, RequestWithoutStatusByteIsReturnedUnused) {
  TempImage image(64 * KiB);
  open(image);
  // A write with no writable byte at all: not carried out, chain returned with length 0.
  const uint64_t h = header(VIRTIO_BLK_T_OUT, 0);
  const uint64_t d = bytes(std::vector<uint8_t>(kSector, 0));
  const auto c = run({{h, 16, false}, {d, kSector, false}}, d);
  EXPECT_EQ(c.len, 0u);
  EXPECT_EQ(image.read(0, kSector), pattern_bytes(0, kSector));
  // The device carries on with the next request.
  uint64_t data = 0;
  EXPECT_EQ(read(0, kSector, data).status, VIRTIO_BLK_S_OK);
}

TEST_P(VirtioBlockTest, DataInTheWrongDirectionIsRefused) {
  TempImage image(64 * KiB);
  open(image);
  // A read whose data buffer is device-readable.
  const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
  const uint64_t d = bytes(std::vector<uint8_t>(kSector, 0x5a));
  const uint64_t s = status_byte();
  const auto c = run({{h, 16, false}, {d, kSector, false}, {s, 1, true}}, s);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(c.len, 1u);
  EXPECT_EQ(guest(d, kSector), std::vector<uint8_t>(kSector, 0x5a));
  // A write whose data buffer is device-writable.
  const uint64_t wh = header(VIRTIO_BLK_T_OUT, 0);
  const uint64_t wd = bytes(std::vector<uint8_t>(kSector, 0x5a));
  const uint64_t ws = status_byte();
  EXPECT_EQ(run({{wh, 16, false}, {wd, kSector, true}, {ws, 1, true}}, ws).status,
            VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(guest(wd, kSector), std::vector<uint8_t>(kSector, 0x5a));
  EXPECT_EQ(image.read(0, kSector), pattern_bytes(0, kSector));
}

TEST_P(VirtioBlockTest, UnknownRequestTypesAreUnsupported) {
  TempImage image(64 * KiB);
  open(image);
  for (const uint32_t type : {2u, 3u, 10u, 14u, 16u, 0x80000001u, 0xffffffffu}) {
    const auto c = command(type);
    EXPECT_EQ(c.status, VIRTIO_BLK_S_UNSUPP) << type;
    EXPECT_EQ(c.len, 1u);
  }
}

TEST_P(VirtioBlockTest, HostIoErrorsGiveIoerr) {
  RecordingBackend& backend = open_recording(64 * KiB);
  backend.fail_with = EIO;
  uint64_t data = 0;
  const auto c = read(0, kSector, data);
  EXPECT_EQ(c.status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(c.len, 0u) << "no data is reported written";
  EXPECT_EQ(write(0, std::vector<uint8_t>(kSector, 0)).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(command(VIRTIO_BLK_T_FLUSH).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_DISCARD, {{0, 8, 0}}).status, VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(ranges(VIRTIO_BLK_T_WRITE_ZEROES, {{0, 8, 0}}).status, VIRTIO_BLK_S_IOERR);
  for (int i = 0; i < 20; ++i) command(VIRTIO_BLK_T_FLUSH);  // the log stays short
}

TEST_P(VirtioBlockTest, IgnoresNotificationsUntilActivatedAndAfterReset) {
  TempImage image(64 * KiB);
  open(image);
  device->reset();
  const uint64_t h = header(VIRTIO_BLK_T_IN, 0);
  const uint64_t d = alloc(kSector);
  const uint64_t s = status_byte();
  publish({{h, 16, false}, {d, kSector, true}, {s, 1, true}});
  notify();
  EXPECT_EQ(used_idx(), 0);
  device->activate(transport, device->device_features());
  device->queue_notify(1, queue);  // there is no queue 1
  device->wait_idle();
  EXPECT_EQ(used_idx(), 0);
  notify();
  EXPECT_EQ(used_idx(), 1);
}

INSTANTIATE_TEST_SUITE_P(Threading, VirtioBlockTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& param) {
                           return param.param ? "IoThread" : "InNotify";
                         });

// ---------------------------------------------------------------------------------------------
// parse_block_request() on its own: what it makes of each chain, and what it calls each mistake

class BlockRequestParseTest : public ::testing::Test {
 protected:
  static constexpr BlockDisk kDisk{128, false, true, true};  // 64 KiB, DISCARD, WRITE_ZEROES

  BlockRequestParseTest() { ring.configure(queue); }

  Buffer header(uint32_t type, uint64_t sector = 0) {
    const virtio_blk_outhdr h{type, 0, sector};
    return {ring.place({reinterpret_cast<const uint8_t*>(&h), sizeof h}), 16, false};
  }
  Buffer readable(uint32_t len) { return {ring.alloc(len), len, false}; }
  Buffer writable(uint32_t len) { return {ring.alloc(len), len, true}; }
  Buffer segments(const std::vector<virtio_blk_discard_write_zeroes>& segs) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(segs.data());
    return {ring.place({bytes, 16 * segs.size()}), static_cast<uint32_t>(16 * segs.size()), false};
  }
  // The chain of `buffers` as the queue hands it to the device, parsed.
  ParsedBlockRequest parse(const std::vector<Buffer>& buffers, const BlockDisk& disk = kDisk) {
    ring.add_chain(buffers);
    const std::optional<DescriptorChain> chain = queue.pop();
    if (!chain) throw std::runtime_error("the queue refused the chain: " + queue.error());
    return parse_block_request(*chain, disk);
  }
  static BlockRequest request(const ParsedBlockRequest& parsed) {
    if (const auto* error = std::get_if<BlockRequestError>(&parsed)) {
      throw std::runtime_error("refused: " + error->message);
    }
    return std::get<BlockRequest>(parsed);
  }
  static BlockRequestError error(const ParsedBlockRequest& parsed) {
    if (!std::holds_alternative<BlockRequestError>(parsed)) throw std::runtime_error("accepted");
    return std::get<BlockRequestError>(parsed);
  }

  TestMemory memory{1 * MiB};
  Virtqueue queue{memory, 64};
  DriverRing ring{memory, 64, {kDesc, kAvail, kUsed, kBuffers}};
};

TEST_F(BlockRequestParseTest, ReadsAndWritesNameTheirSectorsAndData) {
  const BlockRequest read =
      request(parse({header(VIRTIO_BLK_T_IN, 3), writable(1000), writable(24), writable(1)}));
  EXPECT_EQ(read.type, BlockRequestType::read);
  EXPECT_EQ(read.sector, 3u);
  EXPECT_EQ(read.data_bytes, 1024u) << "every writable byte but the status";

  const BlockRequest write =
      request(parse({header(VIRTIO_BLK_T_OUT, 127), readable(kSector), writable(1)}));
  EXPECT_EQ(write.type, BlockRequestType::write);
  EXPECT_EQ(write.sector, 127u);
  EXPECT_EQ(write.data_bytes, kSector);
  EXPECT_TRUE(write.segments().empty());
}

TEST_F(BlockRequestParseTest, FlushGetIdAndRanges) {
  EXPECT_EQ(request(parse({header(VIRTIO_BLK_T_FLUSH), writable(1)})).type,
            BlockRequestType::flush);
  const BlockRequest id = request(parse({header(VIRTIO_BLK_T_GET_ID), writable(21)}));
  EXPECT_EQ(id.type, BlockRequestType::get_id);
  EXPECT_EQ(id.data_bytes, kBlockIdBytes);

  const BlockRequest zeroes = request(
      parse({header(VIRTIO_BLK_T_WRITE_ZEROES),
             segments({{0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP}, {120, 8, 0}}), writable(1)}));
  EXPECT_EQ(zeroes.type, BlockRequestType::write_zeroes);
  ASSERT_EQ(zeroes.segments().size(), 2u);
  EXPECT_EQ(zeroes.segments()[0].sectors, 8u);
  EXPECT_TRUE(zeroes.segments()[0].unmap);
  EXPECT_EQ(zeroes.segments()[1].sector, 120u);
  EXPECT_FALSE(zeroes.segments()[1].unmap);
}

TEST_F(BlockRequestParseTest, EachMistakeHasItsKindAndStatus) {
  using Kind = BlockRequestError::Kind;
  const BlockDisk readonly{128, true, true, true};
  const BlockDisk plain{128, false, false, false};
  struct Case {
    std::vector<Buffer> buffers;
    Kind kind;
    uint8_t status;
    BlockDisk disk = kDisk;
  };
  const Case cases[] = {
      {{header(VIRTIO_BLK_T_IN), readable(kSector)}, Kind::no_status, VIRTIO_BLK_S_IOERR},
      {{readable(8), writable(1)}, Kind::short_header, VIRTIO_BLK_S_IOERR},
      {{header(99), writable(1)}, Kind::unknown_type, VIRTIO_BLK_S_UNSUPP},
      {{header(VIRTIO_BLK_T_DISCARD), segments({{0, 8, 0}}), writable(1)},
       Kind::not_negotiated,
       VIRTIO_BLK_S_UNSUPP,
       plain},
      {{header(VIRTIO_BLK_T_DISCARD), segments({{0, 8, 0x2}}), writable(1)},
       Kind::unknown_flags,
       VIRTIO_BLK_S_UNSUPP},
      {{header(VIRTIO_BLK_T_IN), readable(kSector), writable(1)},
       Kind::wrong_direction,
       VIRTIO_BLK_S_IOERR},
      {{header(VIRTIO_BLK_T_OUT), readable(kSector), writable(1)},
       Kind::read_only,
       VIRTIO_BLK_S_IOERR,
       readonly},
      {{header(VIRTIO_BLK_T_IN), writable(500), writable(1)},
       Kind::partial_sector,
       VIRTIO_BLK_S_IOERR},
      {{header(VIRTIO_BLK_T_OUT, ~0ull), readable(2 * kSector), writable(1)},
       Kind::out_of_range,
       VIRTIO_BLK_S_IOERR},
      {{header(VIRTIO_BLK_T_WRITE_ZEROES), segments({{0, kBlockMaxRangeSectors + 1, 0}}),
        writable(1)},
       Kind::range_too_long,
       VIRTIO_BLK_S_IOERR},
      {{header(VIRTIO_BLK_T_GET_ID), writable(16), writable(1)},
       Kind::bad_id_buffer,
       VIRTIO_BLK_S_IOERR},
      {{header(VIRTIO_BLK_T_DISCARD), readable(24), writable(1)},
       Kind::bad_segment_bytes,
       VIRTIO_BLK_S_IOERR},
      {{header(VIRTIO_BLK_T_DISCARD),
        segments(
            std::vector<virtio_blk_discard_write_zeroes>(kBlockMaxRangeSegments + 1, {0, 1, 0})),
        writable(1)},
       Kind::too_many_segments,
       VIRTIO_BLK_S_IOERR},
  };
  for (const Case& c : cases) {
    const BlockRequestError e = error(parse(c.buffers, c.disk));
    EXPECT_EQ(e.kind, c.kind) << e.message;
    EXPECT_EQ(e.status(), c.status) << e.message;
    EXPECT_FALSE(e.message.empty());
  }
}

TEST_F(BlockRequestParseTest, RequestsBeyondTheAdvertisedLimitsAreRefused) {
  using Kind = BlockRequestError::Kind;
  BlockDisk disk = kDisk;
  disk.limits.size_max = 2 * kSector;
  disk.limits.seg_max = 3;
  disk.limits.max_request_bytes = 5 * kSector;
  disk.limits.max_discard_sectors = 16;
  disk.limits.max_discard_seg = 2;
  disk.limits.max_write_zeroes_sectors = 8;
  disk.limits.max_write_zeroes_seg = 1;
  struct Case {
    std::vector<Buffer> buffers;
    Kind kind;
  };
  const Case cases[] = {
      {{header(VIRTIO_BLK_T_IN), writable(3 * kSector), writable(1)}, Kind::buffer_too_large},
      {{header(VIRTIO_BLK_T_OUT), readable(kSector), readable(3 * kSector), writable(1)},
       Kind::buffer_too_large},
      {{header(VIRTIO_BLK_T_IN), writable(kSector), writable(kSector), writable(kSector),
        writable(kSector), writable(1)},
       Kind::too_many_buffers},
      {{header(VIRTIO_BLK_T_IN), writable(2 * kSector), writable(2 * kSector),
        writable(2 * kSector), writable(1)},
       Kind::request_too_large},
      {{header(VIRTIO_BLK_T_DISCARD), segments({{0, 17, 0}}), writable(1)}, Kind::range_too_long},
      {{header(VIRTIO_BLK_T_DISCARD), segments({{0, 1, 0}, {8, 1, 0}, {16, 1, 0}}), writable(1)},
       Kind::too_many_segments},
      {{header(VIRTIO_BLK_T_WRITE_ZEROES), segments({{0, 9, 0}}), writable(1)},
       Kind::range_too_long},
      {{header(VIRTIO_BLK_T_WRITE_ZEROES), segments({{0, 1, 0}, {8, 1, 0}}), writable(1)},
       Kind::too_many_segments},
  };
  for (const Case& c : cases) {
    const BlockRequestError e = error(parse(c.buffers, disk));
    EXPECT_EQ(e.kind, c.kind) << e.message;
    EXPECT_EQ(e.status(), VIRTIO_BLK_S_IOERR) << e.message;
  }
  // At the limits: accepted. The header and the status are not data buffers.
  EXPECT_EQ(request(parse({header(VIRTIO_BLK_T_IN), writable(2 * kSector), writable(2 * kSector),
                           writable(kSector), writable(1)},
                          disk))
                .data_bytes,
            5u * kSector);
  EXPECT_EQ(request(parse({header(VIRTIO_BLK_T_DISCARD), segments({{0, 16, 0}, {16, 16, 0}}),
                           writable(1)},
                          disk))
                .range_count,
            2u);
  EXPECT_EQ(
      request(parse({header(VIRTIO_BLK_T_WRITE_ZEROES), segments({{0, 8, 0}}), writable(1)}, disk))
          .range_count,
      1u);
  EXPECT_EQ(
      error(parse({header(VIRTIO_BLK_T_IN), writable(3 * kSector), writable(1)}, disk)).message,
      "read data buffer of 1536 bytes is more than the size_max of 1024");
}

TEST_F(BlockRequestParseTest, MessagesSayWhatTheDriverGotWrong) {
  EXPECT_EQ(error(parse({header(VIRTIO_BLK_T_IN), writable(500), writable(1)})).message,
            "read of 500 bytes is not a whole number of sectors");
  EXPECT_EQ(
      error(parse({header(VIRTIO_BLK_T_IN, 127), writable(2 * kSector), writable(1)})).message,
      "read of sectors [127, +2) is beyond the disk's 128 sectors");
  EXPECT_EQ(error(parse({header(VIRTIO_BLK_T_OUT), readable(kSector), writable(1)},
                        {128, true, false, false}))
                .message,
            "write to a read-only disk refused");
}

TEST_F(BlockRequestParseTest, HeaderFirst) {
  ring.add_chain({header(VIRTIO_BLK_T_FLUSH, 7), writable(1)});
  const std::optional<DescriptorChain> chain = queue.pop();
  ASSERT_TRUE(chain.has_value());
  const ParsedBlockHeader parsed = parse_block_header(*chain);
  ASSERT_TRUE(std::holds_alternative<BlockRequestHeader>(parsed));
  const auto& h = std::get<BlockRequestHeader>(parsed);
  EXPECT_EQ(h.type, VIRTIO_BLK_T_FLUSH);
  EXPECT_EQ(h.sector, 7u);
  EXPECT_FALSE(h.is_transfer()) << "reads and writes are";
  EXPECT_TRUE((BlockRequestHeader{VIRTIO_BLK_T_IN, 0}.is_transfer()));
  EXPECT_TRUE((BlockRequestHeader{VIRTIO_BLK_T_OUT, 0}.is_transfer()));
}

}  // namespace virtio_block_test
