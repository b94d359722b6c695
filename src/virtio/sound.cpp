#include "libvmm/virtio/sound.hpp"

#include <endian.h>
#include <fmt/format.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_snd.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <variant>

#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

constexpr size_t kScratchBytes = 64 * 1024;  // frames move through this many bytes at a time

static_assert(VIRTIO_ID_SOUND == 25, "virtIO 1.2 §5.14.1");

int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::array<uint8_t, kSoundPcmStatusBytes> pcm_status(SoundStatus status, uint32_t latency) {
  virtio_snd_pcm_status s{};
  s.status = htole32(static_cast<uint32_t>(status));
  s.latency_bytes = htole32(latency);
  std::array<uint8_t, kSoundPcmStatusBytes> out{};
  std::memcpy(out.data(), &s, sizeof s);
  return out;
}

}  // namespace

VirtioSound::VirtioSound(std::unique_ptr<SoundBackend> backend, Clock clock)
    : backend_(backend ? std::move(backend) : std::make_unique<NullSoundBackend>()),
      clock_(clock ? std::move(clock) : Clock(monotonic_ns)),
      card_(backend_->capabilities(SoundDirection::output),
            backend_->capabilities(SoundDirection::input)),
      scratch_(kScratchBytes) {}

VirtioSound::~VirtioSound() {
  if (timer_) {
    // Not loop->remove(): this may run inside the loop's own destruction. The callback stays
    // registered, harmless: the timer is disarmed and the link no longer leads here.
    const std::lock_guard lock(timer_->mutex);
    timer_->device = nullptr;
    const itimerspec off{};
    ::timerfd_settime(timer_->fd.get(), 0, &off, nullptr);
  }
  const Counters c = counters();
  const auto level = c.underruns + c.overruns != 0 ? log::Level::warn : log::Level::info;
  if (log::level() >= level) {
    log::write(level, fmt::format("{} ({}): {} frames played, {} underruns; {} frames captured, "
                                  "{} overruns; {} malformed requests; mean playback latency {} us",
                                  name(), backend_->describe(), c.frames_played, c.underruns,
                                  c.frames_captured, c.overruns, c.bad_requests,
                                  c.tx_completed == 0 ? 0 : c.tx_latency_us / c.tx_completed));
  }
}

uint32_t VirtioSound::device_id() const {
  return VIRTIO_ID_SOUND;
}

uint32_t VirtioSound::config_size() const {
  return sizeof(virtio_snd_config);
}

void VirtioSound::read_config(uint32_t offset, std::span<uint8_t> data) {
  virtio_snd_config config{};
  config.jacks = htole32(kSoundJacks);
  config.streams = htole32(kSoundStreams);
  config.chmaps = htole32(kSoundChmaps);
  const auto* bytes = reinterpret_cast<const uint8_t*>(&config);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < sizeof config ? bytes[offset + i] : 0;
  }
}

VirtioSound::Counters VirtioSound::counters() const {
  return {frames_played_.load(std::memory_order_relaxed),
          frames_captured_.load(std::memory_order_relaxed),
          underruns_.load(std::memory_order_relaxed) +
              backend_xruns_[kSoundOutputStream].load(std::memory_order_relaxed),
          overruns_.load(std::memory_order_relaxed) +
              backend_xruns_[kSoundInputStream].load(std::memory_order_relaxed),
          bad_requests_.load(std::memory_order_relaxed),
          tx_completed_.load(std::memory_order_relaxed),
          tx_latency_us_.load(std::memory_order_relaxed)};
}

void VirtioSound::start(EventLoop& loop) {
  auto link = std::make_shared<TimerLink>();
  link->fd.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!link->fd) throw_errno("virtio-snd: timerfd_create");
  link->device = this;
  timer_ = link;
  loop.add(link->fd.get(), EPOLLIN, [link](uint32_t) {
    uint64_t expirations = 0;
    [[maybe_unused]] const ssize_t n = ::read(link->fd.get(), &expirations, sizeof expirations);
    const std::lock_guard lock(link->mutex);
    if (link->device == nullptr) return;
    if (VirtioTransport* t = link->device->timer_transport_.load(std::memory_order_acquire)) {
      VirtioSound* device = link->device;
      t->with_queues([device](std::span<Virtqueue>) { device->tick(); });
    }
  });
}

void VirtioSound::activate(VirtioTransport& transport, uint64_t /*features*/) {
  transport_ = &transport;
  timer_transport_.store(&transport, std::memory_order_release);
}

void VirtioSound::reset() {
  // The queues are reset right after: messages the device holds are dropped, not returned.
  for (uint32_t id = 0; id < kSoundStreams; ++id) {
    runs_[id] = Run{};
    if (card_.stream(id).accepts_io()) {
      backend_->close(card_.stream(id).direction);
    }
  }
  card_.reset();
  tx_ = rx_ = nullptr;
  transport_ = nullptr;
  timer_transport_.store(nullptr, std::memory_order_release);
  update_timer();
}

void VirtioSound::queue_reset(uint16_t index) {
  if (index == kTxQueue || index == kRxQueue) {
    const uint32_t id = index == kTxQueue ? kSoundOutputStream : kSoundInputStream;
    runs_[id].pending.clear();
    runs_[id].pending_bytes = 0;
    (index == kTxQueue ? tx_ : rx_) = nullptr;
  }
}

void VirtioSound::return_held(uint16_t index, Virtqueue&) {
  // As at RELEASE: output given back as played, input with silence for what was not captured.
  if (index == kTxQueue && tx_ != nullptr) flush(kSoundOutputStream);
  if (index == kRxQueue && rx_ != nullptr) flush(kSoundInputStream);
}

void VirtioSound::guest_error(const std::string& message) {
  bad_requests_.fetch_add(1, std::memory_order_relaxed);
  guest_errors_.warn(name(), message);
}

void VirtioSound::signal(uint16_t index) {
  if (transport_ != nullptr) transport_->signal_used(index);
}

Virtqueue* VirtioSound::queue_of(uint32_t id) const {
  return id == kSoundOutputStream ? tx_ : rx_;
}

// ---------------------------------------------------------------------------------------------
// Queues

void VirtioSound::queue_notify(uint16_t index, Virtqueue& queue) {
  if (transport_ == nullptr) return;
  switch (index) {
    case kControlQueue:
      control(queue);
      break;
    case kTxQueue:
    case kRxQueue:
      io(index, queue);
      break;
    default:
      // The event queue: the device sends no events (no jack remapping, no PCM notifications),
      // so the driver's buffers stay there.
      break;
  }
}

void VirtioSound::control(Virtqueue& queue) {
  uint32_t chains = 0;
  do {
    queue.disable_notifications();
    bool pushed = false;
    while (true) {
      if (chains >= kChainsPerNotify && transport_->renotify(kControlQueue)) {
        if (pushed) signal(kControlQueue);
        return;
      }
      auto chain = queue.pop();
      if (!chain) break;
      ++chains;
      uint8_t request[64] = {};
      const size_t len = static_cast<size_t>(std::min<uint64_t>(chain->readable_bytes(), 64));
      if (!chain->read_at(0, std::span(request, len))) {
        guest_error(fmt::format("control request {} is not in guest RAM", chain->head()));
        queue.push(chain->head(), 0);
        pushed = true;
        continue;
      }
      if (chain->writable_bytes() < kSoundHdrBytes) {
        guest_error(
            fmt::format("control request {} has {} device-writable bytes (needs {} for "
                        "the status); returned unanswered",
                        chain->head(), chain->writable_bytes(), kSoundHdrBytes));
        queue.push(chain->head(), 0);
        pushed = true;
        continue;
      }
      SoundControlReply reply = card_.control(std::span(request, len), chain->writable_bytes());
      if (reply.status == SoundStatus::ok) {
        carry_out(reply);
      } else {
        guest_error(reply.error);
        reply.payload.clear();
      }
      const uint32_t status = htole32(static_cast<uint32_t>(reply.status));
      std::vector<uint8_t> response(kSoundHdrBytes + reply.payload.size());
      std::memcpy(response.data(), &status, kSoundHdrBytes);
      std::copy(reply.payload.begin(), reply.payload.end(), response.begin() + kSoundHdrBytes);
      const bool written = chain->write_at(0, response);
      queue.push(chain->head(), written ? static_cast<uint32_t>(response.size()) : 0);
      pushed = true;
    }
    if (pushed) signal(kControlQueue);
  } while (queue.ready() && !queue.broken() && queue.enable_notifications());
}

void VirtioSound::carry_out(SoundControlReply& reply) {
  const uint32_t id = reply.stream_id;
  const PcmStream& stream = card_.stream(id);
  switch (reply.action) {
    case SoundAction::none:
      break;
    case SoundAction::set_params:
      // New parameters for a prepared stream: what it holds was for the old ones.
      if (stream.accepts_io()) {
        flush(id);
        backend_->close(stream.direction);
      }
      break;
    case SoundAction::prepare: {
      const bool was_open = stream.accepts_io();
      if (was_open) {
        flush(id);
        backend_->close(stream.direction);
      }
      const std::string why = backend_->open(stream.direction, stream.params->params);
      if (!why.empty()) {
        guest_error(fmt::format("stream {}: the host refused {} {} Hz {} ch: {}", id,
                                to_string(stream.params->params.format), stream.params->params.rate,
                                stream.params->params.channels, why));
        reply.status = SoundStatus::io_err;
        reply.error = why;
        // A prepared stream's backend is closed now: it goes back to its parameters set (as
        // after SET_PARAMS), where START is refused and PREPARE may be tried again, instead of
        // taking I/O nothing will ever consume. Any other stream stays where it was.
        if (was_open) {
          SoundControlReply back;
          back.action = SoundAction::set_params;
          back.stream_id = id;
          back.params = *stream.params;
          card_.apply(back);
        }
        return;
      }
      runs_[id] = Run{};
      break;
    }
    case SoundAction::start:
      start_stream(id);
      backend_->start(stream.direction);
      break;
    case SoundAction::stop:
      advance(id);  // what was due until now is played
      runs_[id].starved = false;
      backend_->stop(stream.direction);
      signal_done();
      break;
    case SoundAction::release:
      flush(id);
      backend_->close(stream.direction);
      break;
  }
  card_.apply(reply);
  update_timer();
}

void VirtioSound::start_stream(uint32_t id) {
  Run& run = runs_[id];
  run.base_ns = clock_();
  run.frames_since_base = 0;
  run.starved = false;
}

void VirtioSound::io(uint16_t index, Virtqueue& queue) {
  const bool tx = index == kTxQueue;
  (tx ? tx_ : rx_) = &queue;
  bool pushed = false;
  uint32_t chains = 0;
  do {
    queue.disable_notifications();
    while (true) {
      if (chains >= kChainsPerNotify && transport_->renotify(index)) {
        if (pushed) signal(index);
        return;
      }
      auto chain = queue.pop();
      if (!chain) break;
      ++chains;
      const ParsedSoundIo parsed = parse_sound_io(*chain, tx, card_);
      if (const auto* error = std::get_if<SoundIoError>(&parsed)) {
        guest_error(error->message);
        uint32_t used = 0;
        if (error->kind != SoundIoError::Kind::no_status) {
          const auto status = pcm_status(SoundStatus::bad_msg, 0);
          if (chain->write_at(chain->writable_bytes() - kSoundPcmStatusBytes, status)) {
            used = kSoundPcmStatusBytes;
          }
        }
        queue.push(chain->head(), used);
        pushed = true;
        continue;
      }
      const SoundIo& message = std::get<SoundIo>(parsed);
      Run& run = runs_[message.stream_id];
      if (run.starved && card_.stream(message.stream_id).state == PcmState::started) {
        // Data (or a buffer) again after the clock ran without: that gap was an xrun. The
        // clock starts again from now.
        (tx ? underruns_ : overruns_).fetch_add(1, std::memory_order_relaxed);
        start_stream(message.stream_id);
      }
      run.pending.push_back({std::move(*chain), message.data_bytes, 0});
      run.pending_bytes += message.data_bytes;
    }
    if (pushed) signal(index);
    pushed = false;
  } while (queue.ready() && !queue.broken() && queue.enable_notifications());
}

// ---------------------------------------------------------------------------------------------
// Pacing

void VirtioSound::tick() {
  for (uint32_t id = 0; id < kSoundStreams; ++id) {
    if (card_.stream(id).state == PcmState::started) advance(id);
  }
  signal_done();
}

void VirtioSound::signal_done() {
  if (signal_tx_) signal(kTxQueue);
  if (signal_rx_) signal(kRxQueue);
  signal_tx_ = signal_rx_ = false;
}

void VirtioSound::advance(uint32_t id) {
  const PcmStream& stream = card_.stream(id);
  if (stream.state != PcmState::started || !stream.params) return;
  Run& run = runs_[id];
  const SoundParams& params = stream.params->params;
  const uint32_t frame = params.frame_bytes();
  const std::optional<uint64_t> ready = backend_->frames_ready(stream.direction);
  uint64_t due = 0;
  if (ready) {
    // The backend's clock: as much as it has room for (or has captured).
    due = std::min<uint64_t>(*ready, params.rate);
  } else {
    const int64_t now = clock_();
    const int64_t elapsed = std::max<int64_t>(0, now - run.base_ns);
    const uint64_t due_total =
        static_cast<uint64_t>(static_cast<__int128>(elapsed) * params.rate / 1'000'000'000);
    due = due_total > run.frames_since_base ? due_total - run.frames_since_base : 0;
    // An event loop held up for more than a second: play a second's worth now, and forget the
    // rest of the lag (the clock moves on with it), or the next ticks would each play another
    // second to catch up.
    if (due > params.rate) {
      run.frames_since_base = due_total - params.rate;
      due = params.rate;
    }
  }
  const bool output = stream.direction == SoundDirection::output;
  Virtqueue* queue = queue_of(id);
  while (due > 0 && !run.pending.empty() && queue != nullptr) {
    Pending& p = run.pending.front();
    const uint64_t left_frames = (p.data_bytes - p.done) / frame;
    const uint64_t frames = std::min<uint64_t>({due, left_frames, scratch_.size() / frame});
    const size_t bytes = static_cast<size_t>(frames * frame);
    const std::span<uint8_t> chunk(scratch_.data(), bytes);
    if (output) {
      if (p.chain.read_at(kSoundXferBytes + p.done, chunk)) {
        backend_->play(chunk);
      } else {
        std::fill(chunk.begin(), chunk.end(), 0);  // checked when parsed; never expected
      }
      frames_played_.fetch_add(frames, std::memory_order_relaxed);
    } else {
      backend_->capture(chunk);
      p.chain.write_at(p.done, chunk);
      frames_captured_.fetch_add(frames, std::memory_order_relaxed);
    }
    p.done += static_cast<uint32_t>(bytes);
    run.pending_bytes -= bytes;
    run.frames_since_base += frames;
    due -= frames;
    if (p.done == p.data_bytes) {
      complete(id, p, SoundStatus::ok);
      run.pending.pop_front();
    }
  }
  backend_xruns_[id].store(backend_->xruns(stream.direction), std::memory_order_relaxed);
  if (due > 0 && !ready) {
    // No data to play (or no buffer to capture into) although the clock says it is due: the
    // host plays silence (drops what it captured); counted if the guest carries on.
    if (!run.starved) backend_->xrun(stream.direction, due);
    run.starved = true;
    run.frames_since_base += due;
  }
}

void VirtioSound::complete(uint32_t id, Pending& p, SoundStatus status) {
  Virtqueue* queue = queue_of(id);
  if (queue == nullptr) return;
  const bool output = id == kSoundOutputStream;
  // The latency: what the device and the host's audio path hold ahead of the next frame the
  // guest gives it.
  const PcmStream& stream = card_.stream(id);
  const uint64_t host =
      stream.params ? backend_->delay_frames(stream.direction) * stream.params->params.frame_bytes()
                    : 0;
  const uint64_t latency = std::min<uint64_t>(runs_[id].pending_bytes + host, UINT32_MAX);
  const auto s = pcm_status(status, static_cast<uint32_t>(latency));
  uint32_t used = kSoundPcmStatusBytes;
  if (output) {
    p.chain.write_at(0, s);
    if (stream.params) {
      const uint64_t bytes_per_s =
          uint64_t{stream.params->params.rate} * stream.params->params.frame_bytes();
      tx_completed_.fetch_add(1, std::memory_order_relaxed);
      tx_latency_us_.fetch_add(latency * 1'000'000 / bytes_per_s, std::memory_order_relaxed);
    }
  } else {
    if (p.done < p.data_bytes) {  // released before it was filled: silence for the rest
      const bool u8 = stream.params && stream.params->params.format == SoundFormat::u8;
      std::fill(scratch_.begin(), scratch_.end(), u8 ? 0x80 : 0);
      for (uint32_t at = p.done; at < p.data_bytes;) {
        const uint32_t n =
            std::min<uint32_t>(p.data_bytes - at, static_cast<uint32_t>(scratch_.size()));
        p.chain.write_at(at, std::span(scratch_.data(), n));
        at += n;
      }
    }
    p.chain.write_at(p.data_bytes, s);
    used += p.data_bytes;
  }
  queue->push(p.chain.head(), used);
  (output ? signal_tx_ : signal_rx_) = true;
}

void VirtioSound::flush(uint32_t id) {
  Run& run = runs_[id];
  run.pending_bytes = 0;
  for (Pending& p : run.pending) complete(id, p, SoundStatus::ok);
  run.pending.clear();
  run.starved = false;
  signal_done();
}

void VirtioSound::update_timer() {
  bool running = false;
  for (uint32_t id = 0; id < kSoundStreams; ++id) {
    running = running || (transport_ != nullptr && card_.stream(id).state == PcmState::started);
  }
  if (!timer_ || running == timer_armed_) return;
  itimerspec spec{};
  if (running) {
    spec.it_interval.tv_nsec = kTickNs;
    spec.it_value.tv_nsec = kTickNs;
  }
  if (::timerfd_settime(timer_->fd.get(), 0, &spec, nullptr) == 0) timer_armed_ = running;
}

}  // namespace libvmm
