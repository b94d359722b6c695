// The alsa[:PCM] sound backend: host ALSA through libasound2, non-blocking, with format and
// rate conversion by ALSA's plug layer. Paced by ALSA's own clock: the device plays as many
// frames as the PCM has room for (captures as many as it holds) at each tick.
#include <alsa/asoundlib.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "libvmm/backends/sound_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/core/seccomp.hpp"

namespace libvmm {
namespace {

// Latency asked of ALSA for its buffer (snd_pcm_set_params): the device holds the rest.
constexpr unsigned kAlsaLatencyUs = 100'000;

snd_pcm_format_t alsa_format(SoundFormat format) {
  switch (format) {
    case SoundFormat::u8:
      return SND_PCM_FORMAT_U8;
    case SoundFormat::s16:
      return SND_PCM_FORMAT_S16_LE;
    case SoundFormat::s24:
      return SND_PCM_FORMAT_S24_LE;
    case SoundFormat::s32:
      return SND_PCM_FORMAT_S32_LE;
    case SoundFormat::float32:
      return SND_PCM_FORMAT_FLOAT_LE;
  }
  return SND_PCM_FORMAT_S16_LE;
}

// The kernel's character-device major of every ALSA node (/dev/snd/*: SND_MAJOR).
constexpr unsigned kAlsaMajor = 116;

// This process's open descriptors of ALSA device nodes.
std::vector<int> alsa_device_fds() {
  std::vector<int> fds;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const int fd = std::atoi(entry.path().filename().c_str());
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && ::major(st.st_rdev) == kAlsaMajor) {
      fds.push_back(fd);
    }
  }
  return fds;
}

// ALSA prints its own errors to stderr; ours say which PCM.
void quiet_alsa(const char*, int, const char*, int, const char*, ...) {}

class AlsaSoundBackend final : public SoundBackend {
 public:
  explicit AlsaSoundBackend(std::string name) : name_(std::move(name)) {
    snd_lib_error_set_handler(quiet_alsa);
    // Opened now, before the seccomp filters load: ALSA reads its configuration and opens
    // device nodes here; later it only makes ioctls on them. "plug:" converts formats and
    // rates the device cannot take.
    const std::string plug = name_.starts_with("plug:") ? name_ : "plug:'" + name_ + "'";
    const std::vector<int> before = alsa_device_fds();
    for (SoundDirection d : {SoundDirection::output, SoundDirection::input}) {
      Stream& s = stream(d);
      const int err = snd_pcm_open(
          &s.pcm, plug.c_str(),
          d == SoundDirection::output ? SND_PCM_STREAM_PLAYBACK : SND_PCM_STREAM_CAPTURE,
          SND_PCM_NONBLOCK);
      if (err < 0) {
        s.pcm = nullptr;
        if (d == SoundDirection::output) {
          close_all();
          throw UserError(fmt::format("no ALSA PCM '{}' to play to: {}", name_, snd_strerror(err)));
        }
        log::warn("virtio-snd: ALSA PCM '{}' cannot capture ({}): capture is silence", name_,
                  snd_strerror(err));
      }
    }
    // The seccomp filters allow ALSA's ioctls on exactly the device nodes these PCMs opened.
    for (int fd : alsa_device_fds()) {
      if (std::find(before.begin(), before.end(), fd) != before.end()) continue;
      seccomp_allow_sound_ioctls(fd);
      device_fds_.push_back(fd);
    }
  }
  ~AlsaSoundBackend() override { close_all(); }

  std::string describe() const override { return fmt::format("alsa {}", name_); }
  SoundCapabilities capabilities(SoundDirection) const override {
    SoundCapabilities caps;
    caps.formats.assign(std::begin(kAllSoundFormats), std::end(kAllSoundFormats));
    caps.rates.assign(std::begin(kSoundRates), std::end(kSoundRates));
    return caps;
  }

  std::string open(SoundDirection direction, const SoundParams& params) override {
    Stream& s = stream(direction);
    s.params = params;
    s.open = false;
    if (s.pcm == nullptr) {
      s.open = true;  // capture without a PCM: silence, paced by the device's clock
      return {};
    }
    snd_pcm_drop(s.pcm);  // a stream still playing out the last STOP's frames, too
    s.failed = false;
    s.playing_out = false;
    const int err =
        snd_pcm_set_params(s.pcm, alsa_format(params.format), SND_PCM_ACCESS_RW_INTERLEAVED,
                           params.channels, params.rate, 1, kAlsaLatencyUs);
    if (err < 0) return snd_strerror(err);
    s.open = true;
    return {};
  }
  void close(SoundDirection direction) override {
    Stream& s = stream(direction);
    // Playback running on since its STOP plays to its end: the guest was told those frames
    // were played. The next open() or the backend's end drops what is left.
    if (s.pcm != nullptr && s.open && !s.playing_out) snd_pcm_drop(s.pcm);
    s.open = false;
  }
  void start(SoundDirection direction) override {
    Stream& s = stream(direction);
    if (s.pcm == nullptr || !s.open) return;
    s.playing_out = false;
    if (snd_pcm_state(s.pcm) != SND_PCM_STATE_PREPARED) {
      snd_pcm_drop(s.pcm);  // what a STOP left playing gives way to the new frames
      snd_pcm_prepare(s.pcm);
    }
    if (direction == SoundDirection::input) snd_pcm_start(s.pcm);
  }
  void stop(SoundDirection direction) override {
    Stream& s = stream(direction);
    if (s.pcm == nullptr || !s.open) return;
    if (direction == SoundDirection::output && !s.failed) {
      // The frames ALSA holds were handed back to the guest as played: they play out, and the
      // PCM stops at their end (an underrun nobody counts: the device no longer asks). Not
      // snd_pcm_drain(): through some plugins (rate conversion) it waits, even non-blocking.
      // Fewer frames than the start threshold (a whole buffer: the cushion against the
      // loop's stalls) never started: a sound shorter than that is started by hand.
      const snd_pcm_state_t state = snd_pcm_state(s.pcm);
      snd_pcm_sframes_t held = 0;
      if (state == SND_PCM_STATE_RUNNING ||
          (state == SND_PCM_STATE_PREPARED && snd_pcm_delay(s.pcm, &held) == 0 && held > 0 &&
           snd_pcm_start(s.pcm) == 0)) {
        s.playing_out = true;
        return;
      }
    }
    snd_pcm_drop(s.pcm);
    snd_pcm_prepare(s.pcm);
  }

  std::optional<uint64_t> frames_ready(SoundDirection direction) override {
    Stream& s = stream(direction);
    if (s.pcm == nullptr || s.failed) return std::nullopt;  // the device's clock
    if (!s.open) return 0;
    snd_pcm_sframes_t n = snd_pcm_avail(s.pcm);
    if (n < 0) {
      const int err = static_cast<int>(n);
      if (!recover(s, direction, err)) return failed(s, err);
      n = snd_pcm_avail(s.pcm);
      if (n == -ESTRPIPE || n == -EAGAIN || n == -EPIPE) return 0;  // resuming: next tick
      if (n < 0) return failed(s, static_cast<int>(n));
    }
    return static_cast<uint64_t>(n);
  }
  uint64_t delay_frames(SoundDirection direction) override {
    Stream& s = stream(direction);
    snd_pcm_sframes_t delay = 0;
    if (s.pcm == nullptr || !s.open || snd_pcm_delay(s.pcm, &delay) < 0 || delay < 0) return 0;
    return static_cast<uint64_t>(delay);
  }
  uint64_t xruns(SoundDirection direction) const override {
    return direction == SoundDirection::output ? output_.xruns : input_.xruns;
  }

  void play(std::span<const uint8_t> frames) override {
    Stream& s = output_;
    if (s.pcm == nullptr || !s.open || s.failed) return;
    const uint32_t frame = s.params.frame_bytes();
    snd_pcm_uframes_t left = frames.size() / frame;
    const uint8_t* p = frames.data();
    for (int tries = 0; left > 0 && tries < 2; ++tries) {
      const snd_pcm_sframes_t n = snd_pcm_writei(s.pcm, p, left);
      if (n < 0) {
        if (n == -EAGAIN) break;  // no room: what is left is dropped
        if (!recover(s, SoundDirection::output, static_cast<int>(n))) {
          failed(s, static_cast<int>(n));
          break;
        }
        // Still resuming: the next tick writes.
        if (n == -ESTRPIPE && snd_pcm_state(s.pcm) == SND_PCM_STATE_SUSPENDED) break;
        continue;
      }
      left -= static_cast<snd_pcm_uframes_t>(n);
      p += static_cast<size_t>(n) * frame;
    }
  }
  void capture(std::span<uint8_t> frames) override {
    Stream& s = input_;
    const uint8_t silence = s.params.format == SoundFormat::u8 ? 0x80 : 0;
    size_t done = 0;
    if (s.pcm != nullptr && s.open && !s.failed) {
      const uint32_t frame = s.params.frame_bytes();
      const snd_pcm_sframes_t n = snd_pcm_readi(s.pcm, frames.data(), frames.size() / frame);
      if (n > 0) {
        done = static_cast<size_t>(n) * frame;
      } else if (n < 0 && n != -EAGAIN && !recover(s, SoundDirection::input, static_cast<int>(n))) {
        failed(s, static_cast<int>(n));
      }
    }
    std::fill(frames.begin() + static_cast<ptrdiff_t>(done), frames.end(), silence);
  }

 private:
  struct Stream {
    snd_pcm_t* pcm = nullptr;
    SoundParams params{};
    bool open = false;
    bool failed = false;       // an error recovery could not mend, until the next open()
    bool playing_out = false;  // playback a STOP left running to play what it holds
    uint64_t xruns = 0;
  };
  Stream& stream(SoundDirection d) { return d == SoundDirection::output ? output_ : input_; }

  // Mends an xrun or a suspend without blocking (snd_pcm_recover() would wait in a loop for a
  // suspended device to resume, on the event loop). False if the stream cannot go on.
  bool recover(Stream& s, SoundDirection direction, int err) {
    if (err == -EPIPE) ++s.xruns;  // ALSA's underrun (playback) or overrun (capture)
    int r = 0;
    if (err == -ESTRPIPE) {
      r = snd_pcm_resume(s.pcm);
      if (r == -EAGAIN) return true;          // still resuming: looked at again at the next tick
      if (r < 0) r = snd_pcm_prepare(s.pcm);  // the device cannot resume: start it afresh
    } else if (err == -EPIPE || err == -EINTR) {
      r = snd_pcm_prepare(s.pcm);
    } else {
      r = err;
    }
    if (r < 0) return false;
    if (direction == SoundDirection::input) snd_pcm_start(s.pcm);
    return true;
  }
  // The PCM is gone (unplugged, its server lost): the stream runs on the device's clock, its
  // output dropped and its input silence, so the guest's buffers keep coming back, until the
  // next PCM_PREPARE opens it again (and says IO_ERR if it cannot).
  std::optional<uint64_t> failed(Stream& s, int err) {
    s.failed = true;
    // Rate-limited: a guest may PREPARE and START again and again on a PCM that is gone.
    pcm_errors_.warn("virtio-snd", fmt::format("ALSA PCM '{}' failed ({}): the stream goes on "
                                               "without it",
                                               name_, snd_strerror(err)));
    return std::nullopt;
  }
  void close_all() {
    for (Stream* s : {&output_, &input_}) {
      if (s->pcm != nullptr) snd_pcm_close(s->pcm);
      s->pcm = nullptr;
    }
    for (int fd : device_fds_) seccomp_forget_sound_ioctls(fd);
    device_fds_.clear();
  }

  std::string name_;
  std::vector<int> device_fds_;  // the ALSA device nodes the PCMs opened
  Stream output_;
  Stream input_;
  log::RateLimited pcm_errors_{"ALSA errors"};
};

}  // namespace

std::unique_ptr<SoundBackend> open_alsa_sound_backend(const std::string& pcm) {
  return std::make_unique<AlsaSoundBackend>(pcm);
}

}  // namespace libvmm
