// virtio_block in the device registry: <virtio_block path="d.img" readonly="true"
// direct="true" serial="ID" io="auto|sync|io_uring" iothread="on|off"
// poll_us="N" num_queues="N"/>,
// --disk
// PATH[,readonly][,direct][,serial=ID][,io=auto|sync|io_uring][,iothread=on|off][,poll_us=N][,num_queues=N].
#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <string>

#include "libvmm/core/error.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/device_kind.hpp"

namespace libvmm {
namespace {

class BlockKind final : public VirtioDeviceKind {
 public:
  std::string_view element() const override { return "virtio_block"; }
  std::string_view flag() const override { return "--disk"; }
  std::string_view help() const override {
    return "virtIO block device from a raw image: "
           "PATH[,readonly][,direct][,serial=ID][,io=auto|sync|io_uring][,iothread=on|off]"
           "[,poll_us=N][,num_queues=N]; repeat for more (vda, vdb, ...)";
  }
  std::string_view positional() const override { return "path"; }
  std::vector<AttributeRule> attributes() const override {
    return {{"path", true, true, "image path"},
            {"readonly", false, false, "readonly"},
            {"direct", false, false, "direct"},
            {"serial", false, false, "serial=ID"},
            {"io", false, false, "io=auto, io=sync or io=io_uring"},
            {"iothread", false, false, "iothread=on or iothread=off"},
            {"poll_us", false, false, "poll_us=N"},
            {"num_queues", false, false, "num_queues=N"}};
  }

  void check(const DeviceSpec& spec, const HostFiles& files,
             std::vector<std::string>& problems) const override {
    for (const char* flag : {"readonly", "direct"}) {
      if (!spec.boolean(flag)) {
        problems.push_back(fmt::format("{}=\"{}\" must be true or false", flag, *spec.get(flag)));
      }
    }
    const std::string serial = spec.value_or("serial", "");
    if (serial.size() > VirtioBlock::kIdBytes) {
      problems.push_back(
          fmt::format("serial '{}' is longer than {} characters", serial, VirtioBlock::kIdBytes));
    }
    for (const char c : serial) {
      if (c < 0x20 || c > 0x7e) {
        problems.push_back("serial must be printable ASCII");
        break;
      }
    }
    if (!block_io(spec)) {
      problems.push_back(
          fmt::format("io=\"{}\" must be auto, sync or io_uring", spec.value_or("io", "")));
    }
    if (const std::string t = spec.value_or("iothread", "on"); t != "on" && t != "off") {
      problems.push_back(fmt::format("iothread=\"{}\" must be on or off", t));
    }
    if (!poll_us(spec)) {
      problems.push_back(fmt::format("poll_us=\"{}\" must be a number of microseconds from 0 to {}",
                                     *spec.get("poll_us"), kMaxPollUs));
    }
    if (spec.get("num_queues") && !num_queues(spec)) {
      problems.push_back(fmt::format("num_queues=\"{}\" must be a number from 1 to {}",
                                     *spec.get("num_queues"), VirtioBlock::kMaxQueues));
    }
    const std::string path = spec.value_or("path", "");
    if (const std::string why = files.check_readable(path); !why.empty()) {
      problems.push_back(fmt::format("image {}: {}", path, why));
    }
  }

  std::vector<Claim> claims(const DeviceSpec& spec, const HostFiles& files) const override {
    const std::string path = spec.value_or("path", "");
    if (auto id = files.identity(path)) return {{"image " + *id, "image " + path}};
    return {};
  }

  std::vector<HostPath> host_paths(const DeviceSpec& spec) const override {
    const bool readonly = spec.boolean("readonly").value_or(false);
    return {{spec.value_or("path", ""),
             readonly ? HostPath::Use::read : HostPath::Use::read_write,
             {}}};
  }

  std::string describe(const DeviceSpec& spec, size_t index, std::string_view) const override {
    return fmt::format("virtio-blk vd{} {}{}", static_cast<char>('a' + index % 26),
                       spec.value_or("path", ""),
                       spec.boolean("readonly") == true ? " (read-only)" : "");
  }

  std::shared_ptr<VirtioDevice> create(const DeviceSpec& spec,
                                       const DeviceContext& context) const override {
    BlockThreading threading;
    threading.name = fmt::format("blk-io{}", context.index);
    threading.on_thread_start = context.on_io_thread_start;
    BlockConfig c = config(spec);
    if (!spec.get("num_queues")) {  // one per vCPU
      c.num_queues =
          static_cast<uint16_t>(std::clamp<uint32_t>(context.vcpus, 1, VirtioBlock::kMaxQueues));
    }
    try {
      return std::make_shared<VirtioBlock>(c, std::move(threading));
    } catch (const UserError& e) {
      throw UserError(spec.located(e.what()));  // "--disk d.img: image d.img: ..."
    }
  }

  // A checked spec's values.
  static BlockConfig config(const DeviceSpec& spec) {
    BlockConfig c;
    c.path = spec.value_or("path", "");
    c.readonly = spec.boolean("readonly").value_or(false);
    c.direct = spec.boolean("direct").value_or(false);
    c.serial = spec.value_or("serial", "");
    c.io = block_io(spec).value_or(c.io);
    c.iothread = spec.value_or("iothread", "on") == "on";
    c.poll_us = poll_us(spec).value_or(c.poll_us);
    c.num_queues = num_queues(spec).value_or(c.num_queues);
    return c;
  }

  // The io attribute (default auto); nullopt when it is none of the three.
  static std::optional<BlockIo> block_io(const DeviceSpec& spec) {
    const std::string io = spec.value_or("io", "auto");
    if (io == "auto") return BlockIo::automatic;
    if (io == "sync") return BlockIo::sync;
    if (io == "io_uring") return BlockIo::io_uring;
    return std::nullopt;
  }

  // The num_queues attribute when present and 1..kMaxQueues.
  static std::optional<uint16_t> num_queues(const DeviceSpec& spec) {
    const std::optional<std::string_view> text = spec.get("num_queues");
    if (!text || text->empty() || text->size() > 2 ||
        text->find_first_not_of("0123456789") != std::string_view::npos) {
      return std::nullopt;
    }
    const auto value = static_cast<uint16_t>(std::stoul(std::string(*text)));
    if (value < 1 || value > VirtioBlock::kMaxQueues) return std::nullopt;
    return value;
  }

  // The poll_us attribute: its default when absent, nullopt when it is not 0..kMaxPollUs.
  static constexpr uint32_t kMaxPollUs = AdaptivePoll::kMaxUs;
  static std::optional<uint32_t> poll_us(const DeviceSpec& spec) {
    const std::optional<std::string_view> text = spec.get("poll_us");
    if (!text) return BlockConfig{}.poll_us;
    if (text->empty() || text->size() > 4 ||
        text->find_first_not_of("0123456789") != std::string_view::npos) {
      return std::nullopt;
    }
    const auto value = static_cast<uint32_t>(std::stoul(std::string(*text)));
    if (value > kMaxPollUs) return std::nullopt;
    return value;
  }
};

}  // namespace

const VirtioDeviceKind& virtio_block_kind() {
  static const BlockKind kind;
  return kind;
}

BlockConfig parse_disk_spec(std::string_view text) {
  return BlockKind::config(
      checked_spec_from_flag(virtio_block_kind(), text, HostFiles::assume_present()));
}

}  // namespace libvmm
