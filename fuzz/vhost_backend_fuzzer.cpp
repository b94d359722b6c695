// vhost-user, back-end side: a hostile front-end's messages (any request, flags, payload and
// number of descriptors) through the header check and decode_request(), keeping the memory
// table and ring sizes it sets, and translating its ring addresses as a back-end would. Every
// outcome is a decoded request or a VhostError; decoded values are checked against the limits.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>

#include "fuzz_input.hpp"
#include "libvmm/backends/vhost_user.hpp"

using namespace libvmm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  constexpr uint32_t kQueues = 3;
  vhost::RegionTable table;
  uint32_t num[kQueues] = {256, 256, 256};
  for (int round = 0; round < 32 && !in.empty(); ++round) {
    vhost::Message m;
    m.request = in.u8();
    m.flags = in.u8();
    const size_t length = in.u16() % 512;
    const auto bytes = in.take(length);
    m.payload.assign(bytes.begin(), bytes.end());
    const size_t fds = in.u8() % (vhost::kMaxFds + 2);
    for (size_t i = 0; i < fds; ++i) m.fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!vhost::check_header(m.request, m.flags, static_cast<uint32_t>(m.payload.size()), false)
             .empty()) {
      continue;
    }
    try {
      const vhost::DecodedRequest d = vhost::decode_request(m, kQueues);
      switch (d.request) {
        case vhost::Request::set_mem_table:
          fuzz::check(d.regions.size() <= vhost::kMaxRegions && d.regions.size() == m.fds.size());
          table = vhost::RegionTable(d.regions);
          break;
        case vhost::Request::set_vring_num:
          fuzz::check(d.state.index < kQueues);
          num[d.state.index] = d.state.num % 32769;
          break;
        case vhost::Request::set_vring_addr: {
          fuzz::check(d.addr.index < kQueues);
          const vhost::VringAddr gpa = table.rings_to_gpa(d.addr, num[d.addr.index]);
          fuzz::check(table.user_to_gpa(d.addr.desc, 16ull * num[d.addr.index]) == gpa.desc);
          break;
        }
        case vhost::Request::set_vring_kick:
        case vhost::Request::set_vring_call:
        case vhost::Request::set_vring_err:
          fuzz::check(d.queue_index() < kQueues && m.fds.size() == (d.has_fd() ? 1u : 0u));
          break;
        case vhost::Request::get_config:
        case vhost::Request::set_config:
          fuzz::check(d.config.offset + d.config.data.size() <= vhost::kMaxConfigSize);
          break;
        default:
          break;
      }
    } catch (const vhost::VhostError&) {
    }
  }
  return 0;
}
