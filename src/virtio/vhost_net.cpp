// virtio-net served by the host kernel's vhost-net (see vhost_net.hpp).
#include "libvmm/virtio/vhost_net.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "libvmm/backends/net_abi.hpp"
#include "libvmm/backends/tap_backend.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

namespace abi = vhost_kernel;

constexpr uint64_t bit(unsigned n) {
  return 1ull << n;
}
// The TAP carries the offloads in the 12-byte header every frame has; the kernel only needs to
// offer mergeable receive buffers for the driver to use them.
constexpr uint64_t kTapOffloads = bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) |
                                  bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) |
                                  bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6);
constexpr uint32_t kConfigSize = offsetof(virtio_net_config, mtu) + sizeof(uint16_t);
constexpr uint32_t kQueues = 2;  // receive, transmit

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

VhostNet::VhostNet(VhostNetOptions options, std::unique_ptr<VhostNetKernel> kernel,
                   std::shared_ptr<TapBackend> tap, const GuestMemory& memory)
    : options_(std::move(options)),
      kernel_(std::move(kernel)),
      tap_(std::move(tap)),
      memory_(memory) {
  try {
    kernel_->set_owner();
    kernel_features_ = kernel_->get_features();
  } catch (const VhostKernelError& e) {
    throw UserError(fmt::format("vhost-net: {}", e.what()));
  }
  if (!(kernel_features_ & bit(VIRTIO_F_VERSION_1))) {
    throw UserError(
        "this kernel's vhost-net does not offer VIRTIO_F_VERSION_1 (Linux 4.0 or "
        "later does)");
  }
  for (UniqueFd& fd : error_fds_) {
    fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) throw_errno("eventfd for a vhost-net queue's errors");
  }
  for (uint32_t i = 0; i < kQueues; ++i) {
    try {
      kernel_->set_vring_err(i, error_fds_[i].get());
    } catch (const VhostKernelError& e) {
      throw UserError(fmt::format("vhost-net: {}", e.what()));
    }
  }
  log::debug("{}: vhost-net features {:#x}", options_.name, kernel_features_);
}

VhostNet::~VhostNet() {
  if (loop_ == nullptr) return;
  for (const UniqueFd& fd : error_fds_) {
    try {
      loop_->remove(fd.get());
    } catch (const std::exception&) {
      // The loop is going away too.
    }
  }
}

void VhostNet::watch(EventLoop& loop) {
  loop_ = &loop;
  for (uint32_t i = 0; i < kQueues; ++i) {
    loop.add(error_fds_[i].get(), EPOLLIN, [this, i](uint32_t) { queue_error(i); });
  }
}

void VhostNet::queue_error(uint32_t index) {
  uint64_t count = 0;
  if (::read(error_fds_[index].get(), &count, sizeof count) != sizeof count) return;
  VirtioTransport* transport = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (failed_ || !started_[index]) return;
    failed_ = true;
    transport = transport_;
  }
  // The kernel logs the details (vhost: "Unexpected descriptor format", ...).
  const std::string why =
      fmt::format("{}: the host kernel stopped the {} queue on a malformed ring or buffer",
                  options_.name, index == 0 ? "receive" : "transmit");
  if (transport != nullptr) {
    transport->device_failed(why);
  } else {
    log::error("{}; the device needs a reset", why);
  }
}

uint32_t VhostNet::device_id() const {
  return VIRTIO_ID_NET;
}

uint64_t VhostNet::device_features() const {
  const uint64_t own = bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS) | bit(VIRTIO_NET_F_MTU);
  return own | kTapOffloads | (kernel_features_ & bit(VIRTIO_NET_F_MRG_RXBUF));
}

uint64_t VhostNet::transport_features() const {
  return kernel_features_;
}

uint32_t VhostNet::config_size() const {
  return kConfigSize;
}

void VhostNet::read_config(uint32_t offset, std::span<uint8_t> data) {
  virtio_net_config config{};
  std::memcpy(config.mac, options_.mac.data(), options_.mac.size());
  config.status = VIRTIO_NET_S_LINK_UP;
  config.max_virtqueue_pairs = 1;
  config.mtu = options_.mtu;
  // The transport checked the range against config_size().
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&config) + offset, data.size());
}

bool VhostNet::start_queues(VirtioTransport& transport, uint64_t features,
                            std::span<const Virtqueue> queues, std::string& why) {
  std::lock_guard lock(mutex_);
  transport_ = &transport;
  if (failed_) {
    why =
        fmt::format("{}: the host kernel stopped a queue; the device cannot start", options_.name);
    return false;
  }
  if (eventfds_.size() != kQueues || queues.size() != kQueues) {
    why = fmt::format("{}: the queues have no eventfds (the machine did not wire them)",
                      options_.name);
    return false;
  }
  try {
    // What the kernel knows of the driver's features (the offloads are the TAP's). Never
    // VHOST_NET_F_VIRTIO_NET_HDR, which no driver sees: the TAP adds and strips the header.
    kernel_->set_features(features & kernel_features_ & ~bit(abi::kNetFeatureVirtioNetHeader));
    // Guest RAM as the kernel reaches it: this process's mapping of each writable region.
    // Read-only ones stay out, so a buffer there is a malformed ring, not a write into it.
    std::vector<abi::MemoryRegion> regions;
    for (const GuestMapping& m : memory_.mappings()) {
      if (m.readonly) continue;
      regions.push_back({m.gpa, m.size, reinterpret_cast<uint64_t>(m.host()), 0});
    }
    kernel_->set_mem_table(regions);
    tap_->set_offloads(features);

    for (uint32_t i = 0; i < kQueues; ++i) {
      const Virtqueue& q = queues[i];
      if (!q.ready()) continue;
      const auto rings = ring_addresses(memory_, q);
      if (!rings) {
        throw VhostKernelError(
            fmt::format("queue {}: a ring lies outside writable guest memory or spans regions", i));
      }
      kernel_->set_vring_num(i, q.size());
      kernel_->set_vring_base(i, 0);
      abi::VringAddr addr;
      addr.index = i;
      addr.desc_user_addr = rings->desc;
      addr.avail_user_addr = rings->avail;
      addr.used_user_addr = rings->used;
      kernel_->set_vring_addr(addr);
      kernel_->set_vring_call(i, eventfds_[i].call);
      kernel_->set_vring_kick(i, eventfds_[i].kick);
      if (options_.poll_us > 0) kernel_->set_vring_busyloop_timeout(i, options_.poll_us);
      kernel_->set_backend(i, tap_->fd());
      started_[i] = true;
    }
    // Buffers the driver made available before the kernel watched the kick.
    for (uint16_t i = 0; i < kQueues; ++i) {
      if (started_[i]) kick(i);
    }
    log::debug("{}: started in the host kernel, features {:#x}{}", options_.name, features,
               options_.poll_us > 0
                   ? fmt::format(", its worker polling drained rings up to {} µs", options_.poll_us)
                   : "");
    return true;
  } catch (const VhostKernelError& e) {
    why = fmt::format("{}: {}", options_.name, e.what());
    for (uint32_t i = 0; i < kQueues; ++i) stop_queue(i);
    failed_ = true;  // the transport logs why
    return false;
  }
}

void VhostNet::stop_queue(uint32_t index) {
  // Lock held. Detaching the TAP stops the ring; the kernel is then done with it.
  if (index >= kQueues || !started_[index]) return;
  started_[index] = false;
  try {
    kernel_->set_backend(index, -1);
    kernel_->get_vring_base(index);
  } catch (const VhostKernelError& e) {
    log::error("{}: stopping queue {}: {}", options_.name, index, e.what());
  }
}

void VhostNet::reset() {
  std::lock_guard lock(mutex_);
  for (uint32_t i = 0; i < kQueues; ++i) stop_queue(i);
  tap_->set_offloads(0);
  transport_ = nullptr;
  failed_ = false;  // a reset is how the driver recovers from a stopped queue
}

void VhostNet::queue_reset(uint16_t index) {
  std::lock_guard lock(mutex_);
  stop_queue(index);
}

}  // namespace libvmm
