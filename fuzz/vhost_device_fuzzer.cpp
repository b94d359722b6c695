// vmm-device's side of vhost-user, whole: a hostile front-end's message stream (any request,
// flags and payload, with memfd, eventfd or no descriptors) into VhostUserBackend serving a
// VirtioBlock on a small temporary image, (the input's first byte odd) a VirtioNet on an
// in-memory host that always has a frame to give (with bit 7 set too: two queue pairs, each on
// such a host, the pairs in use following the rings the front-end enables and disables), or
// (its bit 1 set) a VirtioSound with no
// host audio (control requests and I/O messages, unpaced), with the shared "guest RAM" (a memfd the
// input also fills: rings and requests) that SET_MEM_TABLE hands over. Every message ends as
// handled or as the connection closed with a log line; nothing may crash, hang or touch memory
// outside the mapped regions (ASan). The stream ends with the front-end's end of the socket shut,
// after which the back-end must have closed the connection.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "fuzz_input.hpp"
#include "libvmm/backends/net_backend.hpp"
#include "libvmm/backends/sound_backend.hpp"
#include "libvmm/backends/vhost_user.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/block.hpp"
#include "libvmm/virtio/net.hpp"
#include "libvmm/virtio/sound.hpp"
#include "libvmm/virtio/vhost_user_backend.hpp"

using namespace libvmm;

namespace {

constexpr uint64_t kRamSize = 1 << 20;
constexpr uint64_t kImageSize = 64 << 10;

// The device, opened once: each input is a new connection to it (the back-end resets it when
// the connection ends, as between two front-ends of vmm-device).
VirtioBlock& device() {
  static VirtioBlock* block = [] {
    char path[] = "/tmp/vhost_device_fuzzer.XXXXXX";
    const int fd = ::mkstemp(path);
    fuzz::check(fd >= 0 && ::ftruncate(fd, kImageSize) == 0);
    ::close(fd);
    auto* d = new VirtioBlock(parse_disk_spec(std::string(path) + ",iothread=off"));
    ::unlink(path);
    log::set_level(log::Level::error);
    return d;
  }();
  return *block;
}

// The network device's host: receive always has a frame (up to `budget` per input, a header
// and a frame of `frame_len` bytes); transmitted frames are dropped.
class EndlessHost final : public NetBackend {
 public:
  ssize_t receive(std::span<uint8_t> buffer) override {
    if (budget == 0) return 0;
    --budget;
    const size_t n = std::min<size_t>(frame_len, buffer.size());
    std::fill_n(buffer.begin(), n, uint8_t{0x5a});
    if (n >= VirtioNet::kHeaderSize) std::fill_n(buffer.begin(), VirtioNet::kHeaderSize, 0);
    return static_cast<ssize_t>(n);
  }
  bool send(std::span<const iovec>) override { return true; }
  void set_offloads(uint64_t) override {}
  void start(EventLoop&, std::function<void()>) override {}
  void pause_receive() override {}
  void resume_receive() override {}
  std::string describe() const override { return "fuzz host"; }

  int budget = 0;
  size_t frame_len = 60;
};

std::shared_ptr<EndlessHost>& host() {
  static auto h = std::make_shared<EndlessHost>();
  return h;
}

VirtioNet& net_device() {
  static VirtioNet* net = new VirtioNet(host(), MacAddress{0x52, 0x54, 0, 1, 2, 3});
  return *net;
}

VirtioSound& sound_device() {
  static VirtioSound* sound = new VirtioSound(std::make_unique<NullSoundBackend>());
  return *sound;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const uint8_t selector = in.u8();
  host()->budget = 16;
  host()->frame_len = 14 + (selector >> 1) * 64u;  // runts to 8 KiB frames
  auto second = std::make_shared<EndlessHost>();
  second->budget = host()->budget;
  second->frame_len = host()->frame_len;

  // Guest RAM as the front-end shares it, its first bytes from the input.
  UniqueFd ram(::memfd_create("fuzz-ram", MFD_CLOEXEC));
  fuzz::check(ram.valid() && ::ftruncate(ram.get(), kRamSize) == 0);
  const auto image = in.take(in.u16() % 8192);
  if (!image.empty()) fuzz::check(::pwrite(ram.get(), image.data(), image.size(), 0) > 0);
  UniqueFd event(::eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));

  int pair[2];
  fuzz::check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  vhost::Channel front(UniqueFd(pair[0]), "fuzz back-end");
  EventLoop loop;
  // Two pairs: a device of this input's, started on its loop (pairs are attached there).
  VirtioNet two_pairs({host(), second}, MacAddress{0x52, 0x54, 0, 1, 2, 4});
  two_pairs.start(loop);
  VirtioDevice& served = (selector & 0x81) == 0x81 ? static_cast<VirtioDevice&>(two_pairs)
                         : (selector & 1)          ? static_cast<VirtioDevice&>(net_device())
                         : (selector & 2)          ? static_cast<VirtioDevice&>(sound_device())
                                                   : device();
  bool closed = false;
  VhostUserBackend backend(served, loop, UniqueFd(pair[1]), "fuzz front-end",
                           [&](const std::string&) {
                             closed = true;
                             loop.stop();
                           });

  for (int round = 0; round < 24 && !in.empty(); ++round) {
    vhost::Message m;
    const uint8_t which = in.u8();
    // Mostly requests the back-end knows, with the version and flags a front-end sends.
    m.request = which < 200 ? which % 26 : in.u8();
    m.flags = in.u8() < 224 ? vhost::kVersion | (in.u8() & vhost::kFlagNeedReply) : in.u8();
    const auto bytes = in.take(in.u16() % 300);
    m.payload.assign(bytes.begin(), bytes.end());
    std::vector<int> fds;
    const uint8_t fd_kind = in.u8();
    for (size_t i = 0; i < fd_kind % 4; ++i)
      fds.push_back((fd_kind & 0x10) ? event.get() : ram.get());
    try {
      front.send(m, fds);
    } catch (const vhost::VhostError&) {
      break;  // the back-end closed the connection already
    }
  }
  ::shutdown(front.fd(), SHUT_WR);
  loop.run();  // until the back-end closes the connection: an error, or the end of the stream
  fuzz::check(closed && backend.closed());
  return 0;
}
