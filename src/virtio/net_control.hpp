// The control queue of a virtio-net device with more than one queue pair (virtIO 1.2 §5.1.6.5),
// shared by the device that moves frames here (VirtioNet) and the one whose frames the host
// kernel moves (VhostNet): both serve it in this process. Only VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET is
// offered (VIRTIO_NET_F_MQ); every other command is answered VIRTIO_NET_ERR.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace libvmm {

class Virtqueue;

// What a device gives answer_net_control_queue(): the pairs it has, whether the driver
// negotiated MQ, what to do with a pair count it accepted, and where a refusal goes (a
// rate-limited log line, a counter).
struct NetControlTarget {
  bool mq_negotiated = false;
  size_t max_pairs = 1;
  std::function<void(uint16_t pairs)> set_pairs;
  std::function<void(const std::string& why)> refuse;
};

// Answers each command waiting in `queue` in its last writable byte: VIRTIO_NET_OK for a
// VQ_PAIRS_SET of 1 to max_pairs with MQ negotiated (after set_pairs()), VIRTIO_NET_ERR for a
// malformed chain, another command or a count out of range (after refuse()). Bounded by the
// queue size. True if it returned any chain (the caller then signals the queue).
bool answer_net_control_queue(Virtqueue& queue, const NetControlTarget& target);

}  // namespace libvmm
