// Where a sound device's audio goes on the host, and where captured audio comes from: `none`
// (plays into nothing, captures silence) and `wav:OUT[,in=IN]` (a RIFF/WAVE file of exactly what
// the guest played; capture from a WAV file, then silence).
//
// A backend sees whole frames in the format the guest chose (SoundParams); it does no pacing of
// its own: the device's clock (a timer on the event loop) decides when frames are played or
// captured, and hands them over then. Not thread-safe: the device calls it under its lock.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm {

// The sample formats a backend may take (little-endian; s24 is 24 bits in a 32-bit container,
// as ALSA's S24_LE and virtio-snd's S24).
enum class SoundFormat : uint8_t { u8, s16, s24, s32, float32 };
inline constexpr SoundFormat kAllSoundFormats[] = {
    SoundFormat::u8, SoundFormat::s16, SoundFormat::s24, SoundFormat::s32, SoundFormat::float32};
uint32_t sound_sample_bytes(SoundFormat format);
std::string_view to_string(SoundFormat format);  // "U8", "S16_LE", ...

// The rates every backend offers the guest (virtio-snd's rates from 8000 to 192000).
inline constexpr uint32_t kSoundRates[] = {8000,  11025, 16000, 22050, 32000,  44100,
                                           48000, 64000, 88200, 96000, 176400, 192000};
inline constexpr uint32_t kSoundMaxChannels = 2;

struct SoundParams {
  SoundFormat format = SoundFormat::s16;
  uint32_t rate = 48000;
  uint32_t channels = 2;
  uint32_t frame_bytes() const { return sound_sample_bytes(format) * channels; }
  bool operator==(const SoundParams&) const = default;
};

enum class SoundDirection : uint8_t { output, input };

// What one direction of a backend can take: what the device offers in PCM_INFO.
struct SoundCapabilities {
  std::vector<SoundFormat> formats;
  std::vector<uint32_t> rates;
  uint32_t channels_min = 1;
  uint32_t channels_max = kSoundMaxChannels;
  bool allows(const SoundParams& params) const;
};

class SoundBackend {
 public:
  virtual ~SoundBackend() = default;

  virtual std::string describe() const = 0;  // "wav out.wav", for vmm check and the log
  virtual SoundCapabilities capabilities(SoundDirection direction) const = 0;

  // The stream of `direction` is prepared with `params` (within capabilities()). Empty, or
  // what the host refused (the guest then gets VIRTIO_SND_S_IO_ERR).
  virtual std::string open(SoundDirection direction, const SoundParams& params) = 0;
  // The stream is released (or the device reset): nothing more until the next open().
  virtual void close(SoundDirection direction) = 0;
  // Frames the device's clock says have been played now (whole frames of the open format).
  virtual void play(std::span<const uint8_t> frames) = 0;
  // Fills `frames` with what was captured now (whole frames of the open format).
  virtual void capture(std::span<uint8_t> frames) = 0;
  // Frames the guest failed to provide in time (playback) or had no buffer for (capture).
  virtual void xrun(SoundDirection direction, uint64_t frames) {
    static_cast<void>(direction);
    static_cast<void>(frames);
  }
  // The stream of `direction` starts (PCM_START) or stops (PCM_STOP).
  virtual void start(SoundDirection direction) { static_cast<void>(direction); }
  virtual void stop(SoundDirection direction) { static_cast<void>(direction); }

  // A backend with its own clock (ALSA): how many frames it can take (playback) or has
  // captured now. nullopt: the device's clock paces the stream (none, wav).
  virtual std::optional<uint64_t> frames_ready(SoundDirection direction) {
    static_cast<void>(direction);
    return std::nullopt;
  }
  // Frames between the device and the speaker (or the microphone and the device), for the
  // latency the device reports.
  virtual uint64_t delay_frames(SoundDirection direction) {
    static_cast<void>(direction);
    return 0;
  }
  // Underruns (playback) or overruns (capture) the backend's own clock saw.
  virtual uint64_t xruns(SoundDirection direction) const {
    static_cast<void>(direction);
    return 0;
  }
};

// Plays into nothing, captures silence, takes every format and rate.
class NullSoundBackend final : public SoundBackend {
 public:
  std::string describe() const override { return "none"; }
  SoundCapabilities capabilities(SoundDirection direction) const override;
  std::string open(SoundDirection, const SoundParams& params) override;
  void close(SoundDirection) override {}
  void play(std::span<const uint8_t>) override {}
  void capture(std::span<uint8_t> frames) override;

 private:
  SoundParams input_{};
};

// The format of a WAV file's audio ("fmt " chunk), and where its samples are.
struct WavInfo {
  SoundParams params;
  uint64_t data_offset = 0;
  uint64_t data_bytes = 0;  // whole frames only
};
// Reads a RIFF/WAVE header from `fd`: PCM (U8, S16, S32, 24 bits in 32), IEEE float (32) or
// WAVE_FORMAT_EXTENSIBLE of those, 1-2 channels, a rate of kSoundRates. Returns why not, or
// fills `info`.
std::string read_wav_header(int fd, WavInfo& info);
// The 44-byte (or, for S24, 68-byte extensible) header of a WAV file of `data_bytes` bytes.
std::vector<uint8_t> wav_header(const SoundParams& params, uint64_t data_bytes);

// wav:OUT[,in=IN]: playback appended to OUT, its header's sizes written on close and at
// destruction (a stop by signal ends the run through destructors: the file stays valid).
// OUT takes the format of the first stream that plays into it; a later stream in another
// format is not recorded (one warning). Capture reads IN, whose format is the only one the
// input stream offers, then gives silence; without IN, capture is silence in any format.
class WavSoundBackend final : public SoundBackend {
 public:
  // Throws UserError ("cannot create out.wav: No such file or directory", "in.wav is not a PCM
  // WAV file: ...") for files the user named wrongly.
  WavSoundBackend(const std::string& out_path, const std::string& in_path);
  ~WavSoundBackend() override;

  std::string describe() const override;
  SoundCapabilities capabilities(SoundDirection direction) const override;
  std::string open(SoundDirection direction, const SoundParams& params) override;
  void close(SoundDirection direction) override;
  void play(std::span<const uint8_t> frames) override;
  void capture(std::span<uint8_t> frames) override;

  uint64_t bytes_written() const { return data_bytes_; }
  // Writes the header for what has been played so far (also done on close and destruction).
  void finalize();

 private:
  std::string out_path_;
  std::string in_path_;
  UniqueFd out_;
  UniqueFd in_;
  std::optional<SoundParams> out_params_;  // fixed by the first stream that plays
  std::optional<SoundParams> playing_;     // the open output stream's params
  bool warned_format_ = false;
  bool warned_write_ = false;
  uint64_t header_bytes_ = 0;
  uint64_t data_bytes_ = 0;
  WavInfo in_info_{};
  uint64_t in_read_ = 0;  // bytes of IN's data consumed
  std::optional<SoundParams> capturing_;
};

// alsa[:PCM]: host ALSA through libasound2 (PCM "default" unless named), opened at once,
// non-blocking, through ALSA's plug layer (format and rate conversion), paced by ALSA's clock:
// a playback message is returned once ALSA has taken its frames (its latency includes ALSA's
// delay). Throws UserError when the PCM cannot be opened for playback; a PCM that cannot
// capture gives silence. Throws UserError in a vmm built without libasound2-dev.
std::unique_ptr<SoundBackend> open_alsa_sound_backend(const std::string& pcm);

// Parses a --sound / <virtio_sound backend=...> value: "none", "alsa[:PCM]", "wav:PATH" (with
// `in`, the in= option, or empty). Empty when valid; otherwise the problem as a phrase.
std::string check_sound_backend_spec(std::string_view backend, std::string_view in);
// Opens it; throws UserError prefixed with `label` ("--sound wav:x/y.wav: cannot create ...").
// An alsa backend opened before by open_sound_backend_early() for the same value is returned
// instead (each once, in the order opened).
std::unique_ptr<SoundBackend> open_sound_backend(std::string_view backend, std::string_view in,
                                                 std::string_view label);
// For a jail: opens an alsa backend now, as root before the jail is built, so that ALSA reads
// its configuration and opens its device nodes here; the process the jail forks inherits the
// open PCMs and open_sound_backend() hands them to the device. Other backends open their files
// inside the jail: nothing to do. Returns the descriptors ALSA opened (for the jail to keep).
std::vector<int> open_sound_backend_early(std::string_view backend, std::string_view in,
                                          std::string_view label);

}  // namespace libvmm
