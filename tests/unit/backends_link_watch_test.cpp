// LinkWatch: rtnetlink's link messages read for one interface, as parsed bytes (malformed ones
// included) and against the kernel, in a network namespace of a child's own.
#include <gtest/gtest.h>
#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/backends/link_watch.hpp"
#include "libvmm/backends/tap_backend.hpp"
#include "libvmm/core/error.hpp"
#include "unit/support/child_process.hpp"
#include "unit/support/loop_thread.hpp"

namespace libvmm {
namespace backends_link_watch_test {

using namespace std::chrono_literals;

// One rtnetlink link message of `type` about interface `index` with `flags`, padded as the
// kernel pads it.
std::vector<uint8_t> link_message(uint16_t type, int index, unsigned flags) {
  std::vector<uint8_t> bytes(NLMSG_SPACE(sizeof(ifinfomsg)));
  nlmsghdr header{};
  header.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg));
  header.nlmsg_type = type;
  ifinfomsg info{};
  info.ifi_index = index;
  info.ifi_flags = flags;
  std::memcpy(bytes.data(), &header, sizeof header);
  std::memcpy(bytes.data() + NLMSG_HDRLEN, &info, sizeof info);
  return bytes;
}

std::vector<uint8_t> operator+(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(LinkStateIn, ReadsTheInterfacesFlags) {
  EXPECT_EQ(link_state_in(link_message(RTM_NEWLINK, 4, IFF_UP | IFF_RUNNING), 4), true);
  EXPECT_EQ(link_state_in(link_message(RTM_NEWLINK, 4, IFF_BROADCAST), 4), false);
  EXPECT_EQ(link_state_in(link_message(RTM_DELLINK, 4, IFF_UP), 4), false) << "gone: down";
}

TEST(LinkStateIn, OnlyTheInterfaceAskedAboutAndTheLastWord) {
  EXPECT_EQ(link_state_in(link_message(RTM_NEWLINK, 5, IFF_UP), 4), std::nullopt);
  EXPECT_EQ(link_state_in(link_message(RTM_NEWADDR, 4, IFF_UP), 4), std::nullopt);
  EXPECT_EQ(link_state_in({}, 4), std::nullopt);
  const auto datagram = link_message(RTM_NEWLINK, 4, IFF_UP) + link_message(RTM_NEWLINK, 7, 0) +
                        link_message(RTM_NEWLINK, 4, 0);
  EXPECT_EQ(link_state_in(datagram, 4), false);
  EXPECT_EQ(link_state_in(datagram, 7), false);
}

// What the kernel would never send still ends the walk without reading past the datagram.
TEST(LinkStateIn, MalformedMessagesEndTheWalk) {
  const auto up = link_message(RTM_NEWLINK, 4, IFF_UP);
  // Cut short: the header says more than there is.
  EXPECT_EQ(link_state_in(std::span(up.data(), up.size() - 1), 4), std::nullopt);
  EXPECT_EQ(link_state_in(std::span(up.data(), sizeof(nlmsghdr) - 1), 4), std::nullopt);
  // A length shorter than a header would never advance: the walk stops.
  auto zero = link_message(RTM_NEWLINK, 4, IFF_UP) + up;
  const uint32_t nothing = 0;
  std::memcpy(zero.data(), &nothing, sizeof nothing);
  EXPECT_EQ(link_state_in(zero, 4), std::nullopt);
  // A link message too short for its ifinfomsg is skipped, the next one read.
  auto runt = link_message(RTM_NEWLINK, 4, 0);
  const uint32_t header_only = NLMSG_HDRLEN;
  std::memcpy(runt.data(), &header_only, sizeof header_only);
  runt.resize(NLMSG_HDRLEN);
  EXPECT_EQ(link_state_in(runt + up, 4), true);
  // A huge length: stops.
  auto huge = up;
  const uint32_t big = 0xffffffff;
  std::memcpy(huge.data(), &big, sizeof big);
  EXPECT_EQ(link_state_in(huge, 4), std::nullopt);
}

TEST(LinkWatch, AnInterfaceThatDoesNotExist) {
  try {
    LinkWatch watch("nosuchif0");
    FAIL() << "no error";
  } catch (const SystemError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("nosuchif0: SIOCGIFINDEX", 0), 0u) << e.what();
  }
}

// Sets interface `name` up or down, as `ip link set NAME up|down` does.
bool set_up(const std::string& name, bool up) {
  const UniqueFd probe(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), sizeof request.ifr_name - 1);
  if (!probe || ::ioctl(probe.get(), SIOCGIFFLAGS, &request) != 0) return false;
  request.ifr_flags =
      static_cast<short>(up ? request.ifr_flags | IFF_UP : request.ifr_flags & ~IFF_UP);
  return ::ioctl(probe.get(), SIOCSIFFLAGS, &request) == 0;
}

bool wait_until(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Runs `scenario` in a child with a network namespace of its own (every interface it touches
// lives and dies there).
void in_own_network_namespace(const std::function<const char*()>& scenario) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace";
  test::expect_in_child([&]() -> const char* {
    return ::unshare(CLONE_NEWNET) == 0 ? scenario() : "unshare(CLONE_NEWNET)";
  });
}

// A new namespace's loopback starts down: up and down again, each seen once.
TEST(LinkWatch, FollowsAnInterfaceGoingUpAndDown) {
  in_own_network_namespace([]() -> const char* {
    LinkWatch watch("lo");
    if (watch.up()) return "a new namespace's lo is up";
    std::atomic<int> changes{0};
    test::LoopThread io;
    io.call([&] { watch.start(io.loop, [&] { ++changes; }); });
    if (!set_up("lo", true)) return "cannot set lo up";
    if (!wait_until([&] { return changes == 1; }) || !watch.up()) return "up not seen";
    if (!set_up("lo", false)) return "cannot set lo down";
    if (!wait_until([&] { return changes == 2; }) || watch.up()) return "down not seen";
    std::this_thread::sleep_for(50ms);
    io.call([] {});
    return changes == 2 ? nullptr : "a change too many";
  });
}

// A TAP: down when made, so the guest's link starts down; the first queue's backend follows it,
// the other queues' do not (one link per interface). A line at the start (with the command
// that sets it up) and at each change.
TEST(LinkWatch, TheTapsFirstQueueFollowsItsInterface) {
  in_own_network_namespace([]() -> const char* {
    std::vector<std::unique_ptr<TapBackend>> queues;
    try {
      queues = TapBackend::open_queues("lw-tap0", 2);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      return "cannot make a TAP";
    }
    if (queues[0]->link_up()) return "a new TAP is up";
    if (!queues[1]->link_up()) return "the second queue has a link of its own";
    std::atomic<int> changes{0};
    test::LoopThread io;
    testing::internal::CaptureStderr();
    io.call([&] {
      queues[0]->watch_link(io.loop, [&] { ++changes; });
      queues[1]->watch_link(io.loop, [] { std::abort(); });
    });
    if (!set_up("lw-tap0", true)) return "cannot set the TAP up";
    if (!wait_until([&] { return changes == 1; }) || !queues[0]->link_up()) return "up not seen";
    if (!set_up("lw-tap0", false)) return "cannot set the TAP down";
    if (!wait_until([&] { return changes == 2; }) || queues[0]->link_up()) return "down not seen";
    const std::string said = testing::internal::GetCapturedStderr();
    const std::string expected =
        "vmm: TAP device 'lw-tap0' is down, and so is the guest's link until it is up: ip link "
        "set lw-tap0 up\n"
        "vmm: TAP device 'lw-tap0' is up, and so is the guest's link\n"
        "vmm: TAP device 'lw-tap0' is down, and so is the guest's link\n";
    if (said != expected) {
      std::fprintf(stderr, "child: said:\n%s", said.c_str());
      return "not the lines expected";
    }
    return nullptr;
  });
}

}  // namespace backends_link_watch_test
}  // namespace libvmm
