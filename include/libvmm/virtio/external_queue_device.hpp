// What every device whose queues something else serves (another process over vhost-user, the
// host kernel's vhost-net) shares: the eventfds the machine wires for each queue, a kick passed
// on when a notify missed its ioeventfd, and where the rings are in this process's memory.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

class GuestMemory;

class ExternalQueueDevice : public VirtioDevice, public ExternalQueues {
 public:
  // The transport calls start_queues() instead.
  void activate(VirtioTransport&, uint64_t) override {}
  // Only reached when no ioeventfd caught the notify (a device added without one).
  void queue_notify(uint16_t index, Virtqueue&) override { kick(index); }
  ExternalQueues* external_queues() override { return this; }
  void set_queue_eventfds(std::vector<QueueEventfds> fds) override { eventfds_ = std::move(fds); }

 protected:
  // This process's addresses of a queue's three rings, as a memory table of this process's
  // mappings translates them; nullopt where one is not inside one writable region (the server
  // is given writable maps only).
  struct RingAddresses {
    uint64_t desc = 0;
    uint64_t avail = 0;
    uint64_t used = 0;
  };
  static std::optional<RingAddresses> ring_addresses(const GuestMemory& memory,
                                                     const Virtqueue& queue);
  // Signals queue `index`'s kick eventfd, as KVM does for the driver's notify: buffers made
  // available before the server watched it, or a notify that came as a register write.
  void kick(uint16_t index);

  std::vector<QueueEventfds> eventfds_;  // one pair per queue, owned by the machine
};

}  // namespace libvmm
