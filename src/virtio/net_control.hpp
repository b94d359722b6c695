// The control queue of a virtio-net device with more than one queue pair (virtIO 1.2 §5.1.6.5),
// shared by the device that moves frames here (VirtioNet) and the one whose frames the host
// kernel moves (VhostNet): both serve it in this process. Only VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET is
// offered (VIRTIO_NET_F_MQ); every other command is answered VIRTIO_NET_ERR.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace libvmm {

class DescriptorChain;
class Virtqueue;

// The pair count a VQ_PAIRS_SET command in `chain` asks for (1 to `max_pairs`), or nullopt with
// `why` when the chain is malformed, the command is another one, or the count is out of range
// or MQ was not negotiated.
std::optional<uint16_t> parse_vq_pairs_set(const DescriptorChain& chain, bool mq_negotiated,
                                           size_t max_pairs, std::string& why);

// Answers each command waiting in `queue` with the status `command` returns (VIRTIO_NET_OK or
// VIRTIO_NET_ERR) in its last writable byte. Bounded by the queue size. True if it returned any
// chain (the caller then signals the queue).
bool answer_net_control_queue(Virtqueue& queue,
                              const std::function<uint8_t(const DescriptorChain&)>& command);

}  // namespace libvmm
