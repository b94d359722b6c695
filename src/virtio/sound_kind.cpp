// virtio_sound in the device registry: <virtio_sound backend="wav:out.wav" in="in.wav"/>,
// --sound none | alsa[:PCM] | wav:OUT.wav[,in=IN.wav] (a doubled comma in the flag is a comma:
// --sound alsa:hw:0,,0).
#include <fmt/format.h>

#include <filesystem>

#include "libvmm/backends/sound_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/sound.hpp"

namespace libvmm {
namespace {

class SoundKind final : public VirtioDeviceKind {
 public:
  std::string_view element() const override { return "virtio_sound"; }
  std::string_view flag() const override { return "--sound"; }
  std::string_view help() const override {
    return "virtIO sound card (virtio-snd) backend: none, alsa[:PCM] or wav:OUT.wav[,in=IN.wav] "
           "(a comma in a name is doubled: alsa:hw:0,,0)";
  }
  std::string_view positional() const override { return "backend"; }
  std::vector<AttributeRule> attributes() const override {
    // In a .system file, wav:OUT.wav's path is relative to the file's folder, like `in`.
    return {{"backend", true, false, "backend", "wav:"}, {"in", false, true, "in=IN.wav"}};
  }
  // One card with an output and an input stream; a second would play into the same host.
  size_t max_per_vm() const override { return 1; }

  void check(const DeviceSpec& spec, const HostFiles& files,
             std::vector<std::string>& problems) const override {
    const std::string backend = spec.value_or("backend", "");
    const std::string in = spec.value_or("in", "");
    if (std::string why = check_sound_backend_spec(backend, in); !why.empty()) {
      problems.push_back(std::move(why));
      return;
    }
    if (backend.starts_with("wav:")) {
      const std::filesystem::path out(backend.substr(4));
      const std::filesystem::path folder = out.parent_path().empty() ? "." : out.parent_path();
      std::error_code ec;
      if (!std::filesystem::is_directory(folder, ec)) {
        problems.push_back(
            fmt::format("cannot create {}: no folder {}", out.string(), folder.string()));
      }
    }
    if (!in.empty()) {
      if (std::string why = files.check_readable(in); !why.empty()) {
        problems.push_back(fmt::format("in={}: {}", in, why));
      }
    }
  }

  std::vector<Claim> claims(const DeviceSpec& spec, const HostFiles&) const override {
    const std::string backend = spec.value_or("backend", "");
    if (backend.starts_with("wav:")) return {{"file " + backend.substr(4), "virtio_sound"}};
    return {};
  }

  std::vector<HostPath> host_paths(const DeviceSpec& spec) const override {
    std::vector<HostPath> paths;
    const std::string backend = spec.value_or("backend", "");
    if (backend.starts_with("wav:") && backend.size() > 4) {
      paths.push_back({std::filesystem::path(backend.substr(4)), HostPath::Use::create, {}});
    }
    // alsa: ALSA chooses the files it opens (its configuration, the card's nodes) from its own
    // configuration, which a jail cannot be planned for: the PCMs are opened before the jail
    // (open_before_jail) and inherited, so the jail holds none of ALSA's files.
    if (auto in = spec.get("in"); in && !in->empty()) {
      paths.push_back({std::filesystem::path(*in), HostPath::Use::read, {}});
    }
    return paths;
  }

  std::vector<int> open_before_jail(const DeviceSpec& spec) const override {
    return open_sound_backend_early(spec.value_or("backend", ""), spec.value_or("in", ""),
                                    label(spec));
  }

  std::string describe(const DeviceSpec& spec, size_t, std::string_view) const override {
    const std::string in = spec.value_or("in", "");
    return fmt::format("virtio-snd -> {}{}", spec.value_or("backend", ""),
                       in.empty() ? std::string() : fmt::format(" (capture from {})", in));
  }

  std::shared_ptr<VirtioDevice> create(const DeviceSpec& spec,
                                       const DeviceContext&) const override {
    return std::make_shared<VirtioSound>(
        open_sound_backend(spec.value_or("backend", ""), spec.value_or("in", ""), label(spec)));
  }

  void start(VirtioDevice& device, EventLoop& loop) const override {
    static_cast<VirtioSound&>(device).start(loop);
  }

 private:
  std::string label(const DeviceSpec& spec) const {
    return spec.where.empty() ? std::string(flag()) : spec.where;
  }
};

}  // namespace

const VirtioDeviceKind& virtio_sound_kind() {
  static const SoundKind kind;
  return kind;
}

}  // namespace libvmm
