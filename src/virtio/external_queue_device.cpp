#include "libvmm/virtio/external_queue_device.hpp"

#include <unistd.h>

#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

std::optional<ExternalQueueDevice::RingAddresses> ExternalQueueDevice::ring_addresses(
    const GuestMemory& memory, const Virtqueue& queue) {
  const uint64_t n = queue.size();
  // In writable guest memory, all three: the server is given only writable maps (vhost-net's
  // table and vhost-user's leave read-only ones out), so a ring elsewhere it could not find.
  const auto desc = memory.slice(queue.desc_addr(), 16 * n, true);
  const auto avail = memory.slice(queue.avail_addr(), 6 + 2 * n, true);
  const auto used = memory.slice(queue.used_addr(), 6 + 8 * n, true);
  if (!desc || !avail || !used) return std::nullopt;
  return RingAddresses{reinterpret_cast<uint64_t>(desc->data()),
                       reinterpret_cast<uint64_t>(avail->data()),
                       reinterpret_cast<uint64_t>(used->data())};
}

void ExternalQueueDevice::kick(uint16_t index) {
  if (index >= eventfds_.size() || eventfds_[index].kick < 0) return;
  const uint64_t one = 1;
  if (::write(eventfds_[index].kick, &one, sizeof one) != sizeof one) {
    log::debug("{}: kick for queue {} not delivered", name(), index);
  }
}

}  // namespace libvmm
