#include "libvmm/virtio/sound_request.hpp"

#include <fmt/format.h>
#include <linux/virtio_snd.h>

#include <algorithm>
#include <cstring>

#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {
namespace {

static_assert(sizeof(virtio_snd_hdr) == kSoundHdrBytes);
static_assert(sizeof(virtio_snd_pcm_xfer) == kSoundXferBytes);
static_assert(sizeof(virtio_snd_pcm_status) == kSoundPcmStatusBytes);
static_assert(sizeof(virtio_snd_jack_info) == kSoundJackInfoBytes);
static_assert(sizeof(virtio_snd_pcm_info) == kSoundPcmInfoBytes);
static_assert(sizeof(virtio_snd_chmap_info) == kSoundChmapInfoBytes);
static_assert(sizeof(virtio_snd_pcm_set_params) == kSoundSetParamsBytes);
static_assert(static_cast<uint32_t>(SoundStatus::io_err) == VIRTIO_SND_S_IO_ERR);

constexpr size_t kMaxRequestBytes = 64;

// The HDA function group node ids the streams and jacks belong to: one codec, one node.
constexpr uint32_t kHdaFnNid = 0;
// Pin default configuration (HDA 7.3.3.31): line out, rear, 1/8" jack, green; mic in, pink.
constexpr uint32_t kJackDefconf[kSoundJacks] = {0x01014010, 0x01a19020};
// Pin capabilities (HDA 7.3.4.9): output capable; input capable.
constexpr uint32_t kJackCaps[kSoundJacks] = {0x00000010, 0x00000020};

uint32_t le32(std::span<const uint8_t> b, size_t offset) {
  uint32_t v = 0;
  std::memcpy(&v, b.data() + offset, 4);
  return le32toh(v);
}

uint8_t virtio_format(SoundFormat format) {
  switch (format) {
    case SoundFormat::u8:
      return VIRTIO_SND_PCM_FMT_U8;
    case SoundFormat::s16:
      return VIRTIO_SND_PCM_FMT_S16;
    case SoundFormat::s24:
      return VIRTIO_SND_PCM_FMT_S24;
    case SoundFormat::s32:
      return VIRTIO_SND_PCM_FMT_S32;
    case SoundFormat::float32:
      return VIRTIO_SND_PCM_FMT_FLOAT;
  }
  return VIRTIO_SND_PCM_FMT_S16;
}

std::optional<SoundFormat> from_virtio_format(uint8_t code) {
  for (SoundFormat f : kAllSoundFormats) {
    if (virtio_format(f) == code) return f;
  }
  return std::nullopt;
}

struct RateCode {
  uint32_t rate;
  uint8_t code;
};
constexpr RateCode kRateCodes[] = {
    {8000, VIRTIO_SND_PCM_RATE_8000},     {11025, VIRTIO_SND_PCM_RATE_11025},
    {16000, VIRTIO_SND_PCM_RATE_16000},   {22050, VIRTIO_SND_PCM_RATE_22050},
    {32000, VIRTIO_SND_PCM_RATE_32000},   {44100, VIRTIO_SND_PCM_RATE_44100},
    {48000, VIRTIO_SND_PCM_RATE_48000},   {64000, VIRTIO_SND_PCM_RATE_64000},
    {88200, VIRTIO_SND_PCM_RATE_88200},   {96000, VIRTIO_SND_PCM_RATE_96000},
    {176400, VIRTIO_SND_PCM_RATE_176400}, {192000, VIRTIO_SND_PCM_RATE_192000},
};

std::optional<uint32_t> from_virtio_rate(uint8_t code) {
  for (const RateCode& r : kRateCodes) {
    if (r.code == code) return r.rate;
  }
  return std::nullopt;
}

uint64_t format_mask(const SoundCapabilities& caps) {
  uint64_t mask = 0;
  for (SoundFormat f : caps.formats) mask |= uint64_t{1} << virtio_format(f);
  return mask;
}

uint64_t rate_mask(const SoundCapabilities& caps) {
  uint64_t mask = 0;
  for (const RateCode& r : kRateCodes) {
    if (std::find(caps.rates.begin(), caps.rates.end(), r.rate) != caps.rates.end()) {
      mask |= uint64_t{1} << r.code;
    }
  }
  return mask;
}

SoundControlReply refuse(SoundStatus status, std::string error) {
  SoundControlReply reply;
  reply.status = status;
  reply.error = std::move(error);
  return reply;
}

const char* request_name(uint32_t code) {
  switch (code) {
    case VIRTIO_SND_R_JACK_INFO:
      return "JACK_INFO";
    case VIRTIO_SND_R_JACK_REMAP:
      return "JACK_REMAP";
    case VIRTIO_SND_R_PCM_INFO:
      return "PCM_INFO";
    case VIRTIO_SND_R_PCM_SET_PARAMS:
      return "PCM_SET_PARAMS";
    case VIRTIO_SND_R_PCM_PREPARE:
      return "PCM_PREPARE";
    case VIRTIO_SND_R_PCM_RELEASE:
      return "PCM_RELEASE";
    case VIRTIO_SND_R_PCM_START:
      return "PCM_START";
    case VIRTIO_SND_R_PCM_STOP:
      return "PCM_STOP";
    case VIRTIO_SND_R_CHMAP_INFO:
      return "CHMAP_INFO";
  }
  return "?";
}

// Channel map `id`: 0 output mono, 1 output stereo, 2 input mono, 3 input stereo.
virtio_snd_chmap_info chmap(uint32_t id) {
  virtio_snd_chmap_info info{};
  info.hdr.hda_fn_nid = htole32(kHdaFnNid);
  info.direction = id < 2 ? VIRTIO_SND_D_OUTPUT : VIRTIO_SND_D_INPUT;
  if (id % 2 == 0) {
    info.channels = 1;
    info.positions[0] = VIRTIO_SND_CHMAP_MONO;
  } else {
    info.channels = 2;
    info.positions[0] = VIRTIO_SND_CHMAP_FL;
    info.positions[1] = VIRTIO_SND_CHMAP_FR;
  }
  return info;
}

}  // namespace

const char* to_string(PcmState state) {
  switch (state) {
    case PcmState::initial:
      return "initial";
    case PcmState::params_set:
      return "SET_PARAMETERS";
    case PcmState::prepared:
      return "PREPARE";
    case PcmState::started:
      return "START";
    case PcmState::stopped:
      return "STOP";
    case PcmState::released:
      return "RELEASE";
  }
  return "?";
}

SoundCard::SoundCard(const SoundCapabilities& output, const SoundCapabilities& input) {
  streams_[kSoundOutputStream].direction = SoundDirection::output;
  streams_[kSoundOutputStream].caps = output;
  streams_[kSoundInputStream].direction = SoundDirection::input;
  streams_[kSoundInputStream].caps = input;
  for (PcmStream& s : streams_) {
    s.caps.channels_min = std::max<uint32_t>(s.caps.channels_min, 1);
    s.caps.channels_max = std::min(s.caps.channels_max, kSoundMaxChannels);
  }
}

void SoundCard::reset() {
  for (PcmStream& s : streams_) {
    s.state = PcmState::initial;
    s.params.reset();
  }
}

SoundControlReply SoundCard::control(std::span<const uint8_t> request,
                                     uint64_t writable_bytes) const {
  if (request.size() > kMaxRequestBytes) request = request.first(kMaxRequestBytes);
  if (request.size() < kSoundHdrBytes) {
    return refuse(SoundStatus::bad_msg,
                  fmt::format("control request of {} bytes has no header", request.size()));
  }
  const uint32_t code = le32(request, 0);
  switch (code) {
    case VIRTIO_SND_R_JACK_INFO:
    case VIRTIO_SND_R_PCM_INFO:
    case VIRTIO_SND_R_CHMAP_INFO:
      return query(code, request, writable_bytes);
    case VIRTIO_SND_R_PCM_SET_PARAMS:
      return set_params(request);
    case VIRTIO_SND_R_PCM_PREPARE:
    case VIRTIO_SND_R_PCM_RELEASE:
    case VIRTIO_SND_R_PCM_START:
    case VIRTIO_SND_R_PCM_STOP:
      if (request.size() < sizeof(virtio_snd_pcm_hdr)) {
        return refuse(SoundStatus::bad_msg,
                      fmt::format("{} of {} bytes (needs {})", request_name(code), request.size(),
                                  sizeof(virtio_snd_pcm_hdr)));
      }
      return transition(code, le32(request, 4));
    case VIRTIO_SND_R_JACK_REMAP:
      return refuse(SoundStatus::not_supp, "JACK_REMAP (no jack offers VIRTIO_SND_JACK_F_REMAP)");
    default:
      return refuse(SoundStatus::not_supp, fmt::format("unknown control request {:#x}", code));
  }
}

SoundControlReply SoundCard::query(uint32_t code, std::span<const uint8_t> request,
                                   uint64_t writable_bytes) const {
  const char* name = request_name(code);
  if (request.size() < sizeof(virtio_snd_query_info)) {
    return refuse(SoundStatus::bad_msg, fmt::format("{} of {} bytes (needs {})", name,
                                                    request.size(), sizeof(virtio_snd_query_info)));
  }
  const uint32_t start = le32(request, 4);
  const uint32_t count = le32(request, 8);
  const uint32_t size = le32(request, 12);
  uint32_t items = 0;
  uint32_t item_bytes = 0;
  switch (code) {
    case VIRTIO_SND_R_JACK_INFO:
      items = kSoundJacks;
      item_bytes = kSoundJackInfoBytes;
      break;
    case VIRTIO_SND_R_PCM_INFO:
      items = kSoundStreams;
      item_bytes = kSoundPcmInfoBytes;
      break;
    default:
      items = kSoundChmaps;
      item_bytes = kSoundChmapInfoBytes;
      break;
  }
  if (uint64_t{start} + count > items) {
    return refuse(SoundStatus::bad_msg, fmt::format("{} of items {}..{} (the device has {})", name,
                                                    start, uint64_t{start} + count, items));
  }
  if (size < item_bytes || size > kSoundMaxInfoSize) {
    return refuse(SoundStatus::bad_msg, fmt::format("{} with items of {} bytes (needs {}..{})",
                                                    name, size, item_bytes, kSoundMaxInfoSize));
  }
  const uint64_t needed = kSoundHdrBytes + uint64_t{count} * size;
  if (writable_bytes < needed) {
    return refuse(SoundStatus::bad_msg,
                  fmt::format("{} of {} items of {} bytes has a {}-byte response buffer (needs {})",
                              name, count, size, writable_bytes, needed));
  }
  SoundControlReply reply;
  reply.payload.assign(uint64_t{count} * size, 0);
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t id = start + i;
    uint8_t* out = reply.payload.data() + uint64_t{i} * size;
    if (code == VIRTIO_SND_R_JACK_INFO) {
      virtio_snd_jack_info info{};
      info.hdr.hda_fn_nid = htole32(kHdaFnNid);
      info.features = 0;
      info.hda_reg_defconf = htole32(kJackDefconf[id]);
      info.hda_reg_caps = htole32(kJackCaps[id]);
      info.connected = 1;
      std::memcpy(out, &info, sizeof info);
    } else if (code == VIRTIO_SND_R_PCM_INFO) {
      const PcmStream& s = streams_[id];
      virtio_snd_pcm_info info{};
      info.hdr.hda_fn_nid = htole32(kHdaFnNid);
      info.features = 0;
      info.formats = htole64(format_mask(s.caps));
      info.rates = htole64(rate_mask(s.caps));
      info.direction =
          s.direction == SoundDirection::output ? VIRTIO_SND_D_OUTPUT : VIRTIO_SND_D_INPUT;
      info.channels_min = static_cast<uint8_t>(s.caps.channels_min);
      info.channels_max = static_cast<uint8_t>(s.caps.channels_max);
      std::memcpy(out, &info, sizeof info);
    } else {
      const virtio_snd_chmap_info info = chmap(id);
      std::memcpy(out, &info, sizeof info);
    }
  }
  return reply;
}

SoundControlReply SoundCard::set_params(std::span<const uint8_t> request) const {
  if (request.size() < kSoundSetParamsBytes) {
    return refuse(SoundStatus::bad_msg, fmt::format("PCM_SET_PARAMS of {} bytes (needs {})",
                                                    request.size(), kSoundSetParamsBytes));
  }
  virtio_snd_pcm_set_params p{};
  std::memcpy(&p, request.data(), sizeof p);
  const uint32_t id = le32toh(p.hdr.stream_id);
  if (id >= kSoundStreams) {
    return refuse(
        SoundStatus::bad_msg,
        fmt::format("PCM_SET_PARAMS of stream {} (the device has {})", id, kSoundStreams));
  }
  const PcmStream& s = streams_[id];
  if (s.state != PcmState::initial && s.state != PcmState::params_set &&
      s.state != PcmState::prepared && s.state != PcmState::released) {
    return refuse(SoundStatus::bad_msg,
                  fmt::format("PCM_SET_PARAMS of stream {} in state {}", id, to_string(s.state)));
  }
  const uint32_t features = le32toh(p.features);
  if (features != 0) {
    return refuse(SoundStatus::not_supp,
                  fmt::format("PCM_SET_PARAMS of stream {} with features {:#x} (none offered)", id,
                              features));
  }
  const auto format = from_virtio_format(p.format);
  const auto rate = from_virtio_rate(p.rate);
  SoundParams params;
  if (format) params.format = *format;
  if (rate) params.rate = *rate;
  params.channels = p.channels;
  if (!format || !rate || !s.caps.allows(params)) {
    return refuse(SoundStatus::not_supp,
                  fmt::format("PCM_SET_PARAMS of stream {}: format {}, rate {}, {} channels are "
                              "not what PCM_INFO offered",
                              id, p.format, p.rate, p.channels));
  }
  const uint32_t frame = params.frame_bytes();
  const uint32_t buffer = le32toh(p.buffer_bytes);
  const uint32_t period = le32toh(p.period_bytes);
  if (period == 0 || buffer == 0 || period % frame != 0 || buffer % frame != 0 || period > buffer ||
      buffer > kSoundMaxBufferBytes) {
    return refuse(SoundStatus::bad_msg,
                  fmt::format("PCM_SET_PARAMS of stream {}: buffer {} and period {} bytes (need "
                              "whole {}-byte frames, 0 < period <= buffer <= {})",
                              id, buffer, period, frame, kSoundMaxBufferBytes));
  }
  SoundControlReply reply;
  reply.action = SoundAction::set_params;
  reply.stream_id = id;
  reply.params = {params, buffer, period};
  return reply;
}

SoundControlReply SoundCard::transition(uint32_t code, uint32_t id) const {
  const char* name = request_name(code);
  if (id >= kSoundStreams) {
    return refuse(SoundStatus::bad_msg,
                  fmt::format("{} of stream {} (the device has {})", name, id, kSoundStreams));
  }
  const PcmState from = streams_[id].state;
  bool allowed = false;
  SoundAction action = SoundAction::none;
  switch (code) {
    case VIRTIO_SND_R_PCM_PREPARE:
      allowed =
          from == PcmState::params_set || from == PcmState::prepared || from == PcmState::released;
      action = SoundAction::prepare;
      break;
    case VIRTIO_SND_R_PCM_RELEASE:
      allowed = from == PcmState::prepared || from == PcmState::stopped;
      action = SoundAction::release;
      break;
    case VIRTIO_SND_R_PCM_START:
      allowed = from == PcmState::prepared || from == PcmState::stopped;
      action = SoundAction::start;
      break;
    default:  // STOP
      allowed = from == PcmState::started;
      action = SoundAction::stop;
      break;
  }
  if (!allowed || (action == SoundAction::prepare && !streams_[id].params)) {
    return refuse(SoundStatus::bad_msg,
                  fmt::format("{} of stream {} in state {}", name, id, to_string(from)));
  }
  SoundControlReply reply;
  reply.action = action;
  reply.stream_id = id;
  return reply;
}

void SoundCard::apply(const SoundControlReply& reply) {
  if (reply.status != SoundStatus::ok || reply.stream_id >= kSoundStreams) return;
  PcmStream& s = streams_[reply.stream_id];
  switch (reply.action) {
    case SoundAction::none:
      break;
    case SoundAction::set_params:
      s.params = reply.params;
      s.state = PcmState::params_set;
      break;
    case SoundAction::prepare:
      s.state = PcmState::prepared;
      break;
    case SoundAction::start:
      s.state = PcmState::started;
      break;
    case SoundAction::stop:
      s.state = PcmState::stopped;
      break;
    case SoundAction::release:
      s.state = PcmState::released;
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// I/O messages

ParsedSoundIo parse_sound_io(const DescriptorChain& chain, bool tx, const SoundCard& card) {
  using Kind = SoundIoError::Kind;
  if (chain.writable_bytes() < kSoundPcmStatusBytes) {
    return SoundIoError{Kind::no_status,
                        fmt::format("I/O message with {} device-writable bytes (needs {} for the "
                                    "status)",
                                    chain.writable_bytes(), kSoundPcmStatusBytes)};
  }
  uint8_t header[kSoundXferBytes];
  if (chain.readable_bytes() < kSoundXferBytes || !chain.read_at(0, header)) {
    return SoundIoError{Kind::short_header,
                        fmt::format("I/O message with {} device-readable bytes (needs {})",
                                    chain.readable_bytes(), kSoundXferBytes)};
  }
  const uint32_t id = le32(header, 0);
  if (id >= kSoundStreams) {
    return SoundIoError{
        Kind::bad_stream,
        fmt::format("I/O message for stream {} (the device has {})", id, kSoundStreams)};
  }
  const PcmStream& s = card.stream(id);
  if ((s.direction == SoundDirection::output) != tx) {
    return SoundIoError{Kind::wrong_direction,
                        fmt::format("I/O message for {} stream {} on the {} queue",
                                    tx ? "input" : "output", id, tx ? "tx" : "rx")};
  }
  if (!s.accepts_io() || !s.params) {
    return SoundIoError{Kind::not_running, fmt::format("I/O message for stream {} in state {}", id,
                                                       to_string(s.state))};
  }
  const uint64_t data =
      tx ? chain.readable_bytes() - kSoundXferBytes : chain.writable_bytes() - kSoundPcmStatusBytes;
  const uint64_t misplaced =
      tx ? chain.writable_bytes() - kSoundPcmStatusBytes : chain.readable_bytes() - kSoundXferBytes;
  if (misplaced != 0) {
    return SoundIoError{
        Kind::bad_layout,
        fmt::format("{} I/O message for stream {} has {} data bytes the {}", tx ? "tx" : "rx", id,
                    misplaced, tx ? "device may write" : "device may only read")};
  }
  const uint32_t frame = s.params->params.frame_bytes();
  if (data == 0 || data % frame != 0) {
    return SoundIoError{Kind::partial_frame,
                        fmt::format("I/O message for stream {} of {} bytes (needs whole {}-byte "
                                    "frames)",
                                    id, data, frame)};
  }
  if (data > s.params->buffer_bytes) {
    return SoundIoError{Kind::too_large,
                        fmt::format("I/O message for stream {} of {} bytes (its buffer is {})", id,
                                    data, s.params->buffer_bytes)};
  }
  return SoundIo{id, static_cast<uint32_t>(data)};
}

}  // namespace libvmm
