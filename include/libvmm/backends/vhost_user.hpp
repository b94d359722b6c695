// The vhost-user protocol (QEMU's docs/interop/vhost-user.rst) as both sides see it: message
// framing over a Unix stream socket with file descriptors (SCM_RIGHTS), the payloads, and a
// strict decoder for each direction. The front-end (vmm, driving a device in another process)
// decodes the back-end's replies with decode_reply_*(); a back-end decodes the front-end's
// requests with decode_request(). Both treat the peer as hostile: every size, count, index and
// descriptor is checked before use, and a bad message is a VhostError saying what was wrong,
// never a crash or an unbounded allocation.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm::vhost {

// A protocol violation or a failed exchange with the peer.
class VhostError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Request : uint32_t {
  get_features = 1,
  set_features = 2,
  set_owner = 3,
  reset_owner = 4,
  set_mem_table = 5,
  set_log_base = 6,
  set_log_fd = 7,
  set_vring_num = 8,
  set_vring_addr = 9,
  set_vring_base = 10,
  get_vring_base = 11,
  set_vring_kick = 12,
  set_vring_call = 13,
  set_vring_err = 14,
  get_protocol_features = 15,
  set_protocol_features = 16,
  get_queue_num = 17,
  set_vring_enable = 18,
  set_backend_req_fd = 21,
  get_config = 24,
  set_config = 25,
  reset_device = 34,
  get_max_mem_slots = 36,
};
// "SET_MEM_TABLE", or "request 99" for one this implementation does not know.
std::string request_name(uint32_t request);

// Requests the back-end sends the front-end, on the channel SET_BACKEND_REQ_FD gave it.
enum class BackendRequest : uint32_t {
  iotlb_msg = 1,
  config_change_msg = 2,
  vring_host_notifier_msg = 3,
};
// "CONFIG_CHANGE_MSG", or "back-end request 99".
std::string backend_request_name(uint32_t request);

// Header flags.
constexpr uint32_t kVersion = 0x1;  // bits 0..1
constexpr uint32_t kVersionMask = 0x3;
constexpr uint32_t kFlagReply = 0x4;
constexpr uint32_t kFlagNeedReply = 0x8;
constexpr size_t kHeaderSize = 12;

// Virtio feature bit 30: the back-end speaks protocol features (and rings start disabled).
constexpr uint64_t kFeatureProtocolFeatures = 1ull << 30;

// Protocol feature bits this implementation knows.
enum ProtocolFeature : uint32_t {
  kProtocolMq = 0,
  kProtocolReplyAck = 3,
  kProtocolBackendReq = 5,  // a second channel, for the back-end's own requests
  kProtocolConfig = 9,
  kProtocolResetDevice = 13,
};

// Limits. A memory table has at most kMaxRegions regions (the protocol's baseline), a
// message at most kMaxFds descriptors, a payload at most kMaxPayload bytes (the largest
// message, a config space of 256 bytes, is 268).
constexpr size_t kMaxRegions = 8;
constexpr size_t kMaxFds = 8;
constexpr uint32_t kMaxPayload = 4096;
constexpr uint32_t kMaxConfigSize = 256;
constexpr uint32_t kMaxQueueIndex = 255;  // kick/call/err carry the index in 8 bits
constexpr uint64_t kVringFdIndexMask = 0xff;
constexpr uint64_t kVringNoFd = 1ull << 8;  // kick/call/err: no descriptor (polling)

struct MemRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint64_t user_addr = 0;  // the front-end's address of gpa; vring addresses use these
  uint64_t mmap_offset = 0;
};

struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
};

struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;
  uint64_t desc = 0;  // front-end user addresses (see MemRegion::user_addr)
  uint64_t used = 0;
  uint64_t avail = 0;
  uint64_t log = 0;
};

struct ConfigSpace {
  uint32_t offset = 0;
  uint32_t flags = 0;
  std::vector<uint8_t> data;  // at most kMaxConfigSize bytes
};

// One message as it travels: header fields, payload bytes and the descriptors that came with
// it. Encoding helpers build the payloads.
struct Message {
  uint32_t request = 0;
  uint32_t flags = kVersion;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;

  static Message make(Request request, uint32_t flags = kVersion);
  static Message with_u64(Request request, uint64_t value);
  static Message with_state(Request request, VringState state);
  static Message with_addr(const VringAddr& addr);
  static Message with_mem_table(std::span<const MemRegion> regions);  // fds added by the caller
  static Message with_config(Request request, const ConfigSpace& config);
  // The front-end's answer to a back-end request that asked for one (NEED_REPLY): 0 for done.
  static Message backend_ack(BackendRequest request, uint64_t status);
};

// Checks a received header: the version bits, the reply flag where one is (or is not)
// expected, and the size against kMaxPayload. Empty when acceptable, else why not (naming the
// request as a back-end request when `from_backend`).
std::string check_header(uint32_t request, uint32_t flags, uint32_t size, bool expect_reply,
                         bool from_backend = false);

// --- Front-end side: replies from the back-end (each throws VhostError saying what is wrong;
// a reply carrying descriptors is refused, they are closed with the message).
uint64_t decode_reply_u64(const Message& reply, Request request);
VringState decode_reply_state(const Message& reply, Request request, uint32_t queue_index);
// The reply to GET_CONFIG for `offset`, `size`: same offset and size back.
ConfigSpace decode_reply_config(const Message& reply, uint32_t offset, uint32_t size);
// A REPLY_ACK's status: throws unless it is 0 (success).
void decode_reply_ack(const Message& reply, Request request);
// A request from the back-end's channel. Only CONFIG_CHANGE_MSG (no payload, no descriptors)
// is taken: the others need features this front-end does not negotiate, so anything else
// throws VhostError saying what came.
BackendRequest decode_backend_request(const Message& request);

// --- Back-end side: a request from the front-end, decoded and checked for `queue_count`
// queues (kick/call/err indices, vring state and address indices). Throws VhostError for an
// unknown request, a payload of the wrong size, descriptors missing or extra, a queue index
// out of range, too many or overlapping memory regions.
struct DecodedRequest {
  Request request{};
  bool need_reply = false;
  uint64_t u64 = 0;                // features, protocol features, kick/call/err's index field
  VringState state;                // SET_VRING_NUM/BASE, GET_VRING_BASE, SET_VRING_ENABLE
  VringAddr addr;                  // SET_VRING_ADDR
  std::vector<MemRegion> regions;  // SET_MEM_TABLE (one descriptor each, in Message::fds)
  ConfigSpace config;              // GET_CONFIG/SET_CONFIG
  // kick/call/err: the queue index and whether a descriptor came (bit 8 clear).
  uint32_t queue_index() const { return static_cast<uint32_t>(u64 & kVringFdIndexMask); }
  bool has_fd() const { return (u64 & kVringNoFd) == 0; }
};
DecodedRequest decode_request(const Message& message, uint32_t queue_count);

// The memory regions the back-end was given, for translating the front-end's addresses.
// Regions are checked not to overlap in guest-physical nor in user address space.
class RegionTable {
 public:
  RegionTable() = default;
  explicit RegionTable(std::vector<MemRegion> regions);  // throws VhostError on overlap
  const std::vector<MemRegion>& regions() const { return regions_; }
  // The guest-physical address of front-end user address [addr, addr + len), when the range
  // lies inside one region.
  std::optional<uint64_t> user_to_gpa(uint64_t addr, uint64_t len) const;
  // Checks that the rings of a split queue of `num` entries at `addr` lie in the regions
  // (EVENT_IDX fields included) and converts them to guest-physical addresses.
  VringAddr rings_to_gpa(const VringAddr& addr, uint32_t num) const;

 private:
  std::vector<MemRegion> regions_;
};

// A connected vhost-user socket: whole messages in and out, descriptors attached. `peer` names
// the other side in errors ("virtio-fs backend at /run/fs.sock"). A back-end's channel
// (`backend_requests`) names its messages as back-end requests.
class Channel {
 public:
  Channel(UniqueFd socket, std::string peer, bool backend_requests = false);
  int fd() const { return socket_.get(); }
  const std::string& peer() const { return peer_; }

  // Waits up to timeout_ms (negative: as long as it takes) for room in the socket. Throws
  // VhostError when the peer is gone, has not read enough of its socket by then (the message
  // not sent, or only in part: the stream is then broken) or the write fails.
  void send(const Message& message, std::span<const int> fds = {}, int timeout_ms = -1);
  // The same without ever waiting for room in the socket: a peer that has stopped reading
  // makes it throw VhostError (the message not sent, or only in part: the stream is then
  // broken). For a thread that must not wait on another process.
  void send_without_waiting(const Message& message);
  // Waits up to timeout_ms for one whole message (negative: as long as it takes; 0: only one
  // already there). Throws VhostError on timeout, end of stream, a bad header, more than
  // kMaxFds descriptors, or a truncated payload.
  Message receive(int timeout_ms, bool expect_reply);

 private:
  std::string name_of(uint32_t request) const;
  void send_with(const Message& message, std::span<const int> fds, bool never_wait, int timeout_ms);

  UniqueFd socket_;
  std::string peer_;
  bool backend_requests_ = false;
};

// Connects to a Unix socket at `path`; throws VhostError with the reason.
UniqueFd connect_unix(const std::string& path);

}  // namespace libvmm::vhost
