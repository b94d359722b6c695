// virtio-net served by the host kernel's vhost-net (see vhost_net.hpp).
#include "libvmm/virtio/vhost_net.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/backends/tap_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/net_control.hpp"
#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {
namespace {

namespace abi = vhost_kernel;

// The TAP carries the offloads in the 12-byte header every frame has; the kernel only needs to
// offer mergeable receive buffers for the driver to use them.
constexpr uint64_t kTapOffloads =
    feature_bit(VIRTIO_NET_F_CSUM) | feature_bit(VIRTIO_NET_F_GUEST_CSUM) |
    feature_bit(VIRTIO_NET_F_HOST_TSO4) | feature_bit(VIRTIO_NET_F_HOST_TSO6) |
    feature_bit(VIRTIO_NET_F_GUEST_TSO4) | feature_bit(VIRTIO_NET_F_GUEST_TSO6);

class KernelVhostNet final : public VhostNetKernel {
 public:
  explicit KernelVhostNet(UniqueFd fd) : fd_(std::move(fd)) {}

  void set_owner() override { call(abi::kSetOwner, nullptr, "VHOST_SET_OWNER"); }
  uint64_t get_features() override {
    uint64_t features = 0;
    call(abi::kGetFeatures, &features, "VHOST_GET_FEATURES");
    return features;
  }
  void set_features(uint64_t features) override {
    call(abi::kSetFeatures, &features, "VHOST_SET_FEATURES");
  }
  void set_mem_table(std::span<const abi::MemoryRegion> regions) override {
    // struct vhost_memory ends in a flexible array: header and regions in one buffer.
    std::vector<abi::MemoryRegion> buffer(regions.size() + 1);
    static_assert(sizeof(abi::MemoryHeader) <= sizeof(abi::MemoryRegion));
    abi::MemoryHeader header;
    header.nregions = static_cast<uint32_t>(regions.size());
    auto* bytes = reinterpret_cast<uint8_t*>(buffer.data());
    std::memcpy(bytes, &header, sizeof header);
    std::memcpy(bytes + sizeof header, regions.data(), regions.size_bytes());
    call(abi::kSetMemTable, bytes, "VHOST_SET_MEM_TABLE");
  }
  void set_vring_num(uint32_t index, uint32_t num) override {
    abi::VringState state{index, num};
    call(abi::kSetVringNum, &state, "VHOST_SET_VRING_NUM");
  }
  void set_vring_base(uint32_t index, uint32_t base) override {
    abi::VringState state{index, base};
    call(abi::kSetVringBase, &state, "VHOST_SET_VRING_BASE");
  }
  uint32_t get_vring_base(uint32_t index) override {
    abi::VringState state{index, 0};
    call(abi::kGetVringBase, &state, "VHOST_GET_VRING_BASE");
    return state.num;
  }
  void set_vring_addr(const abi::VringAddr& addr) override {
    abi::VringAddr copy = addr;
    call(abi::kSetVringAddr, &copy, "VHOST_SET_VRING_ADDR");
  }
  void set_vring_kick(uint32_t index, int fd) override {
    set_file(abi::kSetVringKick, index, fd, "VHOST_SET_VRING_KICK");
  }
  void set_vring_call(uint32_t index, int fd) override {
    set_file(abi::kSetVringCall, index, fd, "VHOST_SET_VRING_CALL");
  }
  void set_vring_err(uint32_t index, int fd) override {
    set_file(abi::kSetVringErr, index, fd, "VHOST_SET_VRING_ERR");
  }
  void set_backend(uint32_t index, int fd) override {
    set_file(abi::kNetSetBackend, index, fd, "VHOST_NET_SET_BACKEND");
  }
  void set_vring_busyloop_timeout(uint32_t index, uint32_t us) override {
    abi::VringState state{index, us};
    call(abi::kSetVringBusyloopTimeout, &state, "VHOST_SET_VRING_BUSYLOOP_TIMEOUT");
  }

 private:
  void set_file(unsigned long request, uint32_t index, int fd, const char* what) {
    abi::VringFile file{index, fd};
    call(request, &file, what);
  }
  void call(unsigned long request, void* arg, const char* what) {
    if (::ioctl(fd_.get(), request, arg) != 0) {
      throw VhostKernelError(fmt::format("{}: {}", what, std::strerror(errno)));
    }
  }

  UniqueFd fd_;
};

}  // namespace

std::unique_ptr<VhostNetKernel> open_vhost_net() {
  UniqueFd fd(::open("/dev/vhost-net", O_RDWR | O_CLOEXEC));
  if (!fd) {
    const int err = errno;
    if (err == ENOENT || err == ENODEV) {
      throw UserError("/dev/vhost-net is missing (load the vhost_net module)");
    }
    if (err == EACCES || err == EPERM) {
      throw UserError("no permission to open /dev/vhost-net");
    }
    throw UserError(fmt::format("cannot open /dev/vhost-net: {}", std::strerror(err)));
  }
  return std::make_unique<KernelVhostNet>(std::move(fd));
}

VhostNet::VhostNet(VhostNetOptions options, std::vector<VhostNetPair> pairs,
                   const GuestMemory& memory)
    : options_(std::move(options)),
      memory_(memory),
      control_(options_.name, pairs.size(), [this](uint16_t n) {
        std::lock_guard lock(mutex_);
        set_active_pairs(n);
      }) {
  if (pairs.empty() || pairs.size() > kMaxQueuePairs) {
    throw UserError(
        fmt::format("vhost-net: {} queue pairs (1 to {})", pairs.size(), kMaxQueuePairs));
  }
  kernel_features_ = ~uint64_t{0};
  for (size_t p = 0; p < pairs.size(); ++p) {
    VhostNetPair& pair = pairs[p];
    try {
      pair.kernel->set_owner();
      // Every pair's device is the same kernel's: what all of them offer.
      kernel_features_ &= pair.kernel->get_features();
    } catch (const VhostKernelError& e) {
      throw UserError(fmt::format("vhost-net: {}", e.what()));
    }
    pairs_.push_back({std::move(pair.kernel), std::move(pair.tap), {}});
  }
  if (!(kernel_features_ & feature_bit(VIRTIO_F_VERSION_1))) {
    throw UserError(
        "this kernel's vhost-net does not offer VIRTIO_F_VERSION_1 (Linux 4.0 or "
        "later does)");
  }
  for (size_t i = 0; i < 2 * pairs_.size(); ++i) {
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) throw_errno("eventfd for a vhost-net queue's errors");
    try {
      pairs_[i / 2].kernel->set_vring_err(static_cast<uint32_t>(i % 2), fd.get());
    } catch (const VhostKernelError& e) {
      throw UserError(fmt::format("vhost-net: {}", e.what()));
    }
    error_fds_.push_back(std::move(fd));
  }
  // The driver starts with the first pair (spec §5.1.6.5.5): no frame for the others' rings.
  for (size_t p = 1; p < pairs_.size(); ++p) pairs_[p].tap->set_enabled(false);
  log::debug("{}: vhost-net features {:#x}, {} queue pair(s)", options_.name, kernel_features_,
             pairs_.size());
}

VhostNet::~VhostNet() {
  if (loop_ == nullptr) return;
  try {
    for (const UniqueFd& fd : error_fds_) loop_->remove(fd.get());
  } catch (const std::exception&) {
    // The loop is going away too.
  }
}

void VhostNet::watch(EventLoop& loop) {
  {
    std::lock_guard lock(mutex_);
    loop_ = &loop;
  }
  control_.set_loop(loop);
  for (uint32_t i = 0; i < error_fds_.size(); ++i) {
    loop.add(error_fds_[i].get(), EPOLLIN, [this, i](uint32_t) { queue_error(i); });
  }
  // A running driver reads the status again on the config interrupt.
  pairs_.front().tap->watch_link(loop, [this] {
    VirtioTransport* transport = nullptr;
    {
      std::lock_guard lock(mutex_);
      transport = transport_;
    }
    if (transport != nullptr) transport->signal_config_change();
  });
}

size_t VhostNet::active_pairs() {
  std::lock_guard lock(mutex_);
  return active_pairs_;
}

void VhostNet::queue_error(uint32_t index) {
  uint64_t count = 0;
  if (::read(error_fds_[index].get(), &count, sizeof count) != sizeof count) return;
  VirtioTransport* transport = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (failed_ || !pairs_[index / 2].started[index % 2]) return;
    failed_ = true;
    transport = transport_;
  }
  // The kernel logs the details (vhost: "Unexpected descriptor format", ...).
  // The transport's line names the device; so does ours without one.
  const std::string why =
      fmt::format("the host kernel stopped the {} queue{} on a malformed ring or buffer",
                  index % 2 == 0 ? "receive" : "transmit",
                  pairs_.size() > 1 ? fmt::format(" of pair {}", index / 2) : "");
  if (transport != nullptr) {
    transport->device_failed(why);
  } else {
    log::error("{}: {}; the device needs a reset", options_.name, why);
  }
}

uint32_t VhostNet::device_id() const {
  return VIRTIO_ID_NET;
}

uint64_t VhostNet::device_features() const {
  uint64_t own = feature_bit(VIRTIO_NET_F_MAC) | feature_bit(VIRTIO_NET_F_STATUS) |
                 feature_bit(VIRTIO_NET_F_MTU);
  if (pairs_.size() > 1) own |= feature_bit(VIRTIO_NET_F_CTRL_VQ) | feature_bit(VIRTIO_NET_F_MQ);
  return own | kTapOffloads | (kernel_features_ & feature_bit(VIRTIO_NET_F_MRG_RXBUF));
}

std::vector<uint16_t> VhostNet::queue_max_sizes() const {
  std::vector<uint16_t> sizes(2 * pairs_.size(), kQueueSize);
  if (pairs_.size() > 1) sizes.push_back(kControlQueueSize);
  return sizes;
}

size_t VhostNet::queue_count() const {
  return 2 * pairs_.size() + (pairs_.size() > 1 ? 1 : 0);  // the control queue with MQ
}

uint64_t VhostNet::transport_features() const {
  return kernel_features_;
}

uint32_t VhostNet::config_size() const {
  return net_config_size();
}

void VhostNet::read_config(uint32_t offset, std::span<uint8_t> data) {
  read_net_config(options_.mac, pairs_.size(), options_.mtu, pairs_.front().tap->link_up(), offset,
                  data);
}

uint16_t VhostNet::control_queue() const {
  return net_control_queue_index(pairs_.size(), features_);
}

bool VhostNet::start_queues(VirtioTransport& transport, uint64_t features,
                            std::span<const Virtqueue> queues, std::string& why) {
  std::lock_guard lock(mutex_);
  transport_ = &transport;
  features_ = features;
  if (failed_) {
    why = "the host kernel stopped a queue; the device cannot start";
    return false;
  }
  if (eventfds_.size() != queue_count() || queues.size() != queue_count()) {
    why = "the queues have no eventfds (the machine did not wire them)";
    return false;
  }
  // Without MQ the driver sees one pair, and the control queue (if any) is queue 2.
  const size_t pairs = (features & feature_bit(VIRTIO_NET_F_MQ)) ? pairs_.size() : 1;
  try {
    // Guest RAM as the kernel reaches it: this process's mapping of each writable region.
    // Read-only ones stay out, so a buffer there is a malformed ring, not a write into it.
    std::vector<abi::MemoryRegion> regions;
    for (const GuestMapping& m : memory_.mappings()) {
      if (m.readonly) continue;
      regions.push_back({m.gpa, m.size, reinterpret_cast<uint64_t>(m.host()), 0});
    }
    for (size_t p = 0; p < pairs; ++p) {
      Pair& pair = pairs_[p];
      // What the kernel knows of the driver's features (the offloads are the TAP's). Never
      // VHOST_NET_F_VIRTIO_NET_HDR, which no driver sees: the TAP adds and strips the header.
      pair.kernel->set_features(features & kernel_features_ &
                                ~feature_bit(abi::kNetFeatureVirtioNetHeader));
      pair.kernel->set_mem_table(regions);
      pair.tap->set_offloads(features);
      for (uint32_t ring = 0; ring < 2; ++ring) {
        const size_t i = 2 * p + ring;
        const Virtqueue& q = queues[i];
        if (!q.ready()) continue;
        const auto rings = ring_addresses(memory_, q);
        if (!rings) {
          throw VhostKernelError(fmt::format(
              "queue {}: a ring lies outside writable guest memory or spans regions", i));
        }
        pair.kernel->set_vring_num(ring, q.size());
        pair.kernel->set_vring_base(ring, 0);
        abi::VringAddr addr;
        addr.index = ring;
        addr.desc_user_addr = rings->desc;
        addr.avail_user_addr = rings->avail;
        addr.used_user_addr = rings->used;
        pair.kernel->set_vring_addr(addr);
        pair.kernel->set_vring_call(ring, eventfds_[i].call);
        pair.kernel->set_vring_kick(ring, eventfds_[i].kick);
        if (options_.poll_us > 0) pair.kernel->set_vring_busyloop_timeout(ring, options_.poll_us);
        pair.kernel->set_backend(ring, pair.tap->fd());
        pair.started[ring] = true;
      }
    }
    // The control queue stays here: the loop watches its notify until the device stops.
    const uint16_t control = control_queue();
    const bool control_ready = control < queues.size() && queues[control].ready();
    if (control_ready) {
      control_.start(transport, control, eventfds_[control].kick,
                     (features & feature_bit(VIRTIO_NET_F_MQ)) != 0);
    }
    // Buffers the driver made available before anyone watched the kicks.
    for (uint16_t i = 0; i < 2 * pairs; ++i) {
      if (pairs_[i / 2].started[i % 2]) kick(i);
    }
    if (control_ready) kick(control);
    log::debug("{}: started in the host kernel, features {:#x}{}{}", options_.name, features,
               pairs > 1 ? fmt::format(", {} queue pairs", pairs) : "",
               options_.poll_us > 0
                   ? fmt::format(", its worker polling drained rings up to {} µs", options_.poll_us)
                   : "");
    return true;
  } catch (const VhostKernelError& e) {
    why = e.what();  // the transport's line names the device
    for (uint32_t i = 0; i < queue_count(); ++i) stop_queue(i);
    failed_ = true;  // the transport logs why
    return false;
  }
}

void VhostNet::stop_queue(uint32_t index) {
  // Lock held.
  if (index == control_queue()) return control_.stop();
  if (index >= 2 * pairs_.size()) return;
  Pair& pair = pairs_[index / 2];
  const uint32_t ring = index % 2;
  if (!pair.started[ring]) return;
  pair.started[ring] = false;
  // Detaching the TAP stops the ring; the kernel is then done with it.
  try {
    pair.kernel->set_backend(ring, -1);
    pair.kernel->get_vring_base(ring);
  } catch (const VhostKernelError& e) {
    log::error("{}: stopping queue {}: {}", options_.name, index, e.what());
  }
}

void VhostNet::reset() {
  std::lock_guard lock(mutex_);
  for (uint32_t i = 0; i < queue_count(); ++i) stop_queue(i);
  for (Pair& pair : pairs_) pair.tap->set_offloads(0);
  set_active_pairs(1);
  transport_ = nullptr;
  features_ = 0;
  failed_ = false;  // a reset is how the driver recovers from a stopped queue
}

void VhostNet::queue_reset(uint16_t index) {
  std::lock_guard lock(mutex_);
  stop_queue(index);
}

// ---------------------------------------------------------------------------------------------
// The control queue, on the event loop

void VhostNet::queue_notify(uint16_t index, Virtqueue& queue) {
  // A notify that came as a register write (no ioeventfd caught it): the control queue is
  // served at once, the kernel's rings are kicked.
  if (control_.notify(index, queue)) return;
  ExternalQueueDevice::queue_notify(index, queue);
}

void VhostNet::set_active_pairs(size_t n) {
  // Lock held.
  const size_t old = active_pairs_;
  if (n == old) return;
  log::debug("{}: {} of {} queue pairs in use", options_.name, n, pairs_.size());
  active_pairs_ = n;
  std::vector<std::shared_ptr<TapBackend>> taps;
  for (size_t p = std::min(n, old); p < std::max(n, old); ++p) taps.push_back(pairs_[p].tap);
  // TUNSETQUEUE is the loop thread's to make (a reset comes on a vCPU thread).
  auto apply = [taps = std::move(taps), enabled = n > old] {
    for (const auto& tap : taps) tap->set_enabled(enabled);
  };
  if (loop_ == nullptr) return apply();
  loop_->post(std::move(apply));
}

}  // namespace libvmm
