#include "libvmm/backends/sound_backend.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

constexpr uint16_t kWavPcm = 1;
constexpr uint16_t kWavFloat = 3;
constexpr uint16_t kWavExtensible = 0xfffe;
constexpr uint64_t kWavMaxData = 0xffffffffull - 68;  // the RIFF size is 32 bits

void put16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v));
  out.push_back(static_cast<uint8_t>(v >> 8));
}
void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_tag(std::vector<uint8_t>& out, const char* tag) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(tag[i]));
}
uint16_t get16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
uint32_t get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

bool pread_all(int fd, uint8_t* buf, size_t len, uint64_t offset) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pread(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool pwrite_all(int fd, const uint8_t* buf, size_t len, uint64_t offset) {
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pwrite(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

uint8_t silence_byte(SoundFormat format) {
  return format == SoundFormat::u8 ? 0x80 : 0;
}

SoundCapabilities everything() {
  SoundCapabilities caps;
  caps.formats.assign(std::begin(kAllSoundFormats), std::end(kAllSoundFormats));
  caps.rates.assign(std::begin(kSoundRates), std::end(kSoundRates));
  return caps;
}

}  // namespace

uint32_t sound_sample_bytes(SoundFormat format) {
  switch (format) {
    case SoundFormat::u8:
      return 1;
    case SoundFormat::s16:
      return 2;
    case SoundFormat::s24:
    case SoundFormat::s32:
    case SoundFormat::float32:
      return 4;
  }
  return 1;
}

std::string_view to_string(SoundFormat format) {
  switch (format) {
    case SoundFormat::u8:
      return "U8";
    case SoundFormat::s16:
      return "S16_LE";
    case SoundFormat::s24:
      return "S24_LE";
    case SoundFormat::s32:
      return "S32_LE";
    case SoundFormat::float32:
      return "FLOAT_LE";
  }
  return "?";
}

bool SoundCapabilities::allows(const SoundParams& params) const {
  return std::find(formats.begin(), formats.end(), params.format) != formats.end() &&
         std::find(rates.begin(), rates.end(), params.rate) != rates.end() &&
         params.channels >= channels_min && params.channels <= channels_max;
}

// ---------------------------------------------------------------------------------------------
// none

SoundCapabilities NullSoundBackend::capabilities(SoundDirection) const {
  return everything();
}

std::string NullSoundBackend::open(SoundDirection direction, const SoundParams& params) {
  if (direction == SoundDirection::input) input_ = params;
  return {};
}

void NullSoundBackend::capture(std::span<uint8_t> frames) {
  std::fill(frames.begin(), frames.end(), silence_byte(input_.format));
}

// ---------------------------------------------------------------------------------------------
// WAV files

std::vector<uint8_t> wav_header(const SoundParams& params, uint64_t data_bytes) {
  const bool extensible = params.format == SoundFormat::s24;
  const uint32_t sample = sound_sample_bytes(params.format);
  const uint32_t fmt_size = extensible ? 40 : 16;
  const uint32_t data = static_cast<uint32_t>(std::min(data_bytes, kWavMaxData));
  std::vector<uint8_t> out;
  out.reserve(68);
  put_tag(out, "RIFF");
  put32(out, 4 + 8 + fmt_size + 8 + data);
  put_tag(out, "WAVE");
  put_tag(out, "fmt ");
  put32(out, fmt_size);
  const uint16_t tag = params.format == SoundFormat::float32 ? kWavFloat : kWavPcm;
  put16(out, extensible ? kWavExtensible : tag);
  put16(out, static_cast<uint16_t>(params.channels));
  put32(out, params.rate);
  put32(out, params.rate * params.frame_bytes());
  put16(out, static_cast<uint16_t>(params.frame_bytes()));
  put16(out, static_cast<uint16_t>(sample * 8));
  if (extensible) {
    put16(out, 22);                                  // cbSize
    put16(out, 24);                                  // valid bits per sample
    put32(out, params.channels == 1 ? 0x4u : 0x3u);  // FC, or FL|FR
    // KSDATAFORMAT_SUBTYPE_PCM: {00000001-0000-0010-8000-00aa00389b71}
    static constexpr std::array<uint8_t, 16> kPcmGuid = {0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
                                                         0x10, 0x00, 0x80, 0x00, 0x00, 0xaa,
                                                         0x00, 0x38, 0x9b, 0x71};
    for (uint8_t b : kPcmGuid) out.push_back(b);
  }
  put_tag(out, "data");
  put32(out, data);
  return out;
}

std::string read_wav_header(int fd, WavInfo& info) {
  uint8_t riff[12];
  if (!pread_all(fd, riff, sizeof riff, 0)) return "too short for a RIFF/WAVE header";
  if (std::memcmp(riff, "RIFF", 4) != 0 || std::memcmp(riff + 8, "WAVE", 4) != 0) {
    return "not a RIFF/WAVE file";
  }
  std::optional<SoundParams> params;
  uint64_t offset = 12;
  for (int chunks = 0; chunks < 64; ++chunks) {
    uint8_t chunk[8];
    if (!pread_all(fd, chunk, sizeof chunk, offset)) break;
    const uint32_t size = get32(chunk + 4);
    const uint64_t body = offset + 8;
    if (std::memcmp(chunk, "fmt ", 4) == 0) {
      if (size < 16) return "its fmt chunk is shorter than 16 bytes";
      uint8_t f[40] = {};
      if (!pread_all(fd, f, std::min<uint32_t>(size, 40), body)) return "its fmt chunk is cut";
      uint16_t tag = get16(f);
      const uint16_t channels = get16(f + 2);
      const uint32_t rate = get32(f + 4);
      const uint16_t block = get16(f + 12);
      const uint16_t bits = get16(f + 14);
      uint16_t valid_bits = bits;
      if (tag == kWavExtensible) {
        if (size < 40) return "its extensible fmt chunk is shorter than 40 bytes";
        valid_bits = get16(f + 18);
        tag = get16(f + 24);  // the sub-format GUID's first field
      }
      SoundParams p;
      if (tag == kWavPcm && bits == 8 && valid_bits == 8) {
        p.format = SoundFormat::u8;
      } else if (tag == kWavPcm && bits == 16 && valid_bits == 16) {
        p.format = SoundFormat::s16;
      } else if (tag == kWavPcm && bits == 32 && valid_bits == 24) {
        p.format = SoundFormat::s24;
      } else if (tag == kWavPcm && bits == 32 && valid_bits == 32) {
        p.format = SoundFormat::s32;
      } else if (tag == kWavFloat && bits == 32) {
        p.format = SoundFormat::float32;
      } else {
        return fmt::format(
            "its samples (format tag {}, {} bits) are not PCM U8, S16_LE, S24_LE (in 32 bits), "
            "S32_LE or FLOAT_LE",
            tag, bits);
      }
      if (channels < 1 || channels > kSoundMaxChannels) {
        return fmt::format("it has {} channels (1 or 2 are supported)", channels);
      }
      p.channels = channels;
      if (std::find(std::begin(kSoundRates), std::end(kSoundRates), rate) ==
          std::end(kSoundRates)) {
        return fmt::format("its rate {} Hz is not one of 8000-192000 virtio-snd offers", rate);
      }
      p.rate = rate;
      if (block != p.frame_bytes()) {
        return fmt::format("its block align {} is not {} bytes per frame", block, p.frame_bytes());
      }
      params = p;
    } else if (std::memcmp(chunk, "data", 4) == 0) {
      if (!params) return "its data chunk comes before the fmt chunk";
      const off_t end = ::lseek(fd, 0, SEEK_END);
      const uint64_t available = end > static_cast<off_t>(body) ? end - body : 0;
      uint64_t bytes = std::min<uint64_t>(size, available);
      bytes -= bytes % params->frame_bytes();
      info.params = *params;
      info.data_offset = body;
      info.data_bytes = bytes;
      return {};
    }
    offset = body + size + (size & 1);
  }
  return params ? "it has no data chunk" : "it has no fmt chunk";
}

WavSoundBackend::WavSoundBackend(const std::string& out_path, const std::string& in_path)
    : out_path_(out_path), in_path_(in_path) {
  out_.reset(::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out_) throw UserError(fmt::format("cannot create {}: {}", out_path, std::strerror(errno)));
  if (!in_path.empty()) {
    in_.reset(::open(in_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in_) throw UserError(fmt::format("cannot open {}: {}", in_path, std::strerror(errno)));
    if (std::string why = read_wav_header(in_.get(), in_info_); !why.empty()) {
      throw UserError(fmt::format("{} is not a PCM WAV file: {}", in_path, why));
    }
  }
}

WavSoundBackend::~WavSoundBackend() {
  finalize();
}

std::string WavSoundBackend::describe() const {
  if (in_path_.empty()) return fmt::format("wav {}", out_path_);
  return fmt::format("wav {} (capture from {})", out_path_, in_path_);
}

SoundCapabilities WavSoundBackend::capabilities(SoundDirection direction) const {
  if (direction == SoundDirection::input && in_) {
    SoundCapabilities caps;
    caps.formats = {in_info_.params.format};
    caps.rates = {in_info_.params.rate};
    caps.channels_min = caps.channels_max = in_info_.params.channels;
    return caps;
  }
  return everything();
}

std::string WavSoundBackend::open(SoundDirection direction, const SoundParams& params) {
  if (direction == SoundDirection::input) {
    capturing_ = params;
    return {};
  }
  playing_ = params;
  return {};
}

void WavSoundBackend::close(SoundDirection direction) {
  if (direction == SoundDirection::input) {
    capturing_.reset();
    return;
  }
  playing_.reset();
  finalize();
}

void WavSoundBackend::play(std::span<const uint8_t> frames) {
  if (!playing_ || frames.empty() || !out_) return;
  if (!out_params_) {
    out_params_ = *playing_;
    header_bytes_ = wav_header(*out_params_, 0).size();
    finalize();
  }
  if (*out_params_ != *playing_) {
    if (!warned_format_) {
      log::warn("virtio-snd: {} records {} {} Hz {} ch; a stream in {} {} Hz {} ch is not recorded",
                out_path_, to_string(out_params_->format), out_params_->rate, out_params_->channels,
                to_string(playing_->format), playing_->rate, playing_->channels);
      warned_format_ = true;
    }
    return;
  }
  size_t len = frames.size();
  if (data_bytes_ + len > kWavMaxData) {
    len = static_cast<size_t>(kWavMaxData - data_bytes_);
    len -= len % out_params_->frame_bytes();
  }
  if (len == 0 || !pwrite_all(out_.get(), frames.data(), len, header_bytes_ + data_bytes_)) {
    if (!warned_write_) {
      log::warn("virtio-snd: cannot write {}: {}", out_path_,
                len == 0 ? "the WAV format's 4 GiB limit is reached" : std::strerror(errno));
      warned_write_ = true;
    }
    return;
  }
  data_bytes_ += len;
}

void WavSoundBackend::capture(std::span<uint8_t> frames) {
  const SoundFormat format = capturing_ ? capturing_->format : SoundFormat::s16;
  size_t done = 0;
  if (in_ && capturing_ && *capturing_ == in_info_.params && in_read_ < in_info_.data_bytes) {
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(frames.size(), in_info_.data_bytes - in_read_));
    if (pread_all(in_.get(), frames.data(), n, in_info_.data_offset + in_read_)) {
      done = n;
      in_read_ += n;
    } else {
      in_read_ = in_info_.data_bytes;  // a file cut short (or an I/O error): silence from now
    }
  }
  std::fill(frames.begin() + static_cast<ptrdiff_t>(done), frames.end(), silence_byte(format));
}

void WavSoundBackend::finalize() {
  if (!out_ || !out_params_) return;
  const std::vector<uint8_t> header = wav_header(*out_params_, data_bytes_);
  if (!pwrite_all(out_.get(), header.data(), header.size(), 0) && !warned_write_) {
    log::warn("virtio-snd: cannot write the header of {}: {}", out_path_, std::strerror(errno));
    warned_write_ = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Specs

std::string check_sound_backend_spec(std::string_view backend, std::string_view in) {
  if (backend == "none") {
    if (!in.empty()) return "in= needs the wav backend (wav:OUT.wav,in=IN.wav)";
    return {};
  }
  if (backend.starts_with("wav:")) {
    if (backend.size() == 4) return "wav: needs an output file (wav:OUT.wav)";
    return {};
  }
  if (backend == "wav") return "wav needs an output file (wav:OUT.wav)";
  if (backend == "alsa" || backend.starts_with("alsa:")) {
    if (!in.empty()) return "in= needs the wav backend (wav:OUT.wav,in=IN.wav)";
    if (backend == "alsa:") return "alsa: needs a PCM name (alsa:default, alsa:hw:Loopback)";
    return {};
  }
  return fmt::format(
      "unknown sound backend '{}' (expected none, alsa[:PCM] or wav:OUT.wav[,in=IN.wav])", backend);
}

namespace {
// Backends opened by open_sound_backend_early(), by backend value, until the devices take
// them: one each (two devices on "alsa" have two PCMs opened before the jail).
std::mutex g_early_mutex;
std::map<std::string, std::vector<std::unique_ptr<SoundBackend>>, std::less<>> g_early;

std::unique_ptr<SoundBackend> create_sound_backend(std::string_view backend, std::string_view in,
                                                   std::string_view label);
}  // namespace

// This process's open descriptors.
std::vector<int> open_fds() {
  std::vector<int> fds;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    fds.push_back(std::atoi(entry.path().filename().c_str()));
  }
  return fds;
}

std::vector<int> open_sound_backend_early(std::string_view backend, std::string_view in,
                                          std::string_view label) {
  if (!backend.starts_with("alsa")) return {};
  if (std::string why = check_sound_backend_spec(backend, in); !why.empty()) {
    throw UserError(fmt::format("{}: {}", label, why));
  }
  const std::vector<int> before = open_fds();
  auto opened = create_sound_backend(backend, in, label);  // a new one, not another's
  std::vector<int> fds;
  for (int fd : open_fds()) {
    if (std::find(before.begin(), before.end(), fd) == before.end()) fds.push_back(fd);
  }
  std::lock_guard lock(g_early_mutex);
  g_early[std::string(backend)].push_back(std::move(opened));
  return fds;
}

std::unique_ptr<SoundBackend> open_sound_backend(std::string_view backend, std::string_view in,
                                                 std::string_view label) {
  if (std::string why = check_sound_backend_spec(backend, in); !why.empty()) {
    throw UserError(fmt::format("{}: {}", label, why));
  }
  {
    std::lock_guard lock(g_early_mutex);
    if (auto it = g_early.find(backend); it != g_early.end() && !it->second.empty()) {
      std::unique_ptr<SoundBackend> early = std::move(it->second.front());
      it->second.erase(it->second.begin());
      return early;
    }
  }
  return create_sound_backend(backend, in, label);
}

namespace {

std::unique_ptr<SoundBackend> create_sound_backend(std::string_view backend, std::string_view in,
                                                   std::string_view label) {
  if (backend == "none") return std::make_unique<NullSoundBackend>();
  try {
    if (backend.starts_with("alsa")) {
      return open_alsa_sound_backend(backend == "alsa" ? "default"
                                                       : std::string(backend.substr(5)));
    }
    return std::make_unique<WavSoundBackend>(std::string(backend.substr(4)), std::string(in));
  } catch (const UserError& e) {
    throw UserError(fmt::format("{}: {}", label, e.what()));
  }
}

}  // namespace

#ifndef LIBVMM_HAVE_ALSA
std::unique_ptr<SoundBackend> open_alsa_sound_backend(const std::string&) {
  throw UserError("this vmm was built without ALSA (install libasound2-dev and rebuild)");
}
#endif

}  // namespace libvmm
