// The virtIO block device (virtIO 1.2 §5.2): a disk backed by a BlockBackend, usually a raw
// image (backends/block_image.hpp) given on the command line as
// --disk PATH[,readonly][,direct][,serial=ID][,io=auto|sync|io_uring][,iothread=on|off].
//
// The guest is untrusted: every request is checked by parse_block_request() (header, direction
// of each part, lengths, sector ranges with overflow-safe arithmetic, and the limits the device
// advertises: size_max, seg_max, max_*_sectors, max_*_seg; block_request.hpp) and a bad one
// completes with an error status and a rate-limited log line; guest memory is only reached
// through the validated chain.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/backends/block_backend.hpp"
#include "libvmm/backends/block_image.hpp"
#include "libvmm/core/adaptive_poll.hpp"
#include "libvmm/core/io_thread.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/block_request.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

// What one --disk flag asks for.
struct BlockConfig {
  std::string path;
  bool readonly = false;
  bool direct = false;  // O_DIRECT: bypass the host page cache
  std::string serial;   // GET_ID answer: up to 20 printable ASCII characters, may be empty
  BlockIo io = BlockIo::automatic;  // io=auto (docs/PERFORMANCE.md, "io_uring or not")
  bool iothread = true;   // host I/O on the device's own thread (iothread=on), else on the caller's
  uint32_t poll_us = 32;  // the I/O thread's polling budget at most (poll_us=N; 0: no polling)
  uint16_t num_queues = 1;  // request queues (num_queues=N; the flag's default: one per vCPU)
};

// Where a VirtioBlock does its host I/O.
struct BlockThreading {
  bool io_thread = true;  // its own thread; false: inside queue_notify(), under the lock
  std::string name = "blk-io";
  IoThread::StartHook on_thread_start;  // runs first on the I/O thread (IoThread)
  // Adaptive polling of an emptied queue by the I/O thread, at most this long (0: none).
  uint32_t poll_max_us = 0;
};

// Parses "PATH[,readonly][,direct][,serial=ID][,io=auto|sync|io_uring][,iothread=on|off]
// [,poll_us=N][,num_queues=N]" (the --disk flag, through the device registry's virtio_block
// kind), without looking at the image. Throws UserError naming --disk and the spec.
BlockConfig parse_disk_spec(std::string_view spec);

// Multiqueue (VIRTIO_BLK_F_MQ, --disk num_queues=N, by default one queue per vCPU): Linux gives
// each CPU (or group of CPUs) its own queue, so CPUs submitting at once do not contend for one.
// The queues share the device's I/O thread, which serves them in turn, one round of each per
// pass, so none waits for another's backlog longer than a round; without the thread, a
// notification serves its own queue.
//
// Requests are carried out in rounds: take up to kMaxBatch chains from the queue (stopping once
// they ask for kBytesPerNotify bytes of host I/O: data read or written, sectors discarded or
// zeroed), carry them out in order (consecutive reads and writes handed to
// BlockBackend::transfer_batch() together; any other request after the transfers before it),
// then return them all. Each request is complete, and a FLUSH is on stable storage, before its
// status is written and its chain returned.
//
// With an I/O thread (the default; BlockThreading), the thread waits on the queue's notify
// eventfd itself where the machine has one (watch_queue_notify()), and queue_notify() (a
// notification that came through a register write) only wakes it. The thread
// takes and returns chains inside VirtioTransport::with_queues() and does the host I/O between,
// without the transport's lock: slow host storage holds up this device's requests only, never
// the event loop, other devices or a vCPU reading this device's registers. Rounds follow one
// another until the queue is empty, each returning its chains (and signalling) before the next.
// A reset, a queue taken down or teardown first waits for the round in flight (pause_io()).
//
// Requests kept in flight: where the backend can keep transfers going on its own (BlockAsync:
// an image with io=auto or io=io_uring on a host with io_uring), the I/O thread does not work in
// rounds but starts each read or write as it takes it and returns each when it finishes, in
// whatever order the host finishes them, while it takes more: a disk with latency of its own
// has as many requests at once as the guest gives it (up to kMaxBatch, and kBytesPerNotify
// bytes). The thread sleeps on the queues' notifications and the backend's completions at once.
// A FLUSH, DISCARD or WRITE_ZEROES waits until every transfer taken before it has finished (no
// more requests are taken meanwhile), then runs on its own. A pause (reset, queue reset,
// teardown) finishes what is in flight and returns it before it returns.
//
// Adaptive polling (BlockThreading::poll_max_us, --disk poll_us=N; core/adaptive_poll.hpp): once
// the queue is empty the I/O thread keeps looking at it for up to a budget that adapts to the
// gaps between requests, notifications still off, before it turns them on and sleeps; a
// request the guest adds meanwhile costs it no notification (no VM exit) and the thread no
// wake-up. A VM whose disk is idle costs no polling at all. A pause stops the poll. With
// requests kept in flight it also looks at the backend's completions (io_uring's completion
// ring: memory, no system call) while transfers are out, within a budget of its own that adapts
// to how soon the storage finishes: fast storage returns its requests without a wake-up each,
// storage slower than poll_us is not polled for.
//
// Without one, rounds run inside queue_notify() (under the transport's lock, on the event loop
// or a vCPU thread), and nothing stays in flight when it returns. One notification takes at most
// kRequestsPerNotify requests, and stops taking more once those taken ask for kBytesPerNotify
// bytes, when the transport can call it again later: a guest that keeps its queue full of large
// requests cannot hold the device's lock (and the event loop) for long, nor starve other
// devices. The bytes of one notification (or round) stay below kBytesPerNotify plus one request.
class VirtioBlock final : public VirtioDevice {
 public:
  static constexpr uint32_t kSectorSize = kBlockSectorSize;
  // Each request queue; a request with seg_max data buffers plus header and status fits it.
  static constexpr uint16_t kQueueSize = 256;
  // Request queues at most (VIRTIO_BLK_F_MQ when more than one).
  static constexpr uint16_t kMaxQueues = 16;
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
  // `num_queues` (1..kMaxQueues) request queues.
  VirtioBlock(std::unique_ptr<BlockBackend> backend, std::string serial,
              BlockThreading threading = {}, uint16_t num_queues = 1);
  // Opens the image named by a parsed --disk spec; `threading.io_thread` is config.iothread.
  explicit VirtioBlock(const BlockConfig& config, BlockThreading threading = {});
  ~VirtioBlock() override;

  std::string name() const override { return "virtio-blk"; }
  uint32_t device_id() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override {
    return std::vector<uint16_t>(num_queues_, kQueueSize);
  }
  uint32_t config_size() const override { return static_cast<uint32_t>(config_.size()); }
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  // The image's size read again: a disk grown or shrunk on the host (--disk's file extended
  // with truncate, a block device resized) gets the new capacity.
  bool rescan() override;
  void activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  void reset() override;
  void queue_reset(uint16_t index) override;
  void pause_io() override;
  void resume_io() override;
  bool watch_queue_notify(uint16_t index, int eventfd) override;

  uint64_t capacity_sectors() const { return backend_->size() / kSectorSize; }
  uint16_t num_queues() const { return num_queues_; }
  bool has_io_thread() const { return io_thread_ != nullptr; }
  // Waits until the I/O thread has nothing to do and no request in flight (at once without
  // one). For tests.
  void wait_idle();
  // Whether the I/O thread keeps requests in flight (BlockAsync) rather than working in rounds.
  bool keeps_requests_in_flight() const { return async_ != nullptr; }
  // Rounds the I/O thread found by polling an emptied queue (no notification), or with
  // requests kept in flight, completions it found by polling. For tests.
  uint64_t poll_hits() const { return poll_.hits() + finish_poll_.hits(); }

 private:
  struct Outcome {
    uint8_t status;
    uint32_t data_written;  // bytes of data written into the guest's buffers
  };
  // A request taken from the queue in this round, parsed, waiting to be carried out.
  struct Pending {
    enum class Step { done, transfer, other };
    std::optional<DescriptorChain> chain;
    Step step = Step::done;  // done: `outcome` is final (a refused request)
    Outcome outcome{};
    bool write = false;  // transfer: direction, first sector and data buffers
    uint64_t sector = 0;
    std::vector<iovec> iov;  // (capacity reused)
    BlockRequest request{};  // other: flush, GET_ID, DISCARD, WRITE_ZEROES
    uint32_t used = 0;       // what goes in the used ring, once carried out
    // Kept in flight (block_in_flight.cpp): the queue and epoch it was taken in, its transfer.
    uint16_t queue = 0;
    uint64_t epoch = 0;
    uint64_t bytes = 0;  // of host I/O
    BlockTransfer transfer;
  };
  struct Taken {
    uint32_t requests = 0;
    uint64_t bytes = 0;  // of host I/O they ask for
  };
  // A round, in two steps. take(): pops and parses up to `max_requests` chains, stopping once
  // they ask for `max_bytes` (queue state: under the lock). execute(): carries them out in
  // order, writes their status bytes (guest buffers and the backend only: no lock needed) and
  // calls `done(first, last)` for each part ready to be returned with give_back() (under the
  // lock): the reads and writes before a FLUSH are returned before it is done. drop() forgets
  // a round instead.
  Taken take(Virtqueue& queue, uint32_t max_requests, uint64_t max_bytes);
  void execute(const std::function<void(size_t, size_t)>& done);
  void give_back(Virtqueue& queue, size_t first, size_t last);
  void drop();
  // What requests taken now are parsed against: whether the driver took FLUSH, the size
  // rescan() may have changed. Before taking.
  void refresh_disk();
  uint64_t parse(Pending& p);  // returns the bytes of host I/O it asks for
  // The batch's transfers [first, last), then the write-through flush they need.
  void run_transfers(size_t first, size_t last);
  Outcome transfer_outcome(const Pending& p, int err, int flush_error);
  void write_status(Pending& p);
  void write_statuses(size_t first, size_t last);
  // On the I/O thread: rounds until the queue is empty. True if it yielded with work left.
  bool serve();
  // Turns every queue's notifications on: whether buffers came meanwhile (the caller must look
  // again before it sleeps); nullopt if the transport is gone.
  std::optional<bool> notifications_on(VirtioTransport& transport);

  // Requests kept in flight (block_in_flight.cpp), on the I/O thread, or with it paused.
  bool serve_in_flight(VirtioTransport* transport);  // as serve()
  bool can_take() const;
  // Pops, parses and starts requests while can_take(), under the lock; how many it took.
  size_t take_and_start(Virtqueue& queue, uint16_t index);
  void run_unstarted();        // what the backend would not take now, synchronously
  size_t collect(bool wait);   // finished transfers to ready_; how many
  void finish_transfers();     // finished_'s requests: their outcomes, into ready_
  size_t carry_out_barrier();  // the FLUSH (...) waiting, once nothing is in flight; 1 if done
  void give_back_ready(VirtioTransport* transport);   // nullptr: the chains are dropped
  void finish_in_flight(VirtioTransport* transport);  // waits for all, returns them
  // The I/O thread's on_pause (or, after it ended, the pauser's): finish_in_flight() under
  // pause_mutex_, with io_uring.
  void finish_paused_in_flight();
  // Fills in `p`'s transfer for a parsed read or write, or sets its error outcome.
  void prepare_transfer(Pending& p, const DescriptorChain& chain, const BlockRequest& request);
  // Carries out a request that is neither read nor write.
  Outcome carry_out(const DescriptorChain& chain, const BlockRequest& request);
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
  const uint16_t num_queues_;
  std::string label_ = "virtio-blk";  // log lines name the image when there is one
  std::vector<uint8_t> config_;  // struct virtio_blk_config, built once (capacity: read_config)

  // Set between activate() and reset(), under the transport's lock; the I/O thread reads
  // transport_ to reach with_queues().
  std::atomic<VirtioTransport*> transport_{nullptr};
  uint64_t features_ = 0;
  BlockDisk disk_;      // what requests are checked against
  uint64_t epoch_ = 0;  // changes (under the lock) with every activate, reset, queue reset

  // The round: written by take() under the lock, then used by one thread at a time (the I/O
  // thread, or queue_notify()'s caller).
  std::array<Pending, kMaxBatch> batch_;
  size_t batch_size_ = 0;
  bool write_through_ = false;            // the driver did not take FLUSH
  std::vector<BlockTransfer> transfers_;  // reused for every batch

  AdaptivePoll poll_;  // the I/O thread's (hits() for tests)
  // With transfers in flight: its budget learns from the sleeps while transfers are out (how
  // soon the storage finishes), poll_'s from those with nothing out (the gaps between requests).
  AdaptivePoll finish_poll_;

  // Requests kept in flight: slots of batch_. Used by the I/O thread, or by whoever paused it
  // (under pause_mutex_).
  BlockAsync* async_ = nullptr;           // backend_->async() with an I/O thread, else nullptr
  std::vector<size_t> free_;              // slots not in use
  std::vector<size_t> ready_;             // carried out, to be returned
  std::vector<size_t> unstarted_;         // transfers the backend would not start
  std::vector<BlockTransfer*> finished_;  // this step's, results set
  std::optional<size_t> barrier_;         // a FLUSH, DISCARD or WRITE_ZEROES waiting
  unsigned started_ = 0;                  // transfers out at the backend
  uint64_t in_flight_bytes_ = 0;
  uint16_t next_queue_ = 0;             // the queue a pass takes from first
  std::atomic<unsigned> in_flight_{0};  // slots in use (wait_idle())
  std::mutex pause_mutex_;

  log::RateLimited request_errors_{"request errors", 10};
  std::unique_ptr<IoThread> io_thread_;  // last: joined before the rest goes
};

}  // namespace libvmm
