// virtio_net in the device registry: <virtio_net tap="NAME" mac="MAC" mtu="N" num_queues="N"
// iothread="on|off" poll_us="N" vhost="on|off"/>, --net
// tap=NAME[,mac=MAC][,mtu=N][,num_queues=N][,iothread=on|off][,poll_us=N][,vhost=on|off].
// vhost=on moves the data path into the host kernel (VhostNet); otherwise VirtioNet serves it.
#include <fmt/format.h>
#include <net/if.h>

#include <charconv>

#include "libvmm/backends/tap_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/vhost_net.hpp"

namespace libvmm {

const VirtioDeviceKind& virtio_net_kind();

namespace {

std::optional<uint16_t> parse_mtu(std::string_view text) {
  unsigned mtu = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), mtu);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
      mtu < VirtioNet::kMinMtu || mtu > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(mtu);
}

// poll_us: 0..VirtioNet::kMaxPollUs microseconds.
std::optional<uint32_t> parse_poll_us(std::string_view text) {
  uint32_t us = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), us);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
      us > VirtioNet::kMaxPollUs) {
    return std::nullopt;
  }
  return us;
}

// num_queues means the same bound for both devices.
static_assert(VhostNet::kMaxQueuePairs == VirtioNet::kMaxQueuePairs);

class NetKind final : public VirtioDeviceKind {
 public:
  std::string_view element() const override { return "virtio_net"; }
  std::string_view flag() const override { return "--net"; }
  std::string_view help() const override {
    return "virtIO network device on a host TAP: tap=NAME[,mac=52:54:00:12:34:56][,mtu=N]"
           "[,num_queues=N][,iothread=on|off][,poll_us=N] (repeatable; eth0, eth1, ...; default "
           "MAC derived from the VM name; "
           "num_queues: receive/transmit queue pairs, each on a queue of a multiqueue TAP, "
           "default 1; iothread=on: transmit on the device's own thread, which polls its emptied "
           "rings for up to poll_us=N microseconds, default 32; vhost=on: frames move in the "
           "host kernel's vhost-net (a vhost device per queue pair), whose worker polls drained "
           "rings for up to poll_us=N microseconds, default 0)";
  }
  std::vector<AttributeRule> attributes() const override {
    return {{"tap", true, false, "tap=NAME"},
            {"mac", false, false, "mac=MAC"},
            {"mtu", false, false, "mtu=N"},
            {"num_queues", false, false, "num_queues=N"},
            {"iothread", false, false, "iothread=on or iothread=off"},
            {"poll_us", false, false, "poll_us=N"},
            {"vhost", false, false, "vhost=on or vhost=off"}};
  }

  void check(const DeviceSpec& spec, const HostFiles&,
             std::vector<std::string>& problems) const override {
    const std::string tap = spec.value_or("tap", "");
    if (tap.empty()) problems.push_back("missing tap=NAME");
    if (tap.size() >= IFNAMSIZ) {
      problems.push_back(
          fmt::format("TAP name '{}' is longer than {} characters", tap, IFNAMSIZ - 1));
    }
    // What Linux refuses in an interface name, and '%', its pattern for a new name: each
    // queue would make another interface (tap0, tap1) instead of joining one.
    if (tap == "." || tap == "..") {
      problems.push_back(fmt::format("TAP name '{}' is no interface name", tap));
    } else if (const size_t bad = tap.find_first_of("%/: \t\n\v\f\r"); bad != std::string::npos) {
      const char c = tap[bad];
      problems.push_back(fmt::format("TAP name '{}' has '{}', which interface names cannot have{}",
                                     tap, c, c == '%' ? " (name one interface)" : ""));
    }
    if (auto text = spec.get("mac")) {
      const auto mac = parse_mac(*text);
      if (!mac) {
        problems.push_back(fmt::format("malformed MAC '{}' (expected 52:54:00:12:34:56)", *text));
      } else if ((*mac)[0] & 1) {
        problems.push_back(fmt::format("MAC {} is a multicast address", *text));
      } else if (*mac == MacAddress{}) {
        problems.push_back("MAC 00:00:00:00:00:00 is not a valid address");
      }
    }
    if (auto text = spec.get("mtu"); text && !parse_mtu(*text)) {
      problems.push_back(
          fmt::format("MTU '{}' is not a number from {} to 65535", *text, VirtioNet::kMinMtu));
    }
    if (auto text = spec.get("num_queues"); text && !parse_queue_pairs(*text)) {
      problems.push_back(fmt::format("num_queues '{}' is not a number from 1 to {}", *text,
                                     VirtioNet::kMaxQueuePairs));
    }
    if (const std::string t = spec.value_or("iothread", "off"); t != "on" && t != "off") {
      problems.push_back(fmt::format("iothread=\"{}\" must be on or off", t));
    }
    if (auto text = spec.get("poll_us"); text && !parse_poll_us(*text)) {
      problems.push_back(fmt::format("poll_us=\"{}\" must be a number of microseconds from 0 to {}",
                                     *text, VirtioNet::kMaxPollUs));
    }
    const std::string vhost = spec.value_or("vhost", "off");
    if (vhost != "on" && vhost != "off") {
      problems.push_back(fmt::format("vhost=\"{}\" must be on or off", vhost));
    } else if (vhost == "on") {
      // The kernel serves the queues: this process's transmit thread does not apply (poll_us
      // does: the kernel's worker polls).
      if (spec.get("iothread")) {
        problems.push_back("vhost=on has no transmit thread of its own (iothread=)");
      }
    } else if (spec.get("poll_us") && spec.value_or("poll_us", "") != "0" &&
               spec.value_or("iothread", "off") != "on") {
      // Without a thread of its own (or the kernel's) nothing polls: said, not ignored.
      problems.push_back("poll_us= needs iothread=on or vhost=on (nothing polls without them)");
    }
  }

  // One TAP serves one device: two would split its frames between them (multiqueue) or the
  // second fail as if another process had it.
  std::vector<Claim> claims(const DeviceSpec& spec, const HostFiles&) const override {
    const std::string tap = spec.value_or("tap", "");
    if (tap.empty()) return {};
    return {{"tap " + tap, "TAP " + tap}};
  }

  // The TAP is opened (or created) through /dev/net/tun (TapBackend).
  std::vector<HostPath> host_paths(const DeviceSpec& spec) const override {
    std::vector<HostPath> paths = {
        {"/dev/net/tun", HostPath::Use::device, spec.value_or("tap", "")}};
    if (config(spec).vhost) paths.push_back({"/dev/vhost-net", HostPath::Use::device, {}});
    return paths;
  }

  std::string describe(const DeviceSpec& spec, size_t index,
                       std::string_view vm_name) const override {
    const NetConfig c = config(spec);
    std::string text = fmt::format("virtio-net eth{} tap {} MAC {} MTU {}", index, c.tap,
                                   format_mac(c.mac.value_or(default_mac(vm_name, index))), c.mtu);
    if (c.num_queues > 1) text.append(fmt::format(", {} queue pairs", c.num_queues));
    if (c.iothread) text.append(fmt::format(", transmit thread polling up to {} µs", c.poll_us));
    if (c.vhost) text.append(", frames moved by the host kernel (vhost-net)");
    if (c.vhost && c.vhost_poll_us > 0) {
      text.append(fmt::format(", which polls drained rings up to {} µs", c.vhost_poll_us));
    }
    return text;
  }

  std::shared_ptr<VirtioDevice> create(const DeviceSpec& spec,
                                       const DeviceContext& context) const override {
    const NetConfig c = config(spec);
    const MacAddress mac = c.mac.value_or(default_mac(context.vm_name, context.index));
    log::debug("virtio-net on tap {}: MAC {}, MTU {}, {} queue pair(s)", c.tap, format_mac(mac),
               c.mtu, c.num_queues);
    try {
      if (c.vhost) {
        VhostNetOptions o;
        o.name = fmt::format("vhost-net{}", context.index);
        o.mac = mac;
        o.mtu = c.mtu;
        o.poll_us = c.vhost_poll_us;
        // Each pair: a vhost device of its own and a queue of the TAP.
        std::vector<VhostNetPair> pairs;
        for (auto& tap : TapBackend::open_queues(c.tap, c.num_queues)) {
          pairs.push_back({open_vhost_net(), std::move(tap)});
        }
        return std::make_shared<VhostNet>(std::move(o), std::move(pairs), context.memory);
      }
      std::vector<std::shared_ptr<NetBackend>> backends;
      for (auto& tap : TapBackend::open_queues(c.tap, c.num_queues)) {
        backends.push_back(std::move(tap));
      }
      NetThreading threading;
      threading.tx_thread = c.iothread;
      threading.name = fmt::format("net-tx{}", context.index);
      threading.on_thread_start = context.on_io_thread_start;
      threading.poll_max_us = c.poll_us;
      return std::make_shared<VirtioNet>(std::move(backends), mac, c.mtu, std::move(threading));
    } catch (const UserError& e) {
      throw UserError(spec.located(e.what()));  // "--net tap=x: ..." or "f.system:9: ..."
    }
  }

  void start(VirtioDevice& device, EventLoop& loop) const override {
    if (auto* vhost = dynamic_cast<VhostNet*>(&device)) return vhost->watch(loop);
    static_cast<VirtioNet&>(device).start(loop);
  }

  // A checked spec's values.
  static NetConfig config(const DeviceSpec& spec) {
    NetConfig c;
    c.tap = spec.value_or("tap", "");
    if (auto text = spec.get("mac")) c.mac = parse_mac(*text);
    if (auto text = spec.get("mtu")) c.mtu = parse_mtu(*text).value_or(c.mtu);
    if (auto text = spec.get("num_queues")) c.num_queues = parse_queue_pairs(*text).value_or(1);
    c.iothread = spec.value_or("iothread", "off") == "on";
    if (auto text = spec.get("poll_us")) c.poll_us = parse_poll_us(*text).value_or(c.poll_us);
    c.vhost = spec.value_or("vhost", "off") == "on";
    if (auto text = spec.get("poll_us"); text && c.vhost) {
      c.vhost_poll_us = parse_poll_us(*text).value_or(0);
    }
    return c;
  }
};

}  // namespace

std::optional<uint16_t> parse_queue_pairs(std::string_view text) {
  unsigned n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || n < 1 ||
      n > VirtioNet::kMaxQueuePairs) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(n);
}

const VirtioDeviceKind& virtio_net_kind() {
  static const NetKind kind;
  return kind;
}

NetConfig parse_net_spec(std::string_view text) {
  return NetKind::config(checked_spec_from_flag(virtio_net_kind(), text, HostFiles::real()));
}

std::optional<MacAddress> parse_mac(std::string_view text) {
  MacAddress mac{};
  if (text.size() != 17) return std::nullopt;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i > 0 && text[3 * i - 1] != ':') return std::nullopt;
    const char* first = text.data() + 3 * i;
    const auto [end, ec] = std::from_chars(first, first + 2, mac[i], 16);
    if (ec != std::errc() || end != first + 2) return std::nullopt;
  }
  return mac;
}

}  // namespace libvmm
