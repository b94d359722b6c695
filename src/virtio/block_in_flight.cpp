// VirtioBlock's I/O thread with a backend that keeps transfers in flight (BlockAsync): each
// request is started as it is taken and returned as it finishes, while the thread takes more
// (block.hpp, "Requests kept in flight"). The slots of batch_ hold the requests; free_ lists
// the unused ones. A FLUSH, DISCARD or WRITE_ZEROES is a barrier: it waits in barrier_, with no
// more requests taken, until every transfer before it has finished.
#include <linux/virtio_blk.h>
#include <unistd.h>

#include <algorithm>

#include "libvmm/virtio/block.hpp"

namespace libvmm {

static_assert(VirtioBlock::kMaxQueues <= 32, "give_back_ready() keeps a bit per queue");

bool VirtioBlock::can_take() const {
  return !barrier_ && !free_.empty() && in_flight_bytes_ < kBytesPerNotify;
}

bool VirtioBlock::serve_in_flight(VirtioTransport* transport) {
  if (transport == nullptr) {
    // Reset without a pause (a transport that does not pause): what finishes is dropped.
    collect(false);
    give_back_ready(nullptr);
    return false;
  }
  poll_.woke();
  finish_poll_.woke();
  while (!io_thread_->yield_requested()) {
    size_t progress = collect(false);
    bool gone = false;  // reset since (when the transport did not pause us)
    // One queue after another, starting from the next one each pass: none waits for another's
    // backlog longer than the slots it holds.
    for (uint16_t n = 0; n < num_queues_ && !gone && can_take(); ++n) {
      const auto q = static_cast<uint16_t>((next_queue_ + n) % num_queues_);
      const bool live = transport->with_queues([&](std::span<Virtqueue> queues) {
        if (transport_ != transport || queues.size() <= q) {
          gone = true;
          return;
        }
        if (!poll_.polling() && !finish_poll_.polling()) queues[q].disable_notifications();
        progress += take_and_start(queues[q], q);
      });
      gone = gone || !live;
    }
    next_queue_ = static_cast<uint16_t>((next_queue_ + 1) % num_queues_);
    async_->submit();
    run_unstarted();
    progress += carry_out_barrier();
    give_back_ready(transport);
    if (gone) return false;
    if (progress > 0) {
      poll_.found();
      finish_poll_.found();
      continue;
    }
    // Nothing to take until a transfer finishes: its completion wakes the thread.
    if (!can_take()) return false;
    // Empty queues, and with transfers out the backend's completions (collect() at the top of
    // the loop), are looked at again (notifications stay off) within a poll budget: a request
    // or completion that comes meanwhile costs no wake-up. With transfers out the budget is
    // finish_poll_'s, learnt from the sleeps while transfers were out, so storage slower than
    // poll_us is not polled for, and does not stop the polling for the guest's next request.
    if ((started_ > 0 ? finish_poll_ : poll_).keep_polling()) continue;
    const std::optional<bool> more = notifications_on(*transport);
    if (!more) return false;
    if (*more) continue;
    // A signal left from completions already collected (io_uring signals the ones found by
    // polling, or inline, too) would only wake the thread for nothing: drain it, then look at
    // the completions once more, so that one coming after that look signals anew.
    uint64_t count = 0;
    static_cast<void>(::read(async_->completion_fd(), &count, sizeof count));
    if (started_ > 0 && collect(false) > 0) continue;  // the next pass gives it back
    (started_ > 0 ? finish_poll_ : poll_).sleeping();
    return false;
  }
  // Paused or ending: what is in flight is finished before the pause takes effect, on this
  // thread (on_pause: finish_paused_in_flight()), or by the pauser once the thread has ended.
  return true;
}

size_t VirtioBlock::take_and_start(Virtqueue& queue, uint16_t index) {
  refresh_disk();
  size_t taken = 0;
  while (can_take()) {
    auto chain = queue.pop();
    if (!chain) break;
    const size_t slot = free_.back();
    free_.pop_back();
    in_flight_.fetch_add(1);
    ++taken;
    Pending& p = batch_[slot];
    p.chain.emplace(std::move(*chain));
    p.queue = index;
    p.epoch = epoch_;
    p.bytes = 0;
    const uint64_t bytes = parse(p);
    switch (p.step) {
      case Pending::Step::done:  // refused
        ready_.push_back(slot);
        break;
      case Pending::Step::transfer:
        p.bytes = bytes;
        in_flight_bytes_ += bytes;
        p.transfer = {p.write, p.sector * kSectorSize, p.iov, 0, slot};
        if (async_->start(p.transfer)) {
          ++started_;
        } else {
          unstarted_.push_back(slot);  // after the lock: host I/O never runs under it
        }
        break;
      case Pending::Step::other:
        if (p.request.type == BlockRequestType::get_id) {
          p.outcome = carry_out(*p.chain, p.request);
          ready_.push_back(slot);
        } else {
          barrier_ = slot;  // can_take() is false from here on
        }
        break;
    }
  }
  return taken;
}

void VirtioBlock::run_unstarted() {
  finished_.clear();
  for (const size_t slot : unstarted_) {
    BlockTransfer& t = batch_[slot].transfer;
    backend_->transfer_batch(std::span(&t, 1));
    finished_.push_back(&t);
  }
  unstarted_.clear();
  finish_transfers();
}

size_t VirtioBlock::collect(bool wait) {
  finished_.clear();
  async_->reap(finished_, wait);
  started_ -= static_cast<unsigned>(finished_.size());
  finish_transfers();
  return finished_.size();
}

void VirtioBlock::finish_transfers() {
  // A driver that did not take FLUSH gets write-through: one flush covers the writes that
  // finished together.
  const auto wrote = [](const BlockTransfer* t) { return t->write && t->result == 0; };
  int flush_error = 0;
  if (write_through_ && std::any_of(finished_.begin(), finished_.end(), wrote)) {
    flush_error = backend_->flush();
  }
  for (const BlockTransfer* t : finished_) {
    const auto slot = static_cast<size_t>(t->tag);
    Pending& p = batch_[slot];
    in_flight_bytes_ -= p.bytes;
    p.outcome = transfer_outcome(p, t->result, flush_error);
    ready_.push_back(slot);
  }
}

size_t VirtioBlock::carry_out_barrier() {
  if (!barrier_ || started_ != 0) return 0;
  Pending& p = batch_[*barrier_];
  p.outcome = carry_out(*p.chain, p.request);
  ready_.push_back(*barrier_);
  barrier_.reset();
  return 1;
}

void VirtioBlock::give_back_ready(VirtioTransport* transport) {
  if (ready_.empty()) return;
  for (const size_t slot : ready_) write_status(batch_[slot]);
  if (transport != nullptr) {
    transport->with_queues([&](std::span<Virtqueue> queues) {
      if (transport_ != transport) return;
      uint32_t used = 0;  // queues with chains returned (kMaxQueues bits)
      for (const size_t slot : ready_) {
        const Pending& p = batch_[slot];
        // A chain taken before a reset (or its queue's) belongs to no ring the driver has now.
        if (p.epoch != epoch_ || p.queue >= queues.size()) continue;
        queues[p.queue].push(p.chain->head(), p.used);
        used |= 1u << p.queue;
      }
      for (uint16_t q = 0; q < num_queues_; ++q) {
        if (used & (1u << q)) transport->signal_used(q);
      }
    });
  }
  for (const size_t slot : ready_) {
    batch_[slot].chain.reset();
    free_.push_back(slot);
  }
  in_flight_.fetch_sub(static_cast<unsigned>(ready_.size()));
  in_flight_.notify_all();
  ready_.clear();
}

void VirtioBlock::finish_in_flight(VirtioTransport* transport) {
  while (started_ > 0) collect(true);
  run_unstarted();
  carry_out_barrier();
  give_back_ready(transport);
}

}  // namespace libvmm
