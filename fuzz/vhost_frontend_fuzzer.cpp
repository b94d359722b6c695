// vhost-user, front-end side: a hostile back-end's byte stream (replies, descriptors none)
// against the device's set-up exchange, which must end in a UserError or a device with sane
// values, never a crash, hang or unbounded allocation. Then the same bytes through each reply
// decoder, and as the back-end's own requests. The input is what the back-end "sent" before
// closing its end.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <memory>

#include "fuzz_input.hpp"
#include "libvmm/backends/vhost_user.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/vhost_user.hpp"

using namespace libvmm;

namespace {

// A socket pair whose far end (kept in `far`, so that sends to it succeed) has written
// `bytes` and is closed for writing.
UniqueFd loaded_socket(std::span<const uint8_t> bytes, UniqueFd& far) {
  int pair[2];
  fuzz::check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  far = UniqueFd(pair[1]);
  int size = 1 << 20;
  ::setsockopt(pair[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  ::setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::write(pair[1], bytes.data() + sent, bytes.size() - sent);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  ::shutdown(pair[1], SHUT_WR);
  return UniqueFd(pair[0]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16384) return 0;
  fuzz::Input in(data, size);
  const uint8_t mode = in.u8();
  const auto rest = in.rest();

  static GuestMemory memory = [] {
    GuestMemory m;
    m.map(0, MemoryRegion::create("ram", 0x10000), 0, 0x10000);
    return m;
  }();
  VhostUserOptions o;
  o.name = "fuzz";
  o.socket = "fuzz.sock";
  o.device_id = 2;
  o.queue_sizes = {16, 16};
  o.timeout_ms = 0;
  if (mode & 1) {
    o.config_size = (mode >> 1) & 0x7f;  // read from the back-end
  } else {
    o.config.assign(8, 0);
  }
  o.device_feature_mask = ~uint64_t{0};
  // A console's queues from the back-end's config (max_nr_ports), as --vhost-user console's.
  const bool console = (mode & 0x81) == 0x81;
  if (console) o.queues_from_config = vhost_user_console_queues;
  UniqueFd far;
  try {
    auto device = std::make_unique<VhostUserDevice>(o, memory, loaded_socket(rest, far));
    fuzz::check(device->config_size() == (o.config.empty() ? o.config_size : 8));
    const size_t queues = device->queue_max_sizes().size();
    fuzz::check(console ? queues % 2 == 0 && queues <= 2 * kMaxVhostUserConsolePorts + 2
                        : queues == 2);
    std::vector<uint8_t> buffer(device->config_size());
    device->read_config(0, buffer);
  } catch (const UserError&) {
  }

  // Each reply decoder over the stream's messages.
  vhost::Channel channel(loaded_socket(rest, far), "fuzz");
  for (int i = 0; i < 16; ++i) {
    try {
      const vhost::Message m = channel.receive(0, true);
      fuzz::check(m.payload.size() <= vhost::kMaxPayload);
      switch (i % 4) {
        case 0:
          vhost::decode_reply_u64(m, static_cast<vhost::Request>(m.request));
          break;
        case 1:
          vhost::decode_reply_state(m, vhost::Request::get_vring_base, mode & 3);
          break;
        case 2: {
          const auto c = vhost::decode_reply_config(m, 0, mode);
          fuzz::check(c.data.size() == mode);
          break;
        }
        default:
          vhost::decode_reply_ack(m, static_cast<vhost::Request>(m.request));
      }
    } catch (const vhost::VhostError&) {
      if (i % 4 == 0) break;
    }
  }

  // The back-end's own requests (its SET_BACKEND_REQ_FD channel): only a bare CONFIG_CHANGE_MSG
  // is taken.
  vhost::Channel requests(loaded_socket(rest, far), "fuzz back-end", true);
  for (int i = 0; i < 8; ++i) {
    try {
      const vhost::Message m = requests.receive(0, false);
      fuzz::check(vhost::decode_backend_request(m) == vhost::BackendRequest::config_change_msg);
      fuzz::check(m.payload.empty() && m.fds.empty());
    } catch (const vhost::VhostError&) {
      break;
    }
  }
  return 0;
}
