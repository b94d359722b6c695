// virtio-snd against hand-built rings in test guest memory and a fake clock: every control
// request, the streams' state machine, paced playback and capture, and each way a hostile
// driver can get a request or an I/O message wrong; the WAV backend's files.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_snd.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "libvmm/backends/sound_backend.hpp"
#include "libvmm/core/device_spec.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"
#include "libvmm/virtio/device_kind.hpp"
#include "libvmm/virtio/sound.hpp"
#include "libvmm/virtio/sound_request.hpp"
#include "libvmm/virtio/virtqueue.hpp"
#include "unit/support/virtio_kit.hpp"

using namespace libvmm;
using namespace libvmm::test;

namespace virtio_sound_test {

constexpr uint64_t kRamSize = 8 * MiB;
constexpr uint32_t kOk = VIRTIO_SND_S_OK;
constexpr uint32_t kBadMsg = VIRTIO_SND_S_BAD_MSG;
constexpr uint32_t kNotSupp = VIRTIO_SND_S_NOT_SUPP;

// Records what it plays; captures a counter pattern.
class RecordingBackend final : public SoundBackend {
 public:
  std::string describe() const override { return "recording"; }
  SoundCapabilities capabilities(SoundDirection direction) const override {
    SoundCapabilities caps;
    caps.formats = {SoundFormat::u8, SoundFormat::s16};
    caps.rates = {8000, 48000};
    if (direction == SoundDirection::input) caps.channels_max = 1;
    return caps;
  }
  std::string open(SoundDirection direction, const SoundParams&) override {
    ++opens;
    if (refuse) return "refused";
    (direction == SoundDirection::output ? out_open : in_open) = true;
    return {};
  }
  void close(SoundDirection direction) override {
    (direction == SoundDirection::output ? out_open : in_open) = false;
  }
  void play(std::span<const uint8_t> frames) override {
    played.insert(played.end(), frames.begin(), frames.end());
  }
  void capture(std::span<uint8_t> frames) override {
    for (uint8_t& b : frames) b = next++;
  }

  std::vector<uint8_t> played;
  uint8_t next = 1;
  int opens = 0;
  bool refuse = false;
  bool out_open = false;
  bool in_open = false;
};

void put32(std::vector<uint8_t>& v, uint32_t x) {
  for (int i = 0; i < 4; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
uint32_t get32(const std::vector<uint8_t>& v, size_t at) {
  uint32_t x = 0;
  std::memcpy(&x, v.data() + at, 4);
  return x;
}

std::vector<uint8_t> query(uint32_t code, uint32_t start, uint32_t count, uint32_t size) {
  std::vector<uint8_t> r;
  for (uint32_t x : {code, start, count, size}) put32(r, x);
  return r;
}
std::vector<uint8_t> pcm(uint32_t code, uint32_t stream) {
  std::vector<uint8_t> r;
  put32(r, code);
  put32(r, stream);
  return r;
}
std::vector<uint8_t> set_params(uint32_t stream, uint32_t buffer, uint32_t period, uint8_t channels,
                                uint8_t format, uint8_t rate, uint32_t features = 0) {
  std::vector<uint8_t> r = pcm(VIRTIO_SND_R_PCM_SET_PARAMS, stream);
  put32(r, buffer);
  put32(r, period);
  put32(r, features);
  r.push_back(channels);
  r.push_back(format);
  r.push_back(rate);
  r.push_back(0);
  return r;
}

class VirtioSoundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = std::make_unique<RecordingBackend>();
    backend = b.get();
    device = std::make_shared<VirtioSound>(std::move(b), [this] { return now; });
    for (uint16_t i = 0; i < 4; ++i) {
      queues.emplace_back(memory, device->queue_max_sizes()[i]);
    }
    for (uint16_t i = 0; i < 4; ++i) {
      rings.emplace_back(memory, uint16_t{64}, RingLayout::at(0x10000 + 0x100000ull * i));
      rings[i].configure(queues[i]);
    }
    transport.serve(queues);
    device->activate(transport, 0);
  }

  // A control request; returns the status and fills `response` with everything written.
  uint32_t control(const std::vector<uint8_t>& request, uint32_t response_len = 4,
                   std::vector<uint8_t>* response = nullptr, uint32_t* used_len = nullptr) {
    DriverRing& ring = rings[VirtioSound::kControlQueue];
    const uint64_t req = ring.place(request);
    const uint64_t resp = ring.alloc(std::max<uint32_t>(response_len, 1));
    memory.fill(resp, 0xee, std::max<uint32_t>(response_len, 1));
    const uint16_t before = ring.used_idx();
    if (response_len == 0) {
      ring.add_chain({{req, static_cast<uint32_t>(request.size()), false}});
    } else {
      ring.add_chain(
          {{req, static_cast<uint32_t>(request.size()), false}, {resp, response_len, true}});
    }
    device->queue_notify(VirtioSound::kControlQueue, queues[VirtioSound::kControlQueue]);
    EXPECT_FALSE(queues[0].broken()) << queues[0].error();
    EXPECT_EQ(ring.used_idx(), static_cast<uint16_t>(before + 1));
    const uint32_t len = ring.used(before).len;
    if (used_len) *used_len = len;
    if (response) *response = memory.bytes(resp, response_len);
    if (response_len < 4) return 0;
    return get32(memory.bytes(resp, 4), 0);
  }

  // Output stream 0 at 48 kHz S16 stereo (4-byte frames), prepared.
  void prepare_output(uint32_t period = 4800) {
    ASSERT_EQ(control(set_params(0, period * 4, period, 2, VIRTIO_SND_PCM_FMT_S16,
                                 VIRTIO_SND_PCM_RATE_48000)),
              kOk);
    ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_PREPARE, 0)), kOk);
  }
  void prepare_input(uint32_t period = 800) {
    ASSERT_EQ(control(set_params(1, period * 4, period, 1, VIRTIO_SND_PCM_FMT_U8,
                                 VIRTIO_SND_PCM_RATE_8000)),
              kOk);
    ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_PREPARE, 1)), kOk);
  }

  struct Io {
    uint16_t head;
    uint64_t data;
    uint64_t status;
  };
  // A playback message of `bytes` bytes of `fill` for `stream`.
  Io send_tx(uint32_t bytes, uint8_t fill = 0x11, uint32_t stream = 0) {
    DriverRing& ring = rings[VirtioSound::kTxQueue];
    std::vector<uint8_t> hdr;
    put32(hdr, stream);
    const uint64_t h = ring.place(hdr);
    const uint64_t data = ring.alloc(std::max<uint32_t>(bytes, 1));
    memory.fill(data, fill, std::max<uint32_t>(bytes, 1));
    const uint64_t status = ring.alloc(8);
    memory.fill(status, 0xee, 8);
    uint16_t head;
    if (bytes == 0) {
      head = ring.add_chain({{h, 4, false}, {status, 8, true}});
    } else {
      head = ring.add_chain({{h, 4, false}, {data, bytes, false}, {status, 8, true}});
    }
    device->queue_notify(VirtioSound::kTxQueue, queues[VirtioSound::kTxQueue]);
    return {head, data, status};
  }
  Io send_rx(uint32_t bytes, uint32_t stream = 1) {
    DriverRing& ring = rings[VirtioSound::kRxQueue];
    std::vector<uint8_t> hdr;
    put32(hdr, stream);
    const uint64_t h = ring.place(hdr);
    const uint64_t data = ring.alloc(bytes + 8);
    memory.fill(data, 0xee, bytes + 8);
    const uint16_t head = ring.add_chain({{h, 4, false}, {data, bytes + 8, true}});
    device->queue_notify(VirtioSound::kRxQueue, queues[VirtioSound::kRxQueue]);
    return {head, data, data + bytes};
  }
  uint16_t used(uint16_t queue) { return rings[queue].used_idx(); }
  uint32_t status_at(uint64_t gpa) { return get32(memory.bytes(gpa, 4), 0); }
  uint32_t latency_at(uint64_t gpa) { return get32(memory.bytes(gpa + 4, 4), 0); }

  void at_ms(int64_t ms) {
    now = ms * 1'000'000;
    device->tick();
  }

  TestMemory memory{kRamSize};
  std::vector<Virtqueue> queues;
  std::vector<DriverRing> rings;
  FakeTransport transport;
  RecordingBackend* backend = nullptr;
  std::shared_ptr<VirtioSound> device;
  int64_t now = 0;
};

// ---------------------------------------------------------------------------------------------
// The card

TEST_F(VirtioSoundTest, DescribesASoundCardWithFourQueuesAndItsConfig) {
  EXPECT_EQ(device->device_id(), 25u);
  EXPECT_EQ(device->device_id(), static_cast<uint32_t>(VIRTIO_ID_SOUND));
  EXPECT_EQ(device->name(), "virtio-snd");
  EXPECT_EQ(device->device_features(), 0u);
  EXPECT_EQ(device->queue_max_sizes().size(), 4u);
  ASSERT_EQ(device->config_size(), 12u);
  std::vector<uint8_t> config(12);
  device->read_config(0, config);
  EXPECT_EQ(get32(config, 0), kSoundJacks);
  EXPECT_EQ(get32(config, 4), kSoundStreams);
  EXPECT_EQ(get32(config, 8), kSoundChmaps);
  std::vector<uint8_t> part(2);
  device->read_config(4, part);
  EXPECT_EQ(part[0], 2);
}

TEST_F(VirtioSoundTest, JackInfoDescribesBothJacksConnected) {
  std::vector<uint8_t> r;
  uint32_t len = 0;
  ASSERT_EQ(control(query(VIRTIO_SND_R_JACK_INFO, 0, 2, 24), 4 + 48, &r, &len), kOk);
  EXPECT_EQ(len, 52u);
  virtio_snd_jack_info info[2];
  std::memcpy(info, r.data() + 4, sizeof info);
  EXPECT_EQ(info[0].connected, 1);
  EXPECT_EQ(info[1].connected, 1);
  EXPECT_EQ(info[0].features, 0u);
  EXPECT_NE(info[0].hda_reg_defconf, info[1].hda_reg_defconf);
}

TEST_F(VirtioSoundTest, PcmInfoOffersWhatTheBackendTakes) {
  std::vector<uint8_t> r;
  ASSERT_EQ(control(query(VIRTIO_SND_R_PCM_INFO, 0, 2, 32), 4 + 64, &r), kOk);
  virtio_snd_pcm_info info[2];
  std::memcpy(info, r.data() + 4, sizeof info);
  EXPECT_EQ(info[0].direction, VIRTIO_SND_D_OUTPUT);
  EXPECT_EQ(info[1].direction, VIRTIO_SND_D_INPUT);
  EXPECT_EQ(info[0].formats, (1ull << VIRTIO_SND_PCM_FMT_U8) | (1ull << VIRTIO_SND_PCM_FMT_S16));
  EXPECT_EQ(info[0].rates,
            (1ull << VIRTIO_SND_PCM_RATE_8000) | (1ull << VIRTIO_SND_PCM_RATE_48000));
  EXPECT_EQ(info[0].channels_min, 1);
  EXPECT_EQ(info[0].channels_max, 2);
  EXPECT_EQ(info[1].channels_max, 1);
  EXPECT_EQ(info[0].features, 0u);
}

TEST_F(VirtioSoundTest, PcmInfoOfTheNoneBackendOffersEveryFormatAndRate) {
  SoundCard card(NullSoundBackend().capabilities(SoundDirection::output),
                 NullSoundBackend().capabilities(SoundDirection::input));
  const SoundControlReply reply = card.control(query(VIRTIO_SND_R_PCM_INFO, 0, 1, 32), 36);
  ASSERT_EQ(reply.status, SoundStatus::ok);
  virtio_snd_pcm_info info;
  std::memcpy(&info, reply.payload.data(), sizeof info);
  for (int f : {VIRTIO_SND_PCM_FMT_U8, VIRTIO_SND_PCM_FMT_S16, VIRTIO_SND_PCM_FMT_S24,
                VIRTIO_SND_PCM_FMT_S32, VIRTIO_SND_PCM_FMT_FLOAT}) {
    EXPECT_TRUE(info.formats & (1ull << f)) << f;
  }
  EXPECT_EQ(info.rates,
            ((1ull << (VIRTIO_SND_PCM_RATE_192000 + 1)) - 1) & ~(1ull << VIRTIO_SND_PCM_RATE_5512));
}

TEST_F(VirtioSoundTest, ChmapInfoHasMonoAndStereoForEachDirection) {
  std::vector<uint8_t> r;
  ASSERT_EQ(control(query(VIRTIO_SND_R_CHMAP_INFO, 0, 4, 24), 4 + 96, &r), kOk);
  virtio_snd_chmap_info info[4];
  std::memcpy(info, r.data() + 4, sizeof info);
  EXPECT_EQ(info[0].direction, VIRTIO_SND_D_OUTPUT);
  EXPECT_EQ(info[0].channels, 1);
  EXPECT_EQ(info[0].positions[0], VIRTIO_SND_CHMAP_MONO);
  EXPECT_EQ(info[1].channels, 2);
  EXPECT_EQ(info[1].positions[0], VIRTIO_SND_CHMAP_FL);
  EXPECT_EQ(info[1].positions[1], VIRTIO_SND_CHMAP_FR);
  EXPECT_EQ(info[2].direction, VIRTIO_SND_D_INPUT);
  EXPECT_EQ(info[3].direction, VIRTIO_SND_D_INPUT);
}

TEST_F(VirtioSoundTest, QueryWithLargerItemsPadsWithZeros) {
  std::vector<uint8_t> r;
  ASSERT_EQ(control(query(VIRTIO_SND_R_PCM_INFO, 1, 1, 40), 4 + 40, &r), kOk);
  EXPECT_EQ(r[4 + 24], VIRTIO_SND_D_INPUT);  // direction of stream 1
  for (int i = 32; i < 40; ++i) EXPECT_EQ(r[4 + i], 0) << i;
}

TEST_F(VirtioSoundTest, MalformedQueriesGetBadMsg) {
  std::vector<uint8_t> r;
  uint32_t len = 0;
  // Items beyond the card, and a count that overflows with its start.
  EXPECT_EQ(control(query(VIRTIO_SND_R_JACK_INFO, 1, 2, 24), 100), kBadMsg);
  EXPECT_EQ(control(query(VIRTIO_SND_R_PCM_INFO, 2, 1, 32), 100), kBadMsg);
  EXPECT_EQ(control(query(VIRTIO_SND_R_CHMAP_INFO, 0xffffffff, 2, 24), 100), kBadMsg);
  // Items smaller than the structure, or absurdly large.
  EXPECT_EQ(control(query(VIRTIO_SND_R_PCM_INFO, 0, 1, 31), 100), kBadMsg);
  EXPECT_EQ(control(query(VIRTIO_SND_R_PCM_INFO, 0, 1, 0x10000), 100), kBadMsg);
  // A response buffer too short for the items: the status only.
  EXPECT_EQ(control(query(VIRTIO_SND_R_PCM_INFO, 0, 2, 32), 4 + 63, &r, &len), kBadMsg);
  EXPECT_EQ(len, 4u);
  EXPECT_EQ(r[4], 0xee) << "nothing past the status";
  // A request shorter than virtio_snd_query_info.
  EXPECT_EQ(control({0x00, 0x01, 0, 0, 0, 0, 0, 0}, 100), kBadMsg);
  EXPECT_EQ(device->counters().bad_requests, 7u);
}

TEST_F(VirtioSoundTest, UnknownAndUnofferedRequestsGetNotSupp) {
  EXPECT_EQ(control(pcm(0x0300, 0)), kNotSupp);
  EXPECT_EQ(control(pcm(0, 0)), kNotSupp);
  std::vector<uint8_t> remap = pcm(VIRTIO_SND_R_JACK_REMAP, 0);
  put32(remap, 0);
  put32(remap, 0);
  EXPECT_EQ(control(remap), kNotSupp);
}

TEST_F(VirtioSoundTest, RequestsTooShortToAnswerAreReturnedUnanswered) {
  uint32_t len = 99;
  std::vector<uint8_t> r;
  control(query(VIRTIO_SND_R_JACK_INFO, 0, 1, 24), 0, nullptr, &len);
  EXPECT_EQ(len, 0u);
  control(query(VIRTIO_SND_R_JACK_INFO, 0, 1, 24), 3, &r, &len);
  EXPECT_EQ(len, 0u);
  EXPECT_EQ(r, std::vector<uint8_t>(3, 0xee));
  // No header at all.
  EXPECT_EQ(control({0x01, 0x00}, 4), kBadMsg);
  // PCM_START without its stream id.
  EXPECT_EQ(control({0x04, 0x01, 0, 0}, 4), kBadMsg);
}

// ---------------------------------------------------------------------------------------------
// SET_PARAMS

TEST_F(VirtioSoundTest, SetParamsAcceptsWhatPcmInfoOffered) {
  EXPECT_EQ(
      control(set_params(0, 19200, 4800, 2, VIRTIO_SND_PCM_FMT_S16, VIRTIO_SND_PCM_RATE_48000)),
      kOk);
  EXPECT_EQ(device->card().stream(0).state, PcmState::params_set);
  EXPECT_EQ(device->card().stream(0).params->params.rate, 48000u);
  EXPECT_EQ(control(set_params(1, 800, 400, 1, VIRTIO_SND_PCM_FMT_U8, VIRTIO_SND_PCM_RATE_8000)),
            kOk);
  EXPECT_EQ(device->card().stream(1).params->params.format, SoundFormat::u8);
}

TEST_F(VirtioSoundTest, SetParamsOutsideWhatWasOfferedGetsNotSupp) {
  const uint8_t s16 = VIRTIO_SND_PCM_FMT_S16;
  const uint8_t r48 = VIRTIO_SND_PCM_RATE_48000;
  EXPECT_EQ(control(set_params(0, 4096, 1024, 2, VIRTIO_SND_PCM_FMT_S32, r48)), kNotSupp);
  EXPECT_EQ(control(set_params(0, 4096, 1024, 2, 200, r48)), kNotSupp);
  EXPECT_EQ(control(set_params(0, 4096, 1024, 2, s16, VIRTIO_SND_PCM_RATE_44100)), kNotSupp);
  EXPECT_EQ(control(set_params(0, 4096, 1024, 2, s16, VIRTIO_SND_PCM_RATE_5512)), kNotSupp);
  EXPECT_EQ(control(set_params(0, 4096, 1024, 2, s16, 77)), kNotSupp);
  EXPECT_EQ(control(set_params(0, 4096, 1024, 3, s16, r48)), kNotSupp);
  EXPECT_EQ(control(set_params(0, 4096, 1024, 0, s16, r48)), kNotSupp);
  EXPECT_EQ(control(set_params(1, 4096, 1024, 2, s16, r48)), kNotSupp);  // input: mono only
  EXPECT_EQ(control(set_params(0, 4096, 1024, 2, s16, r48, 1u << VIRTIO_SND_PCM_F_MSG_POLLING)),
            kNotSupp);
  EXPECT_EQ(device->card().stream(0).state, PcmState::initial);
}

TEST_F(VirtioSoundTest, SetParamsWithBadSizesOrStreamGetsBadMsg) {
  const uint8_t s16 = VIRTIO_SND_PCM_FMT_S16;
  const uint8_t r48 = VIRTIO_SND_PCM_RATE_48000;
  EXPECT_EQ(control(set_params(0, 4096, 1022, 2, s16, r48)), kBadMsg);  // period: half frames
  EXPECT_EQ(control(set_params(0, 4098, 1024, 2, s16, r48)), kBadMsg);  // buffer: half frames
  EXPECT_EQ(control(set_params(0, 4096, 0, 2, s16, r48)), kBadMsg);
  EXPECT_EQ(control(set_params(0, 1024, 4096, 2, s16, r48)), kBadMsg);  // period > buffer
  EXPECT_EQ(control(set_params(0, kSoundMaxBufferBytes + 4, 1024, 2, s16, r48)), kBadMsg);
  EXPECT_EQ(control(set_params(2, 4096, 1024, 2, s16, r48)), kBadMsg);
  EXPECT_EQ(control(set_params(0xffffffff, 4096, 1024, 2, s16, r48)), kBadMsg);
  std::vector<uint8_t> shortened = set_params(0, 4096, 1024, 2, s16, r48);
  shortened.resize(20);
  EXPECT_EQ(control(shortened), kBadMsg);
  EXPECT_EQ(device->card().stream(0).state, PcmState::initial);
}

// ---------------------------------------------------------------------------------------------
// The state machine (§5.14.6.6.1), on the card alone: every request from every state.

struct Transition {
  uint32_t code;
  PcmState from;
  bool allowed;
};

TEST(SoundCardStates, EveryRequestFromEveryState) {
  const SoundCapabilities caps = NullSoundBackend().capabilities(SoundDirection::output);
  const std::vector<uint8_t> params =
      set_params(0, 4096, 1024, 2, VIRTIO_SND_PCM_FMT_S16, VIRTIO_SND_PCM_RATE_48000);
  // How to reach each state from initial.
  const std::vector<std::vector<uint32_t>> paths = {
      {},
      {VIRTIO_SND_R_PCM_SET_PARAMS},
      {VIRTIO_SND_R_PCM_SET_PARAMS, VIRTIO_SND_R_PCM_PREPARE},
      {VIRTIO_SND_R_PCM_SET_PARAMS, VIRTIO_SND_R_PCM_PREPARE, VIRTIO_SND_R_PCM_START},
      {VIRTIO_SND_R_PCM_SET_PARAMS, VIRTIO_SND_R_PCM_PREPARE, VIRTIO_SND_R_PCM_START,
       VIRTIO_SND_R_PCM_STOP},
      {VIRTIO_SND_R_PCM_SET_PARAMS, VIRTIO_SND_R_PCM_PREPARE, VIRTIO_SND_R_PCM_RELEASE},
  };
  const PcmState states[] = {PcmState::initial, PcmState::params_set, PcmState::prepared,
                             PcmState::started, PcmState::stopped,    PcmState::released};
  auto request = [&](uint32_t code) {
    return code == VIRTIO_SND_R_PCM_SET_PARAMS ? params : pcm(code, 0);
  };
  // Allowed transitions: to SET_PARAMETERS from initial, SET_PARAMETERS, PREPARE, RELEASE; to
  // PREPARE from SET_PARAMETERS, PREPARE, RELEASE; to START from PREPARE, STOP; to STOP from
  // START; to RELEASE from PREPARE, STOP.
  auto allowed = [](uint32_t code, PcmState s) {
    switch (code) {
      case VIRTIO_SND_R_PCM_SET_PARAMS:
        return s == PcmState::initial || s == PcmState::params_set || s == PcmState::prepared ||
               s == PcmState::released;
      case VIRTIO_SND_R_PCM_PREPARE:
        return s == PcmState::params_set || s == PcmState::prepared || s == PcmState::released;
      case VIRTIO_SND_R_PCM_START:
        return s == PcmState::prepared || s == PcmState::stopped;
      case VIRTIO_SND_R_PCM_STOP:
        return s == PcmState::started;
      default:
        return s == PcmState::prepared || s == PcmState::stopped;
    }
  };
  const PcmState after[] = {PcmState::params_set, PcmState::prepared, PcmState::released,
                            PcmState::started, PcmState::stopped};
  const uint32_t codes[] = {VIRTIO_SND_R_PCM_SET_PARAMS, VIRTIO_SND_R_PCM_PREPARE,
                            VIRTIO_SND_R_PCM_RELEASE, VIRTIO_SND_R_PCM_START,
                            VIRTIO_SND_R_PCM_STOP};
  for (size_t s = 0; s < paths.size(); ++s) {
    for (size_t c = 0; c < 5; ++c) {
      SoundCard card(caps, caps);
      for (uint32_t step : paths[s]) {
        const SoundControlReply r = card.control(request(step), 4);
        ASSERT_EQ(r.status, SoundStatus::ok);
        card.apply(r);
      }
      ASSERT_EQ(card.stream(0).state, states[s]);
      const SoundControlReply r = card.control(request(codes[c]), 4);
      if (allowed(codes[c], states[s])) {
        EXPECT_EQ(r.status, SoundStatus::ok) << to_string(states[s]) << " code " << codes[c];
        card.apply(r);
        EXPECT_EQ(card.stream(0).state, after[c]);
      } else {
        EXPECT_EQ(r.status, SoundStatus::bad_msg) << to_string(states[s]) << " code " << codes[c];
        EXPECT_FALSE(r.error.empty());
        card.apply(r);  // a refused reply changes nothing
        EXPECT_EQ(card.stream(0).state, states[s]);
      }
      EXPECT_EQ(card.stream(1).state, PcmState::initial) << "the other stream is untouched";
    }
  }
}

TEST_F(VirtioSoundTest, PcmRequestsForAStreamThatDoesNotExistGetBadMsg) {
  for (uint32_t code : {VIRTIO_SND_R_PCM_PREPARE, VIRTIO_SND_R_PCM_START, VIRTIO_SND_R_PCM_STOP,
                        VIRTIO_SND_R_PCM_RELEASE}) {
    EXPECT_EQ(control(pcm(code, 2)), kBadMsg);
    EXPECT_EQ(control(pcm(code, 0x80000000)), kBadMsg);
  }
}

TEST_F(VirtioSoundTest, PrepareTheHostRefusesGetsIoErrAndTheStreamStays) {
  ASSERT_EQ(
      control(set_params(0, 4096, 1024, 2, VIRTIO_SND_PCM_FMT_S16, VIRTIO_SND_PCM_RATE_48000)),
      kOk);
  backend->refuse = true;
  EXPECT_EQ(control(pcm(VIRTIO_SND_R_PCM_PREPARE, 0)), static_cast<uint32_t>(VIRTIO_SND_S_IO_ERR));
  EXPECT_EQ(device->card().stream(0).state, PcmState::params_set);
  backend->refuse = false;
  EXPECT_EQ(control(pcm(VIRTIO_SND_R_PCM_PREPARE, 0)), kOk);
  EXPECT_TRUE(backend->out_open);
}

// A prepared stream prepared again closes its host stream first: when the host then refuses,
// the stream is back at its parameters (START refused, PREPARE again possible), not left
// "prepared" with nothing open to take its I/O.
TEST_F(VirtioSoundTest, APreparedStreamTheHostRefusesToReopenGoesBackToItsParameters) {
  prepare_output();
  ASSERT_TRUE(backend->out_open);
  backend->refuse = true;
  EXPECT_EQ(control(pcm(VIRTIO_SND_R_PCM_PREPARE, 0)), static_cast<uint32_t>(VIRTIO_SND_S_IO_ERR));
  EXPECT_FALSE(backend->out_open);
  EXPECT_EQ(device->card().stream(0).state, PcmState::params_set);
  EXPECT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kBadMsg);
  backend->refuse = false;
  EXPECT_EQ(control(pcm(VIRTIO_SND_R_PCM_PREPARE, 0)), kOk);
  EXPECT_TRUE(backend->out_open);
  EXPECT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
}

// ---------------------------------------------------------------------------------------------
// Playback, paced by the clock

TEST_F(VirtioSoundTest, PlaybackIsPacedByTheClockAndBuffersComeBackWhenPlayed) {
  prepare_output();  // 4800-byte periods: 1200 frames, 25 ms
  std::vector<Io> sent;
  for (uint8_t i = 0; i < 4; ++i) sent.push_back(send_tx(4800, static_cast<uint8_t>(0x10 + i)));
  EXPECT_EQ(used(VirtioSound::kTxQueue), 0) << "held until played";
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  at_ms(10);
  EXPECT_EQ(backend->played.size(), 480u * 4);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 0);
  at_ms(25);
  ASSERT_EQ(used(VirtioSound::kTxQueue), 1);
  EXPECT_EQ(rings[2].used(0).id, sent[0].head);
  EXPECT_EQ(rings[2].used(0).len, 8u);
  EXPECT_EQ(status_at(sent[0].status), kOk);
  EXPECT_EQ(latency_at(sent[0].status), 3u * 4800) << "three periods still ahead";
  at_ms(74);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 2);
  at_ms(100);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 4);
  EXPECT_EQ(latency_at(sent[3].status), 0u);
  ASSERT_EQ(backend->played.size(), 4u * 4800);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(backend->played[i * 4800 + 7], 0x10 + i);
  EXPECT_EQ(device->counters().frames_played, 4u * 1200);
  EXPECT_EQ(device->counters().underruns, 0u);
  EXPECT_GE(transport.signals(VirtioSound::kTxQueue), 3);
}

TEST_F(VirtioSoundTest, NothingIsPlayedBeforeStartOrWhileStopped) {
  prepare_output();
  send_tx(4800);
  at_ms(100);
  EXPECT_TRUE(backend->played.empty());
  now = 100'000'000;
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  at_ms(110);
  EXPECT_EQ(backend->played.size(), 480u * 4);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_STOP, 0)), kOk);
  at_ms(500);
  EXPECT_EQ(backend->played.size(), 480u * 4) << "stopped: paused";
  EXPECT_EQ(used(VirtioSound::kTxQueue), 0) << "kept while stopped";
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  at_ms(515);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 1);
  EXPECT_EQ(backend->played.size(), 4800u);
}

TEST_F(VirtioSoundTest, AGapInThePlaybackIsOneUnderrunAndTheClockRestarts) {
  prepare_output();
  send_tx(4800);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  at_ms(25);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 1);
  at_ms(200);  // starved: silence
  at_ms(300);
  EXPECT_EQ(device->counters().underruns, 0u) << "counted once the guest carries on";
  send_tx(4800);
  EXPECT_EQ(device->counters().underruns, 1u);
  at_ms(310);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 1) << "no catching up on the lost time";
  at_ms(325);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 2);
}

// The loop held up for three seconds: a second's worth is played at once, the rest of the lag
// is forgotten; the clock does not make it up over the next ticks at many times real time.
TEST_F(VirtioSoundTest, AStallOfTheLoopIsNotMadeUpAfterwards) {
  prepare_output();                            // 4800-byte periods: 1200 frames, 25 ms
  for (int i = 0; i < 60; ++i) send_tx(4800);  // 1.5 s
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  at_ms(3000);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 40) << "one second's worth";
  at_ms(3025);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 41) << "then real time again";
}

TEST_F(VirtioSoundTest, TheEndOfAStreamIsNotAnUnderrun) {
  prepare_output();
  send_tx(4800);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  at_ms(40);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_STOP, 0)), kOk);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_RELEASE, 0)), kOk);
  EXPECT_EQ(device->counters().underruns, 0u);
  EXPECT_FALSE(backend->out_open);
}

TEST_F(VirtioSoundTest, ReleaseReturnsEveryMessageItHolds) {
  prepare_output();
  const Io a = send_tx(4800);
  const Io b = send_tx(4800);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_RELEASE, 0)), kOk);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 2);
  EXPECT_EQ(status_at(a.status), kOk);
  EXPECT_EQ(status_at(b.status), kOk);
  EXPECT_TRUE(backend->played.empty());
  // Prepared again from RELEASE, it plays.
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_PREPARE, 0)), kOk);
  send_tx(4800);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  at_ms(25);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 3);
}

TEST_F(VirtioSoundTest, NewParametersForAPreparedStreamReturnWhatItHolds) {
  prepare_output();
  send_tx(4800);
  ASSERT_EQ(control(set_params(0, 4096, 1024, 1, VIRTIO_SND_PCM_FMT_U8, VIRTIO_SND_PCM_RATE_8000)),
            kOk);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 1);
  EXPECT_FALSE(backend->out_open);
}

// ---------------------------------------------------------------------------------------------
// Malformed I/O messages

TEST_F(VirtioSoundTest, MalformedPlaybackMessagesGetBadMsgAndChangeNothing) {
  // Before the stream is prepared.
  Io io = send_tx(4800);
  EXPECT_EQ(status_at(io.status), kBadMsg);
  prepare_output();
  const struct {
    uint32_t bytes;
    uint32_t stream;
  } cases[] = {
      {4802, 0},   // not whole frames
      {0, 0},      // no data
      {19204, 0},  // more than the buffer (19200)
      {4800, 1},   // the input stream, on the tx queue
      {4800, 2},   // no such stream
      {4800, 0xffffffff},
  };
  uint16_t expected = 1;
  for (const auto& c : cases) {
    io = send_tx(c.bytes, 0x33, c.stream);
    EXPECT_EQ(used(VirtioSound::kTxQueue), ++expected) << c.bytes << " " << c.stream;
    EXPECT_EQ(status_at(io.status), kBadMsg) << c.bytes << " " << c.stream;
    EXPECT_EQ(rings[2].used(static_cast<uint16_t>(expected - 1)).len, 8u);
  }
  EXPECT_EQ(device->card().stream(0).state, PcmState::prepared);
  EXPECT_EQ(device->counters().bad_requests, 7u);
}

TEST_F(VirtioSoundTest, MessagesWithoutRoomForTheStatusAreReturnedUnanswered) {
  prepare_output();
  DriverRing& ring = rings[VirtioSound::kTxQueue];
  std::vector<uint8_t> hdr = {0, 0, 0, 0};
  const uint64_t h = ring.place(hdr);
  const uint64_t data = ring.alloc(64);
  const uint64_t status = ring.alloc(8);
  memory.fill(status, 0xee, 8);
  ring.add_chain({{h, 4, false}, {data, 64, false}, {status, 7, true}});
  ring.add_chain({{h, 4, false}, {data, 64, false}});
  // Header cut short: 2 readable bytes.
  ring.add_chain({{h, 2, false}, {status, 8, true}});
  device->queue_notify(VirtioSound::kTxQueue, queues[VirtioSound::kTxQueue]);
  ASSERT_EQ(used(VirtioSound::kTxQueue), 3);
  EXPECT_EQ(ring.used(0).len, 0u);
  EXPECT_EQ(ring.used(1).len, 0u);
  EXPECT_EQ(ring.used(2).len, 8u);
  EXPECT_EQ(status_at(status), kBadMsg);
}

TEST_F(VirtioSoundTest, PlaybackDataTheDeviceMayWriteIsRefused) {
  prepare_output();
  DriverRing& ring = rings[VirtioSound::kTxQueue];
  const uint64_t h = ring.place(std::vector<uint8_t>{0, 0, 0, 0});
  const uint64_t data = ring.alloc(64);
  const uint64_t status = ring.alloc(8);
  ring.add_chain({{h, 4, false}, {data, 64, true}, {status, 8, true}});
  device->queue_notify(VirtioSound::kTxQueue, queues[VirtioSound::kTxQueue]);
  ASSERT_EQ(used(VirtioSound::kTxQueue), 1);
  EXPECT_EQ(status_at(status), kBadMsg);  // the last 8 writable bytes
}

// ---------------------------------------------------------------------------------------------
// Capture

TEST_F(VirtioSoundTest, CaptureFillsBuffersAtTheStreamsRate) {
  prepare_input();  // 8 kHz U8 mono: 800-byte periods of 100 ms
  const Io a = send_rx(800);
  const Io b = send_rx(800);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 1)), kOk);
  at_ms(50);
  EXPECT_EQ(used(VirtioSound::kRxQueue), 0);
  at_ms(100);
  ASSERT_EQ(used(VirtioSound::kRxQueue), 1);
  EXPECT_EQ(rings[3].used(0).id, a.head);
  EXPECT_EQ(rings[3].used(0).len, 808u);
  EXPECT_EQ(status_at(a.status), kOk);
  const auto bytes = memory.bytes(a.data, 800);
  for (size_t i = 0; i < 800; ++i) ASSERT_EQ(bytes[i], static_cast<uint8_t>(1 + i)) << i;
  at_ms(200);
  EXPECT_EQ(used(VirtioSound::kRxQueue), 2);
  EXPECT_EQ(status_at(b.status), kOk);
  EXPECT_EQ(device->counters().frames_captured, 1600u);
}

TEST_F(VirtioSoundTest, CaptureWithoutBuffersIsAnOverrunOnceTheGuestComesBack) {
  prepare_input();
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 1)), kOk);
  at_ms(300);
  send_rx(800);
  EXPECT_EQ(device->counters().overruns, 1u);
  at_ms(350);
  EXPECT_EQ(used(VirtioSound::kRxQueue), 0);
  at_ms(400);
  EXPECT_EQ(used(VirtioSound::kRxQueue), 1);
}

TEST_F(VirtioSoundTest, MalformedCaptureMessagesGetBadMsg) {
  prepare_input();
  Io io = send_rx(800, 0);  // the output stream on the rx queue
  EXPECT_EQ(status_at(io.status), kBadMsg);
  io = send_rx(3201);  // more than the buffer
  EXPECT_EQ(status_at(io.status), kBadMsg);
  io = send_rx(0);  // room for the status, no data
  EXPECT_EQ(status_at(io.status), kBadMsg);
  EXPECT_EQ(used(VirtioSound::kRxQueue), 3);
  // Capture data in the readable part.
  DriverRing& ring = rings[VirtioSound::kRxQueue];
  const uint64_t h = ring.place(std::vector<uint8_t>{1, 0, 0, 0, 9, 9, 9, 9});
  const uint64_t status = ring.alloc(808);
  ring.add_chain({{h, 8, false}, {status, 808, true}});
  device->queue_notify(VirtioSound::kRxQueue, queues[VirtioSound::kRxQueue]);
  EXPECT_EQ(used(VirtioSound::kRxQueue), 4);
  EXPECT_EQ(status_at(status + 800), kBadMsg);
}

TEST_F(VirtioSoundTest, ReleasedCaptureBuffersComeBackWithSilenceForTheRest) {
  prepare_input();
  const Io a = send_rx(800);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 1)), kOk);
  at_ms(50);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_STOP, 1)), kOk);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_RELEASE, 1)), kOk);
  ASSERT_EQ(used(VirtioSound::kRxQueue), 1);
  EXPECT_EQ(status_at(a.status), kOk);
  const auto bytes = memory.bytes(a.data, 800);
  EXPECT_EQ(bytes[0], 1);
  EXPECT_EQ(bytes[799], 0x80) << "U8 silence is the midpoint, not 0";
}

// ---------------------------------------------------------------------------------------------
// Reset

TEST_F(VirtioSoundTest, ResetDropsMessagesAndStreams) {
  prepare_output();
  send_tx(4800);
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  device->reset();
  EXPECT_EQ(device->card().stream(0).state, PcmState::initial);
  EXPECT_FALSE(backend->out_open);
  at_ms(100);
  EXPECT_TRUE(backend->played.empty());
  for (size_t i = 0; i < 4; ++i) {
    queues[i].reset();
    rings[i].restart();
    rings[i].configure(queues[i]);
  }
  device->activate(transport, 0);
  prepare_output();
  send_tx(4800);
  now = 200'000'000;
  ASSERT_EQ(control(pcm(VIRTIO_SND_R_PCM_START, 0)), kOk);
  at_ms(225);
  EXPECT_EQ(used(VirtioSound::kTxQueue), 1);
}

// ---------------------------------------------------------------------------------------------
// WAV files

class WavTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("libvmm-wav-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  static std::vector<uint8_t> slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  static void spit(const std::filesystem::path& p, const std::vector<uint8_t>& bytes) {
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  std::filesystem::path dir;
};

TEST_F(WavTest, HeaderRoundTripsForEveryFormat) {
  for (SoundFormat f : kAllSoundFormats) {
    for (uint32_t channels : {1u, 2u}) {
      const SoundParams p{f, 44100, channels};
      std::vector<uint8_t> file = wav_header(p, 4 * p.frame_bytes());
      file.resize(file.size() + 4 * p.frame_bytes(), 0);
      spit(dir / "x.wav", file);
      const int fd = ::open((dir / "x.wav").c_str(), O_RDONLY);
      WavInfo info;
      EXPECT_EQ(read_wav_header(fd, info), "") << to_string(f);
      ::close(fd);
      EXPECT_EQ(info.params, p) << to_string(f);
      EXPECT_EQ(info.data_bytes, 4u * p.frame_bytes());
    }
  }
}

TEST_F(WavTest, PlaybackWritesAValidFileOfExactlyWhatWasPlayed) {
  const auto out = dir / "out.wav";
  {
    WavSoundBackend wav(out.string(), "");
    const SoundParams p{SoundFormat::s16, 48000, 2};
    ASSERT_EQ(wav.open(SoundDirection::output, p), "");
    std::vector<uint8_t> frames(400);
    for (size_t i = 0; i < frames.size(); ++i) frames[i] = static_cast<uint8_t>(i);
    wav.play(frames);
    wav.play(frames);
    // A second stream in another format is not recorded.
    wav.close(SoundDirection::output);
    ASSERT_EQ(wav.open(SoundDirection::output, {SoundFormat::u8, 8000, 1}), "");
    wav.play(frames);
  }
  const auto bytes = slurp(out);
  ASSERT_EQ(bytes.size(), 44u + 800);
  const int fd = ::open(out.c_str(), O_RDONLY);
  WavInfo info;
  EXPECT_EQ(read_wav_header(fd, info), "");
  ::close(fd);
  EXPECT_EQ(info.params, (SoundParams{SoundFormat::s16, 48000, 2}));
  EXPECT_EQ(info.data_bytes, 800u);
  EXPECT_EQ(get32(bytes, 4), 36u + 800);
  EXPECT_EQ(bytes[44 + 401], 1);
}

TEST_F(WavTest, CaptureReadsTheInputFileThenSilence) {
  const SoundParams p{SoundFormat::u8, 8000, 1};
  std::vector<uint8_t> file = wav_header(p, 10);
  for (uint8_t i = 1; i <= 10; ++i) file.push_back(i);
  spit(dir / "in.wav", file);
  WavSoundBackend wav((dir / "out.wav").string(), (dir / "in.wav").string());
  const SoundCapabilities caps = wav.capabilities(SoundDirection::input);
  EXPECT_EQ(caps.formats, std::vector<SoundFormat>{SoundFormat::u8});
  EXPECT_EQ(caps.rates, std::vector<uint32_t>{8000});
  EXPECT_EQ(caps.channels_max, 1u);
  ASSERT_EQ(wav.open(SoundDirection::input, p), "");
  std::vector<uint8_t> got(16);
  wav.capture(got);
  EXPECT_EQ(got[0], 1);
  EXPECT_EQ(got[9], 10);
  EXPECT_EQ(got[10], 0x80) << "U8 silence";
}

TEST_F(WavTest, UserErrorsNameTheFile) {
  try {
    WavSoundBackend wav((dir / "no" / "out.wav").string(), "");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("no/out.wav"), std::string::npos) << e.what();
  }
  spit(dir / "text.wav", {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!'});
  try {
    WavSoundBackend wav((dir / "out.wav").string(), (dir / "text.wav").string());
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("is not a PCM WAV file"), std::string::npos) << e.what();
  }
  // A WAV of A-law samples (format tag 6).
  std::vector<uint8_t> alaw = wav_header({SoundFormat::u8, 8000, 1}, 4);
  alaw[20] = 6;
  alaw.resize(alaw.size() + 4);
  spit(dir / "alaw.wav", alaw);
  EXPECT_THROW(WavSoundBackend((dir / "out.wav").string(), (dir / "alaw.wav").string()), UserError);
}

#ifdef LIBVMM_TEST_ALSA
// ALSA's null PCM (alsa-lib's "null" plugin: no sound hardware needed) through the plug layer.
TEST(AlsaSound, PlaysIntoTheNullPcmInEveryFormat) {
  auto alsa = open_sound_backend("alsa:null", "", "--sound alsa:null");
  EXPECT_EQ(alsa->describe(), "alsa null");
  for (SoundFormat f : kAllSoundFormats) {
    const SoundParams p{f, 44100, 2};
    ASSERT_EQ(alsa->open(SoundDirection::output, p), "") << to_string(f);
    alsa->start(SoundDirection::output);
    const auto ready = alsa->frames_ready(SoundDirection::output);
    ASSERT_TRUE(ready.has_value()) << "paced by ALSA's clock";
    std::vector<uint8_t> frames(64 * p.frame_bytes(), 0);
    alsa->play(frames);
    alsa->stop(SoundDirection::output);
    alsa->close(SoundDirection::output);
  }
}

// STOP lets what ALSA holds play out (the guest was told it was played); a START after it, and
// a PREPARE after a RELEASE of a draining stream, start afresh.
TEST(AlsaSound, AStoppedStreamStartsAndReopensAgain) {
  auto alsa = open_sound_backend("alsa:null", "", "--sound alsa:null");
  const SoundParams p{SoundFormat::s16, 48000, 2};
  std::vector<uint8_t> frames(256 * p.frame_bytes(), 0);
  for (int round = 0; round < 2; ++round) {
    ASSERT_EQ(alsa->open(SoundDirection::output, p), "");
    for (int i = 0; i < 2; ++i) {
      alsa->start(SoundDirection::output);
      alsa->play(frames);
      ASSERT_TRUE(alsa->frames_ready(SoundDirection::output).has_value());
      alsa->stop(SoundDirection::output);
    }
    alsa->close(SoundDirection::output);
  }
  EXPECT_EQ(alsa->xruns(SoundDirection::output), 0u);
}

TEST(AlsaSound, APcmThatDoesNotExistIsAUserError) {
  try {
    open_sound_backend("alsa:libvmm_no_such_pcm", "", "--sound alsa:libvmm_no_such_pcm");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("--sound alsa:libvmm_no_such_pcm: no ALSA PCM "
                                         "'libvmm_no_such_pcm'"),
              std::string::npos)
        << e.what();
  }
}
#endif

TEST_F(WavTest, TheSoundDeviceKindChecksItsSpec) {
  const VirtioDeviceKind* kind = find_virtio_device_kind("virtio_sound");
  ASSERT_NE(kind, nullptr);
  EXPECT_EQ(kind->flag(), "--sound");
  auto problems = [&](const std::string& value) {
    auto p = check_spec(spec_from_flag(*kind, value), HostFiles::real());
    return p.empty() ? std::string() : p.front();
  };
  EXPECT_EQ(problems("none"), "");
  EXPECT_EQ(problems("alsa"), "");
  EXPECT_EQ(problems("alsa:hw:0"), "");
  EXPECT_NE(problems("alsa:").find("needs a PCM name"), std::string::npos);
  EXPECT_NE(problems("alsa,in=x.wav").find("in= needs the wav backend"), std::string::npos);
  EXPECT_EQ(problems("wav:" + (dir / "out.wav").string()), "");
  EXPECT_NE(problems("pulse").find("unknown sound backend 'pulse'"), std::string::npos);
  EXPECT_NE(problems("wav:").find("needs an output file"), std::string::npos);
  EXPECT_NE(problems("wav:" + (dir / "no" / "out.wav").string()).find("no folder"),
            std::string::npos);
  EXPECT_NE(problems("none,in=x.wav").find("in= needs the wav backend"), std::string::npos);
  EXPECT_NE(problems("wav:" + (dir / "o.wav").string() + ",in=" + (dir / "missing.wav").string())
                .find("missing.wav"),
            std::string::npos);
  EXPECT_TRUE(problems("wav:o.wav,bogus").starts_with("--sound wav:o.wav,bogus: unknown option"));
  const auto paths = kind->host_paths(spec_from_flag(*kind, "wav:/a/out.wav,in=/b/in.wav"));
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_EQ(paths[0].path, "/a/out.wav");
  EXPECT_EQ(paths[0].use, HostPath::Use::create);
  EXPECT_EQ(paths[1].use, HostPath::Use::read);
  // ALSA's files are not planned for a jail: its PCM is opened before the jail, inherited.
  EXPECT_TRUE(kind->host_paths(spec_from_flag(*kind, "alsa")).empty());
  EXPECT_TRUE(kind->host_paths(spec_from_flag(*kind, "alsa:hw:0,,0")).empty());
  // A comma in the PCM name is doubled in the flag.
  EXPECT_EQ(spec_from_flag(*kind, "alsa:hw:0,,0").value_or("backend", ""), "alsa:hw:0,0");
  EXPECT_EQ(problems("alsa:hw:0,,0"), "");
  EXPECT_TRUE(problems("alsa:hw:0,0").starts_with("--sound alsa:hw:0,0: unknown option"))
      << problems("alsa:hw:0,0");
  // Nothing to open early but ALSA; early ALSA is the backend the device gets.
  EXPECT_TRUE(open_sound_backend_early("none", "", "--sound none").empty());
  EXPECT_TRUE(open_sound_backend_early("wav:/nonexistent/o.wav", "", "--sound wav:").empty());
  open_sound_backend_early("alsa:null", "", "--sound alsa:null");
  EXPECT_EQ(open_sound_backend("alsa:null", "", "--sound alsa:null")->describe(), "alsa null");
  // Two devices on one value: two opened early, one each (the second used to reuse the first's
  // and then open its own inside the jail, where ALSA has no device nodes).
  open_sound_backend_early("alsa:null", "", "--sound alsa:null");
  open_sound_backend_early("alsa:null", "", "--sound alsa:null");
  const auto first = open_sound_backend("alsa:null", "", "--sound alsa:null");
  const auto second = open_sound_backend("alsa:null", "", "--sound alsa:null");
  EXPECT_NE(first.get(), second.get());
  EXPECT_EQ(second->describe(), "alsa null");
}

}  // namespace virtio_sound_test
