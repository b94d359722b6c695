// The vhost-user message layer: framing with descriptors over a real socket pair, and the
// strict decoders of both directions against each class of malformed message.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/backends/vhost_user.hpp"

namespace libvmm::vhost {
namespace backends_vhost_user_test {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const VhostError& e) {
    return e.what();
  }
  return "(no error)";
}

Message with_fds(Message m, size_t count) {
  for (size_t i = 0; i < count; ++i) m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  return m;
}

std::vector<MemRegion> two_regions() {
  return {{0x0, 0x10000, 0x7f0000000000, 0}, {0x100000, 0x10000, 0x7f0000100000, 0x10000}};
}

TEST(VhostUserDecode, AcceptsWellFormedRequests) {
  auto d = decode_request(Message::with_u64(Request::set_features, 0x1234), 2);
  EXPECT_EQ(d.u64, 0x1234u);
  d = decode_request(Message::with_state(Request::set_vring_num, {1, 256}), 2);
  EXPECT_EQ(d.state.index, 1u);
  EXPECT_EQ(d.state.num, 256u);
  VringAddr addr;
  addr.index = 1;
  addr.desc = 0x10;
  addr.used = 0x20;
  addr.avail = 0x30;
  d = decode_request(Message::with_addr(addr), 2);
  EXPECT_EQ(d.addr.desc, 0x10u);
  EXPECT_EQ(d.addr.used, 0x20u);
  EXPECT_EQ(d.addr.avail, 0x30u);
  d = decode_request(with_fds(Message::with_u64(Request::set_vring_kick, 1), 1), 2);
  EXPECT_EQ(d.queue_index(), 1u);
  EXPECT_TRUE(d.has_fd());
  d = decode_request(Message::with_u64(Request::set_vring_call, 1 | kVringNoFd), 2);
  EXPECT_FALSE(d.has_fd());
  d = decode_request(with_fds(Message::with_mem_table(two_regions()), 2), 2);
  ASSERT_EQ(d.regions.size(), 2u);
  EXPECT_EQ(d.regions[1].mmap_offset, 0x10000u);
  Message ack = Message::make(Request::set_owner, kVersion | kFlagNeedReply);
  EXPECT_TRUE(decode_request(ack, 2).need_reply);
}

TEST(VhostUserDecode, RefusesBadSizes) {
  Message m = Message::with_u64(Request::set_features, 1);
  m.payload.pop_back();
  EXPECT_EQ(error_of([&] { decode_request(m, 2); }),
            "SET_FEATURES with a 7-byte payload (expected 8)");
  m = Message::with_state(Request::set_vring_num, {0, 1});
  m.payload.push_back(0);
  EXPECT_EQ(error_of([&] { decode_request(m, 2); }),
            "SET_VRING_NUM with a 9-byte payload (expected 8)");
  m = Message::make(Request::get_features);
  m.payload.assign(8, 0);
  EXPECT_EQ(error_of([&] { decode_request(m, 2); }),
            "GET_FEATURES with a 8-byte payload (expected 0)");
  // A memory table whose count disagrees with its payload.
  m = with_fds(Message::with_mem_table(two_regions()), 2);
  m.payload.resize(m.payload.size() - 32);
  EXPECT_EQ(error_of([&] { decode_request(m, 2); }),
            "SET_MEM_TABLE with a 40-byte payload (expected 72)");
  // Config larger than a config space.
  ConfigSpace c;
  c.data.assign(16, 0);
  c.offset = 250;
  EXPECT_NE(error_of([&] {
              decode_request(Message::with_config(Request::get_config, c), 1);
            }).find("offset 250"),
            std::string::npos);
  // Headers.
  EXPECT_EQ(check_header(1, 0x2, 0, false), "GET_FEATURES: protocol version 2 (expected 1)");
  EXPECT_EQ(check_header(1, kVersion, kMaxPayload + 1, false),
            "GET_FEATURES with a 4097-byte payload (at most 4096)");
  EXPECT_NE(check_header(1, kVersion, 8, true), "");                // a reply without its flag
  EXPECT_NE(check_header(1, kVersion | kFlagReply, 8, false), "");  // a request with it
  EXPECT_EQ(check_header(1, kVersion | kFlagReply, 8, true), "");
}

TEST(VhostUserDecode, RefusesTooManyRegions) {
  std::vector<MemRegion> regions;
  for (uint64_t i = 0; i < kMaxRegions + 1; ++i) {
    regions.push_back({i << 20, 0x1000, 0x7f0000000000 + (i << 20), 0});
  }
  const Message m = with_fds(Message::with_mem_table(regions), kMaxFds);
  EXPECT_EQ(error_of([&] { decode_request(m, 2); }), "SET_MEM_TABLE with 9 regions (at most 8)");
  EXPECT_EQ(error_of([&] { decode_request(Message::with_mem_table({}), 2); }),
            "SET_MEM_TABLE with no regions");
}

TEST(VhostUserDecode, RefusesUnknownRequests) {
  Message m;
  m.request = 999;
  EXPECT_EQ(error_of([&] { decode_request(m, 2); }), "unsupported request request 999");
  m.request = static_cast<uint32_t>(Request::set_log_base);
  m.payload.assign(8, 0);
  EXPECT_EQ(error_of([&] { decode_request(m, 2); }), "unsupported request SET_LOG_BASE");
}

TEST(VhostUserDecode, RefusesMissingOrExtraDescriptors) {
  EXPECT_EQ(error_of([&] { decode_request(Message::with_u64(Request::set_vring_kick, 0), 2); }),
            "SET_VRING_KICK with 0 file descriptor(s) (expected 1)");
  EXPECT_EQ(error_of([&] {
              decode_request(with_fds(Message::with_u64(Request::set_vring_call, kVringNoFd), 1),
                             2);
            }),
            "SET_VRING_CALL with 1 file descriptor(s) (expected 0)");
  EXPECT_EQ(
      error_of([&] { decode_request(with_fds(Message::with_mem_table(two_regions()), 1), 2); }),
      "SET_MEM_TABLE with 1 file descriptor(s) (expected 2)");
  EXPECT_EQ(error_of([&] { decode_request(with_fds(Message::make(Request::set_owner), 1), 2); }),
            "SET_OWNER with 1 file descriptor(s) (expected 0)");
  EXPECT_EQ(error_of([&] {
              decode_request(with_fds(Message::with_u64(Request::set_vring_kick, 1 << 9), 1), 2);
            }),
            "SET_VRING_KICK with unknown bits 0x200");
}

TEST(VhostUserDecode, RefusesQueueIndicesOutOfRange) {
  EXPECT_EQ(error_of([&] {
              decode_request(Message::with_state(Request::set_vring_num, {2, 8}), 2);
            }),
            "SET_VRING_NUM for queue 2, but the device has 2 queue(s)");
  VringAddr addr;
  addr.index = 7;
  EXPECT_EQ(error_of([&] { decode_request(Message::with_addr(addr), 2); }),
            "SET_VRING_ADDR for queue 7, but the device has 2 queue(s)");
  EXPECT_EQ(error_of([&] {
              decode_request(with_fds(Message::with_u64(Request::set_vring_kick, 255), 1), 2);
            }),
            "SET_VRING_KICK for queue 255, but the device has 2 queue(s)");
}

TEST(VhostUserRegions, RefusesOverlapsAndRingsOutside) {
  auto regions = two_regions();
  regions[1].gpa = 0x8000;  // inside region 0's guest-physical range
  EXPECT_EQ(error_of([&] { decode_request(with_fds(Message::with_mem_table(regions), 2), 2); }),
            "memory regions 0 and 1 overlap in guest-physical memory");
  regions = two_regions();
  regions[1].user_addr = regions[0].user_addr + 0xffff;
  EXPECT_EQ(error_of([&] { RegionTable{regions}; }),
            "memory regions 0 and 1 overlap in user addresses");
  regions = two_regions();
  regions[0].gpa = UINT64_MAX - 10;
  EXPECT_EQ(error_of([&] { RegionTable{regions}; }),
            "memory region 0 wraps around the address space");

  const RegionTable table(two_regions());
  VringAddr addr;
  addr.index = 0;
  addr.desc = 0x7f0000000000;
  addr.avail = 0x7f0000001000;
  addr.used = 0x7f0000100000;
  const VringAddr gpa = table.rings_to_gpa(addr, 256);
  EXPECT_EQ(gpa.desc, 0u);
  EXPECT_EQ(gpa.avail, 0x1000u);
  EXPECT_EQ(gpa.used, 0x100000u);
  // A used ring that runs past its region's end.
  addr.used = 0x7f0000100000 + 0x10000 - 8;
  EXPECT_EQ(error_of([&] { table.rings_to_gpa(addr, 256); }),
            "queue 0: the used ring at 0x7f000010fff8 (2054 bytes) is not inside the memory table");
  // A descriptor table outside every region.
  addr.used = 0x7f0000100000;
  addr.desc = 0x1000;
  EXPECT_NE(error_of([&] { table.rings_to_gpa(addr, 256); }).find("descriptor table"),
            std::string::npos);
}

TEST(VhostUserDecode, RepliesAreCheckedAgainstTheRequest) {
  Message reply = Message::with_u64(Request::get_features, 42);
  reply.flags |= kFlagReply;
  EXPECT_EQ(decode_reply_u64(reply, Request::get_features), 42u);
  EXPECT_EQ(error_of([&] { decode_reply_u64(reply, Request::get_protocol_features); }),
            "GET_FEATURES in reply to GET_PROTOCOL_FEATURES");
  Message extra = with_fds(Message::with_u64(Request::get_features, 1), 1);
  EXPECT_EQ(error_of([&] { decode_reply_u64(extra, Request::get_features); }),
            "GET_FEATURES with 1 file descriptor(s) (expected 0)");
  Message nack = Message::with_u64(Request::set_mem_table, 1);
  EXPECT_EQ(error_of([&] { decode_reply_ack(nack, Request::set_mem_table); }),
            "the back-end refused SET_MEM_TABLE (status 1)");
  Message state = Message::with_state(Request::get_vring_base, {1, 5});
  EXPECT_EQ(decode_reply_state(state, Request::get_vring_base, 1).num, 5u);
  EXPECT_EQ(error_of([&] { decode_reply_state(state, Request::get_vring_base, 0); }),
            "GET_VRING_BASE reply for queue 1 (asked for queue 0)");
  ConfigSpace c;
  c.data.assign(8, 7);
  Message config = Message::with_config(Request::get_config, c);
  EXPECT_EQ(decode_reply_config(config, 0, 8).data, std::vector<uint8_t>(8, 7));
  EXPECT_NE(error_of([&] { decode_reply_config(config, 0, 60); }), "(no error)");
}

TEST(VhostUserDecode, SetBackendReqFdCarriesOneDescriptor) {
  const auto d = decode_request(with_fds(Message::make(Request::set_backend_req_fd), 1), 2);
  EXPECT_EQ(d.request, Request::set_backend_req_fd);
  EXPECT_EQ(error_of([&] { decode_request(Message::make(Request::set_backend_req_fd), 2); }),
            "SET_BACKEND_REQ_FD with 0 file descriptor(s) (expected 1)");
}

TEST(VhostUserDecode, TakesOnlyAConfigChangeFromTheBackend) {
  Message change;
  change.request = static_cast<uint32_t>(BackendRequest::config_change_msg);
  EXPECT_EQ(decode_backend_request(change), BackendRequest::config_change_msg);
  Message with_payload = Message();
  with_payload.request = change.request;
  with_payload.payload.assign(8, 0);
  EXPECT_EQ(error_of([&] { decode_backend_request(with_payload); }),
            "CONFIG_CHANGE_MSG with a 8-byte payload (expected 0)");
  Message change_with_fd;
  change_with_fd.request = change.request;
  change_with_fd = with_fds(std::move(change_with_fd), 1);
  EXPECT_EQ(error_of([&] { decode_backend_request(change_with_fd); }),
            "CONFIG_CHANGE_MSG with 1 file descriptor(s) (expected 0)");
  // Requests that need features this front-end does not negotiate, and unknown ones.
  Message iotlb;
  iotlb.request = static_cast<uint32_t>(BackendRequest::iotlb_msg);
  EXPECT_EQ(error_of([&] { decode_backend_request(iotlb); }),
            "unsupported IOTLB_MSG from the back-end");
  Message unknown;
  unknown.request = 77;
  EXPECT_EQ(error_of([&] { decode_backend_request(unknown); }),
            "unsupported back-end request 77 from the back-end");
  // The front-end's answer, and a back-end channel names its messages as back-end requests.
  const Message ack = Message::backend_ack(BackendRequest::config_change_msg, 0);
  EXPECT_EQ(ack.flags, kVersion | kFlagReply);
  EXPECT_EQ(ack.payload.size(), 8u);
  EXPECT_EQ(check_header(2, kVersion | kFlagReply, 0, false, true),
            "CONFIG_CHANGE_MSG with the reply flag where a request was expected");
}

TEST(VhostUserChannel, CarriesMessagesWithDescriptors) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  Channel a(UniqueFd(pair[0]), "peer a");
  Channel b(UniqueFd(pair[1]), "peer b");
  const UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  const int fd = event.get();
  a.send(Message::with_u64(Request::set_vring_kick, 1), std::span(&fd, 1));
  Message got = b.receive(1000, false);
  EXPECT_EQ(got.request, static_cast<uint32_t>(Request::set_vring_kick));
  ASSERT_EQ(got.fds.size(), 1u);
  // The received descriptor is the same eventfd.
  const uint64_t one = 1;
  ASSERT_EQ(::write(got.fds[0].get(), &one, sizeof one), 8);
  uint64_t count = 0;
  ASSERT_EQ(::read(fd, &count, sizeof count), 8);
  EXPECT_EQ(count, 1u);

  // A request where a reply is expected, a timeout, a hang-up mid-message.
  a.send(Message::make(Request::get_features));
  EXPECT_EQ(error_of([&] { b.receive(1000, true); }),
            "peer b: GET_FEATURES without the reply flag where a reply was expected");
  EXPECT_EQ(error_of([&] { b.receive(10, true); }), "peer b did not answer within 10 ms");
  const uint32_t partial[3] = {1, kVersion | kFlagReply, 8};
  ASSERT_EQ(::write(a.fd(), partial, sizeof partial), 12);
  ASSERT_EQ(::shutdown(a.fd(), SHUT_WR), 0);
  EXPECT_EQ(error_of([&] { b.receive(1000, true); }), "peer b closed the connection");
}

TEST(VhostUserChannel, SendingWithoutWaitingStopsWhereThePeerStoppedReading) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  Channel a(UniqueFd(pair[0]), "peer a");
  Channel b(UniqueFd(pair[1]), "peer b");  // never reads until the end
  const Message enable = Message::with_state(Request::set_vring_enable, {2, 1});
  std::string error;
  int sent = 0;
  for (; sent < 1000000 && error.empty(); ++sent) {
    error = error_of([&] { a.send_without_waiting(enable); });
    if (error == "(no error)") error.clear();
  }
  EXPECT_LT(sent, 1000000);  // the socket's buffer, not the peer, set the bound
  EXPECT_EQ(error, "peer a is not reading its socket: SET_VRING_ENABLE could not be sent whole");
  // What went whole is there to read.
  const Message got = b.receive(1000, false);
  EXPECT_EQ(got.request, static_cast<uint32_t>(Request::set_vring_enable));
}

// A peer that sends its reply a byte at a time, each well within the timeout, still has one
// timeout for the whole message: a slow back-end cannot hold a vCPU for a timeout per byte.
TEST(VhostUserChannel, AReplyTrickledByteByByteHasOneDeadline) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  const UniqueFd a(pair[0]);
  Channel b(UniqueFd(pair[1]), "peer b");
  const Message reply = [] {
    Message m = Message::with_u64(Request::get_features, 1);
    m.flags = kVersion | kFlagReply;
    return m;
  }();
  const uint32_t header[3] = {reply.request, reply.flags,
                              static_cast<uint32_t>(reply.payload.size())};
  std::vector<uint8_t> bytes(sizeof header + reply.payload.size());
  std::memcpy(bytes.data(), header, sizeof header);
  std::memcpy(bytes.data() + sizeof header, reply.payload.data(), reply.payload.size());
  // 20 bytes 40 ms apart: 760 ms at the least for the whole message.
  std::thread trickle([&] {
    for (const uint8_t byte : bytes) {
      if (::send(a.get(), &byte, 1, MSG_NOSIGNAL) != 1) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
    }
  });
  EXPECT_EQ(error_of([&] { b.receive(200, true); }), "peer b did not answer within 200 ms");
  trickle.join();
}

// Sending waits for room in the socket only as long as it was given.
TEST(VhostUserChannel, SendingWaitsForRoomOnlyUntilItsTimeout) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  Channel a(UniqueFd(pair[0]), "peer a");
  const UniqueFd b(pair[1]);  // never reads
  Message big = Message::make(Request::set_config);
  big.payload.assign(8 * 1024 * 1024, 0);  // more than a socket buffer holds
  EXPECT_EQ(error_of([&] { a.send(big, {}, 50); }),
            "peer a did not read its socket within 50 ms: SET_CONFIG could not be sent whole");
}

}  // namespace backends_vhost_user_test
}  // namespace libvmm::vhost
