#include "net_control.hpp"

#include <fmt/format.h>

#include <optional>
#include <span>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {
namespace {

// The pair count a VQ_PAIRS_SET command in `chain` asks for, or nullopt with `why` when the
// chain is malformed, the command is another one, or the count is out of range or MQ was not
// negotiated.
std::optional<uint16_t> parse_vq_pairs_set(const DescriptorChain& chain, bool mq_negotiated,
                                           size_t max_pairs, std::string& why) {
  virtio_net_ctrl_hdr header{};
  if (chain.writable_bytes() < 1 || chain.readable_bytes() < sizeof(header) ||
      !chain.read_at(0, std::span(reinterpret_cast<uint8_t*>(&header), sizeof(header)))) {
    why = fmt::format(
        "control command {} has {} readable and {} writable bytes (needs a 2-byte header and "
        "a status byte)",
        chain.head(), chain.readable_bytes(), chain.writable_bytes());
    return std::nullopt;
  }
  if (header.class_ != VIRTIO_NET_CTRL_MQ || header.cmd != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) {
    // Not offered (CTRL_RX, CTRL_VLAN, ...): answered with an error, as the spec asks.
    why = fmt::format("control command class {} command {} is not supported", header.class_,
                      header.cmd);
    return std::nullopt;
  }
  virtio_net_ctrl_mq mq{};
  if (chain.readable_bytes() < sizeof(header) + sizeof(mq) ||
      !chain.read_at(sizeof(header), std::span(reinterpret_cast<uint8_t*>(&mq), sizeof(mq)))) {
    why = "VQ_PAIRS_SET without its 2-byte count";
    return std::nullopt;
  }
  if (!mq_negotiated || mq.virtqueue_pairs < 1 || mq.virtqueue_pairs > max_pairs) {
    why = fmt::format("VQ_PAIRS_SET {} (the device has {} pairs{})", mq.virtqueue_pairs, max_pairs,
                      mq_negotiated ? "" : ", MQ not negotiated");
    return std::nullopt;
  }
  return mq.virtqueue_pairs;
}

}  // namespace

bool answer_net_control_queue(Virtqueue& queue, const NetControlTarget& target) {
  bool pushed = false;
  // Each chain is taken once (commands are tiny, the driver waits for each one's answer).
  for (uint32_t i = 0; i < queue.size(); ++i) {
    auto chain = queue.pop();
    if (!chain) break;
    std::string why;
    const auto pairs = parse_vq_pairs_set(*chain, target.mq_negotiated, target.max_pairs, why);
    if (pairs) {
      target.set_pairs(*pairs);
    } else {
      target.refuse(why);
    }
    const uint8_t status = pairs ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
    // The status byte is the last writable byte (the driver's `in` buffer).
    const bool ok = chain->writable_bytes() >= 1 &&
                    chain->write_at(chain->writable_bytes() - 1, std::span(&status, 1));
    queue.push(chain->head(), ok ? 1 : 0);
    pushed = true;
  }
  return pushed;
}

}  // namespace libvmm
