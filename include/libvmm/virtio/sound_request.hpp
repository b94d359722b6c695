// virtio-snd requests (virtIO 1.2 §5.14.6) and the PCM streams' state machine (§5.14.6.6.1),
// split from the device: the card a guest sees (jacks, streams, channel maps), control requests
// answered from it, and I/O transfer headers checked against it.
//
// Pure: no I/O, no logging, no clock. VirtioSound carries out what it returns (opening the
// backend at PREPARE, playing and capturing buffers); the fuzzers call it directly. The guest is
// untrusted: every id and count is checked, every length is overflow-safe, and a request
// refused leaves the stream in the state it was in.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "libvmm/backends/sound_backend.hpp"

namespace libvmm {

class DescriptorChain;

// Status codes (VIRTIO_SND_S_*).
enum class SoundStatus : uint32_t {
  ok = 0x8000,
  bad_msg = 0x8001,
  not_supp = 0x8002,
  io_err = 0x8003
};

// The card: two jacks (line out, microphone), stream 0 output and stream 1 input, and four
// channel maps (mono and stereo, each direction).
inline constexpr uint32_t kSoundJacks = 2;
inline constexpr uint32_t kSoundStreams = 2;
inline constexpr uint32_t kSoundChmaps = 4;
inline constexpr uint32_t kSoundOutputStream = 0;
inline constexpr uint32_t kSoundInputStream = 1;
// Sizes of the structures of the specification.
inline constexpr uint32_t kSoundHdrBytes = 4;         // virtio_snd_hdr
inline constexpr uint32_t kSoundXferBytes = 4;        // virtio_snd_pcm_xfer
inline constexpr uint32_t kSoundPcmStatusBytes = 8;   // virtio_snd_pcm_status
inline constexpr uint32_t kSoundJackInfoBytes = 24;   // virtio_snd_jack_info
inline constexpr uint32_t kSoundPcmInfoBytes = 32;    // virtio_snd_pcm_info
inline constexpr uint32_t kSoundChmapInfoBytes = 24;  // virtio_snd_chmap_info
inline constexpr uint32_t kSoundSetParamsBytes = 24;  // virtio_snd_pcm_set_params
// Bounds on what a guest may ask for: a buffer (SET_PARAMS' buffer_bytes, and one I/O message's
// data) of at most 4 MiB, and at most 1024 bytes per item of an INFO query.
inline constexpr uint32_t kSoundMaxBufferBytes = 4 * 1024 * 1024;
inline constexpr uint32_t kSoundMaxInfoSize = 1024;

// A stream's state (§5.14.6.6.1). `initial` is the state before the first SET_PARAMS.
enum class PcmState : uint8_t { initial, params_set, prepared, started, stopped, released };
const char* to_string(PcmState state);

struct PcmStreamParams {
  SoundParams params;
  uint32_t buffer_bytes = 0;
  uint32_t period_bytes = 0;
};

struct PcmStream {
  SoundDirection direction = SoundDirection::output;
  SoundCapabilities caps;
  PcmState state = PcmState::initial;
  std::optional<PcmStreamParams> params;  // from the last accepted SET_PARAMS
  // I/O messages are accepted from PREPARE until RELEASE.
  bool accepts_io() const {
    return state == PcmState::prepared || state == PcmState::started || state == PcmState::stopped;
  }
};

// What a control request asks the device to do, once the parser has accepted it.
enum class SoundAction : uint8_t { none, set_params, prepare, start, stop, release };

struct SoundControlReply {
  SoundStatus status = SoundStatus::ok;
  std::vector<uint8_t> payload;  // INFO items, written after the status header
  SoundAction action = SoundAction::none;
  uint32_t stream_id = 0;
  PcmStreamParams params{};  // set_params
  std::string error;         // what the driver got wrong (status != ok), for the log
};

// The card's streams and their states; answers control requests.
class SoundCard {
 public:
  // Each stream offers what the backend can take in its direction.
  SoundCard(const SoundCapabilities& output, const SoundCapabilities& input);

  // A control request: its device-readable bytes (at most the first 64 are looked at) and the
  // size of its device-writable part. Answers INFO queries; checks PCM requests against the
  // stream's state and capabilities. Changes nothing: the device calls apply() once it has
  // carried the action out.
  SoundControlReply control(std::span<const uint8_t> request, uint64_t writable_bytes) const;
  // Moves the stream of an accepted reply to its new state.
  void apply(const SoundControlReply& reply);
  // Every stream back to `initial` (device reset).
  void reset();

  const PcmStream& stream(uint32_t id) const { return streams_[id]; }

 private:
  SoundControlReply query(uint32_t code, std::span<const uint8_t> request,
                          uint64_t writable_bytes) const;
  SoundControlReply set_params(std::span<const uint8_t> request) const;
  SoundControlReply transition(uint32_t code, uint32_t stream_id) const;

  std::array<PcmStream, kSoundStreams> streams_;
};

// An I/O message (§5.14.6.8): virtio_snd_pcm_xfer, then the data (device-readable on the tx
// queue; device-writable on the rx queue, before the status), then virtio_snd_pcm_status.
struct SoundIo {
  uint32_t stream_id = 0;
  uint32_t data_bytes = 0;  // whole frames of the stream's format, at most its buffer_bytes
};
struct SoundIoError {
  enum class Kind {
    no_status,        // fewer than 8 device-writable bytes: no room for the status
    short_header,     // fewer than 4 device-readable bytes
    bad_stream,       // no such stream
    wrong_direction,  // an output stream's message on the rx queue, or the other way round
    not_running,      // the stream is not prepared, started or stopped
    partial_frame,    // data that is not a whole number of frames, or none
    too_large,        // more data than the stream's buffer_bytes
    bad_layout        // tx data in the writable part, or rx data in the readable part
  };
  Kind kind;
  std::string message;
};
using ParsedSoundIo = std::variant<SoundIo, SoundIoError>;

// `tx`: the message came on the tx queue (playback), else on the rx queue (capture).
ParsedSoundIo parse_sound_io(const DescriptorChain& chain, bool tx, const SoundCard& card);

}  // namespace libvmm
