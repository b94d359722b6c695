// Devices served by another process over vhost-user, in the device registry:
//   <vhost_user type="blk|fs|net|console|sound" socket="PATH" [tag="TAG"] [num_queues="N"]/>,
//   --vhost-user TYPE,socket=PATH[,tag=TAG][,num_queues=N]
//   <virtio_fs tag="TAG" socket="PATH"/>, --fs tag=TAG,socket=PATH  (virtiofsd's shorthand)
#include <fmt/format.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>

#include <cstddef>
#include <cstring>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/net_control.hpp"
#include "libvmm/virtio/vhost_user.hpp"

namespace libvmm {
namespace {

constexpr size_t kTagSize = 36;          // struct virtio_fs_config: tag[36]
constexpr uint32_t kBlkConfigSize = 60;  // struct virtio_blk_config up to write_zeroes_may_unmap
constexpr uint16_t kQueueSize = 128;
// struct virtio_net_config up to mtu: mac, status, max_virtqueue_pairs, mtu.
constexpr uint32_t kNetConfigSize = 12;
constexpr uint16_t kNetQueueSize = 256;
constexpr uint16_t kNetControlQueueSize = 64;
// struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr.
constexpr uint32_t kConsoleConfigSize = 12;
constexpr uint32_t kConsoleMaxPortsOffset = 4;
constexpr uint16_t kConsoleQueueSize = 256;
// struct virtio_snd_config: jacks, streams, chmaps (controls only with VIRTIO_SND_F_CTLS).
constexpr uint32_t kSoundConfigSize = 12;
constexpr uint16_t kSoundControlQueueSize = 64;
constexpr uint16_t kSoundIoQueueSize = 256;

void check_tag(const DeviceSpec& spec, std::vector<std::string>& problems) {
  const std::string tag = spec.value_or("tag", "");
  if (tag.empty()) {
    problems.push_back("a virtio-fs device needs tag=TAG (the name the guest mounts)");
  } else if (tag.size() > kTagSize) {
    problems.push_back(fmt::format("tag '{}' is longer than {} bytes", tag, kTagSize));
  }
}

void check_socket(const DeviceSpec& spec, std::vector<std::string>& problems) {
  if (spec.value_or("socket", "").empty()) problems.push_back("missing socket=PATH");
}

// The device whose back-end listens on the spec's socket=, connected now: a refusal (no
// socket, a missing feature, a protocol error) names the spec's flag or line.
std::shared_ptr<VirtioDevice> connect_backend(const DeviceSpec& spec, const DeviceContext& context,
                                              VhostUserOptions o) {
  o.socket = spec.value_or("socket", "");
  try {
    return std::make_shared<VhostUserDevice>(std::move(o), context.memory);
  } catch (const UserError& e) {
    throw UserError(spec.located(e.what()));
  }
}

std::shared_ptr<VirtioDevice> make_fs(const DeviceSpec& spec, const DeviceContext& context) {
  VhostUserOptions o;
  o.name = "virtio-fs";
  o.device_id = VIRTIO_ID_FS;
  o.queue_sizes = {kQueueSize, kQueueSize};  // hiprio, one request queue
  // struct virtio_fs_config: tag (NUL-padded), num_request_queues (le32).
  o.config.assign(kTagSize + 4, 0);
  const std::string tag = spec.value_or("tag", "");
  std::memcpy(o.config.data(), tag.data(), std::min(tag.size(), kTagSize));
  o.config[kTagSize] = 1;
  o.device_feature_mask = 0;  // VIRTIO_FS_F_NOTIFICATION would need a notification queue
  return connect_backend(spec, context, std::move(o));
}

std::shared_ptr<VirtioDevice> make_blk(const DeviceSpec& spec, const DeviceContext& context) {
  VhostUserOptions o;
  o.name = fmt::format("vhost-user-blk{}", context.index);
  o.device_id = VIRTIO_ID_BLOCK;
  o.queue_sizes = {kQueueSize};
  o.config_size = kBlkConfigSize;
  // One queue (no MQ): the rest describe the disk and its requests. Not CONFIG_WCE, though a
  // driver's wce write would reach the back-end: qemu-storage-daemon says wce 0 (write
  // through) while its write cache is on, and a driver told so stops sending FLUSH (seen in
  // linux.vhost). With FLUSH alone the driver runs write-back and flushes.
  o.device_feature_mask = feature_bit(VIRTIO_BLK_F_SIZE_MAX) | feature_bit(VIRTIO_BLK_F_SEG_MAX) |
                          feature_bit(VIRTIO_BLK_F_GEOMETRY) | feature_bit(VIRTIO_BLK_F_RO) |
                          feature_bit(VIRTIO_BLK_F_BLK_SIZE) | feature_bit(VIRTIO_BLK_F_FLUSH) |
                          feature_bit(VIRTIO_BLK_F_TOPOLOGY) | feature_bit(VIRTIO_BLK_F_DISCARD) |
                          feature_bit(VIRTIO_BLK_F_WRITE_ZEROES);
  return connect_backend(spec, context, std::move(o));
}

// num_queues=N of a net device (checked); 1 without it.
uint16_t net_pairs(const DeviceSpec& spec) {
  return parse_queue_pairs(spec.value_or("num_queues", "1")).value_or(1);
}

std::shared_ptr<VirtioDevice> make_net(const DeviceSpec& spec, const DeviceContext& context) {
  VhostUserOptions o;
  o.name = fmt::format("vhost-user-net{}", context.index);
  o.device_id = VIRTIO_ID_NET;
  const uint16_t pairs = net_pairs(spec);
  // Receive and transmit per pair; with several, the control queue (served here).
  o.queue_sizes.assign(2u * pairs, kNetQueueSize);
  if (pairs > 1) o.queue_sizes.push_back(kNetControlQueueSize);
  o.net_queue_pairs = pairs;
  o.config_size = kNetConfigSize;  // the MAC, link status and MTU: the back-end's
  // The header is always virtio_net_hdr_v1 (VERSION_1); offloads pass through to the back-end.
  o.device_feature_mask =
      feature_bit(VIRTIO_NET_F_MAC) | feature_bit(VIRTIO_NET_F_STATUS) |
      feature_bit(VIRTIO_NET_F_MTU) | feature_bit(VIRTIO_NET_F_MRG_RXBUF) |
      feature_bit(VIRTIO_NET_F_CSUM) | feature_bit(VIRTIO_NET_F_GUEST_CSUM) |
      feature_bit(VIRTIO_NET_F_HOST_TSO4) | feature_bit(VIRTIO_NET_F_HOST_TSO6) |
      feature_bit(VIRTIO_NET_F_GUEST_TSO4) | feature_bit(VIRTIO_NET_F_GUEST_TSO6);
  o.feature_requirements = net_feature_requirements();
  return connect_backend(spec, context, std::move(o));
}

std::shared_ptr<VirtioDevice> make_console(const DeviceSpec& spec, const DeviceContext& context) {
  VhostUserOptions o;
  o.name = fmt::format("vhost-user-console{}", context.index);
  o.device_id = VIRTIO_ID_CONSOLE;
  o.queue_sizes = {kConsoleQueueSize, kConsoleQueueSize};  // port 0's receive and transmit
  o.config_size = kConsoleConfigSize;
  // Named ports where the back-end has them (MULTIPORT), the size of its terminal (SIZE: read
  // with GET_CONFIG, changes told with CONFIG_CHANGE_MSG or a RESIZE message), and emergency
  // writes (EMERG_WRITE: emerg_wr goes to the back-end as SET_CONFIG).
  o.device_feature_mask = feature_bit(VIRTIO_CONSOLE_F_MULTIPORT) |
                          feature_bit(VIRTIO_CONSOLE_F_SIZE) |
                          feature_bit(VIRTIO_CONSOLE_F_EMERG_WRITE);
  o.writable_config = {
      {offsetof(virtio_console_config, emerg_wr), sizeof(virtio_console_config::emerg_wr)}};
  o.queues_from_config = vhost_user_console_queues;
  return connect_backend(spec, context, std::move(o));
}

std::shared_ptr<VirtioDevice> make_sound(const DeviceSpec& spec, const DeviceContext& context) {
  VhostUserOptions o;
  o.name = fmt::format("vhost-user-snd{}", context.index);
  o.device_id = VIRTIO_ID_SOUND;
  // control, event, tx, rx
  o.queue_sizes = {kSoundControlQueueSize, kSoundControlQueueSize, kSoundIoQueueSize,
                   kSoundIoQueueSize};
  o.config_size = kSoundConfigSize;  // the card's jacks, streams and channel maps: the back-end's
  o.device_feature_mask = 0;         // not VIRTIO_SND_F_CTLS (no control elements)
  return connect_backend(spec, context, std::move(o));
}

class VhostUserKind final : public VirtioDeviceKind {
 public:
  std::string_view element() const override { return "vhost_user"; }
  std::string_view flag() const override { return "--vhost-user"; }
  std::string_view help() const override {
    return "a virtIO device served by another process over vhost-user (TYPE blk: "
           "qemu-storage-daemon, vmm-device; fs: virtiofsd, with tag=TAG; net, console, sound: "
           "vmm-device; net with num_queues=N: N queue pairs, the back-end's rings enabled as "
           "the driver uses them)";
  }
  std::string_view positional() const override { return "type"; }
  std::vector<AttributeRule> attributes() const override {
    return {{"type", true, false, "TYPE"},
            {"socket", true, true, "socket=PATH"},
            {"tag", false, false, "tag=TAG"},
            {"num_queues", false, false, "num_queues=N"}};
  }
  void check(const DeviceSpec& spec, const HostFiles&,
             std::vector<std::string>& problems) const override {
    const std::string type = spec.value_or("type", "");
    check_socket(spec, problems);
    if (auto text = spec.get("num_queues")) {
      if (type != "net") {
        problems.push_back("num_queues= is for type net only");
      } else if (!parse_queue_pairs(*text)) {
        problems.push_back(fmt::format("num_queues '{}' is not a number from 1 to {}", *text,
                                       VirtioNet::kMaxQueuePairs));
      }
    }
    if (type == "fs") {
      check_tag(spec, problems);
    } else if (type == "blk" || type == "net" || type == "console" || type == "sound") {
      if (spec.get("tag")) problems.push_back("tag= is for type fs only");
    } else {
      problems.push_back(
          fmt::format("unknown vhost-user device type '{}' (blk, fs, net, console, sound)", type));
    }
  }
  std::vector<HostPath> host_paths(const DeviceSpec& spec) const override {
    return {{spec.value_or("socket", ""), HostPath::Use::read, {}}};
  }
  std::string describe(const DeviceSpec& spec, size_t, std::string_view) const override {
    if (spec.value_or("type", "") == "fs") {
      return fmt::format("virtio-fs tag '{}' (vhost-user backend at {})", spec.value_or("tag", ""),
                         spec.value_or("socket", ""));
    }
    const uint16_t pairs = net_pairs(spec);
    return fmt::format("virtio-{}{} (vhost-user backend at {})", spec.value_or("type", ""),
                       pairs > 1 ? fmt::format(", {} queue pairs", pairs) : "",
                       spec.value_or("socket", ""));
  }
  std::shared_ptr<VirtioDevice> create(const DeviceSpec& spec,
                                       const DeviceContext& context) const override {
    const std::string type = spec.value_or("type", "");
    if (type == "fs") return make_fs(spec, context);
    if (type == "net") return make_net(spec, context);
    if (type == "sound") return make_sound(spec, context);
    return type == "console" ? make_console(spec, context) : make_blk(spec, context);
  }
  bool needs_shared_ram() const override { return true; }
  void start(VirtioDevice& device, EventLoop& loop) const override {
    static_cast<VhostUserDevice&>(device).watch(loop);
  }
};

class FsKind final : public VirtioDeviceKind {
 public:
  std::string_view element() const override { return "virtio_fs"; }
  std::string_view flag() const override { return "--fs"; }
  std::string_view help() const override {
    return "share a host folder with the guest (virtio-fs) through a virtiofsd listening on "
           "socket=PATH; the guest mounts it by tag=TAG";
  }
  std::vector<AttributeRule> attributes() const override {
    return {{"tag", true, false, "tag=TAG"}, {"socket", true, true, "socket=PATH"}};
  }
  void check(const DeviceSpec& spec, const HostFiles&,
             std::vector<std::string>& problems) const override {
    check_tag(spec, problems);
    check_socket(spec, problems);
  }
  std::vector<HostPath> host_paths(const DeviceSpec& spec) const override {
    return {{spec.value_or("socket", ""), HostPath::Use::read, {}}};
  }
  std::string describe(const DeviceSpec& spec, size_t, std::string_view) const override {
    return fmt::format("virtio-fs tag '{}' (virtiofsd at {})", spec.value_or("tag", ""),
                       spec.value_or("socket", ""));
  }
  std::shared_ptr<VirtioDevice> create(const DeviceSpec& spec,
                                       const DeviceContext& context) const override {
    return make_fs(spec, context);
  }
  bool needs_shared_ram() const override { return true; }
  void start(VirtioDevice& device, EventLoop& loop) const override {
    static_cast<VhostUserDevice&>(device).watch(loop);
  }
};

}  // namespace

// With MULTIPORT, two queues per port of the back-end's max_nr_ports and the two control
// queues after port 0's (virtIO 1.2 §5.3.2); without, port 0's two.
std::vector<uint16_t> vhost_user_console_queues(uint64_t features,
                                                std::span<const uint8_t> config) {
  if (!(features & feature_bit(VIRTIO_CONSOLE_F_MULTIPORT))) {
    return std::vector<uint16_t>(2, kConsoleQueueSize);
  }
  uint32_t ports = 0;
  for (size_t i = 0; i < 4 && kConsoleMaxPortsOffset + i < config.size(); ++i) {
    ports |= static_cast<uint32_t>(config[kConsoleMaxPortsOffset + i]) << (8 * i);
  }
  if (ports == 0 || ports > kMaxVhostUserConsolePorts) {
    throw vhost::VhostError(
        fmt::format("its console has {} ports (max_nr_ports); this side takes 1 to {}", ports,
                    kMaxVhostUserConsolePorts));
  }
  return std::vector<uint16_t>(2 * size_t{ports} + 2, kConsoleQueueSize);
}

const VirtioDeviceKind& vhost_user_kind() {
  static const VhostUserKind kind;
  return kind;
}

const VirtioDeviceKind& virtio_fs_kind() {
  static const FsKind kind;
  return kind;
}

}  // namespace libvmm
