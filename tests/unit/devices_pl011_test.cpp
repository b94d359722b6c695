#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "libvmm/backends/file_backend.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/devices/pl011.hpp"
#include "unit/support/char_io.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/loop_thread.hpp"

namespace libvmm {
namespace devices_pl011_test {

using test::bytes_of;

class FakeIrq : public IrqLine {
 public:
  uint32_t number() const override { return 33; }
  void set_level(bool asserted) override { levels.push_back(asserted); }
  void pulse() override {}
  bool level() const { return !levels.empty() && levels.back(); }
  std::vector<bool> levels;
};

constexpr uint32_t kLcrHFen = 1u << 4;
constexpr uint32_t kLcrHWlen8 = 3u << 5;

class Pl011Test : public testing::Test {
 protected:
  explicit Pl011Test(size_t pending_limit = Pl011::kDefaultPendingLimit)
      : uart_("pl011", backend_, irq_, pending_limit) {}

  uint32_t in(uint64_t offset) {
    std::array<uint8_t, 4> b{0xEE, 0xEE, 0xEE, 0xEE};
    uart_.read(offset, b);
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
  }
  void out(uint64_t offset, uint32_t value) {
    const std::array<uint8_t, 4> b{static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                                   static_cast<uint8_t>(value >> 16),
                                   static_cast<uint8_t>(value >> 24)};
    uart_.write(offset, b);
  }
  std::string read_all() {
    std::string got;
    while ((in(Pl011::kFr)&Pl011::kFrRxfe) == 0) got.push_back(static_cast<char>(in(Pl011::kDr)));
    return got;
  }

  std::shared_ptr<test::FakeCharBackend> backend_ = std::make_shared<test::FakeCharBackend>();
  std::shared_ptr<FakeIrq> irq_ = std::make_shared<FakeIrq>();
  Pl011 uart_;
};

// Linux's AMBA bus reads these before it binds amba-pl011 (part 0x011, ARM, PrimeCell).
TEST_F(Pl011Test, IdentifiesAsArmPl011PrimeCell) {
  const std::array<uint32_t, 8> expected = {0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(in(Pl011::kPeriphId0 + 4 * i), expected[i]) << i;
  }
}

TEST_F(Pl011Test, ResetState) {
  EXPECT_EQ(in(Pl011::kFr) & (Pl011::kFrRxfe | Pl011::kFrTxfe | Pl011::kFrTxff | Pl011::kFrRxff),
            Pl011::kFrRxfe | Pl011::kFrTxfe);
  EXPECT_EQ(in(Pl011::kCr), 0x300u);
  EXPECT_EQ(in(Pl011::kIfls), 0x12u);
  EXPECT_EQ(in(Pl011::kImsc), 0u);
  EXPECT_EQ(in(Pl011::kMis), 0u);
  EXPECT_EQ(in(Pl011::kRis), Pl011::kIntTx);  // the transmit FIFO is empty
  EXPECT_FALSE(irq_->level());
}

TEST_F(Pl011Test, ConfigurationRegistersKeepTheirWritableBits) {
  out(Pl011::kIbrd, 0x12345);
  out(Pl011::kFbrd, 0xFF);
  out(Pl011::kLcrH, kLcrHFen | kLcrHWlen8 | 0xFF00);
  out(Pl011::kIfls, 0xFFFF);
  out(Pl011::kImsc, 0xFFFFFFFF);
  EXPECT_EQ(in(Pl011::kIbrd), 0x2345u);
  EXPECT_EQ(in(Pl011::kFbrd), 0x3Fu);
  EXPECT_EQ(in(Pl011::kLcrH), kLcrHFen | kLcrHWlen8);
  EXPECT_EQ(in(Pl011::kIfls), 0x3Fu);
  EXPECT_EQ(in(Pl011::kImsc), static_cast<uint32_t>(Pl011::kIntAll));
}

TEST_F(Pl011Test, TransmitsToBackendAndRaisesTx) {
  out(Pl011::kDr, 'h');
  out(Pl011::kDr, 0x100 | 'i');  // only the data byte leaves
  EXPECT_EQ(backend_->output, "hi");
  out(Pl011::kIcr, Pl011::kIntTx);
  EXPECT_EQ(in(Pl011::kRis)&Pl011::kIntTx, 0u);
  out(Pl011::kImsc, Pl011::kIntTx);
  EXPECT_FALSE(irq_->level());
  out(Pl011::kDr, '!');  // the byte left at once: below the trigger level again
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(in(Pl011::kMis), Pl011::kIntTx);
  out(Pl011::kImsc, 0);  // Linux masks TX when it has nothing more to send
  EXPECT_FALSE(irq_->level());
}

TEST_F(Pl011Test, ReceiveTimeoutInterruptUntilTheFifoIsRead) {
  out(Pl011::kLcrH, kLcrHFen | kLcrHWlen8);
  out(Pl011::kImsc, Pl011::kIntRx | Pl011::kIntRt);
  uart_.receive(bytes_of("ab"));
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(in(Pl011::kMis), Pl011::kIntRt);  // 2 bytes: below the 1/2 trigger (8)
  EXPECT_EQ(in(Pl011::kFr)&Pl011::kFrRxfe, 0u);
  EXPECT_EQ(read_all(), "ab");
  EXPECT_FALSE(irq_->level());
  EXPECT_EQ(in(Pl011::kDr), 0u);  // empty FIFO
}

TEST_F(Pl011Test, RxInterruptAtTheTriggerLevel) {
  out(Pl011::kLcrH, kLcrHFen);
  out(Pl011::kIfls, 0 << 3);  // 1/8: 2 bytes
  uart_.receive(bytes_of("x"));
  EXPECT_EQ(in(Pl011::kRis)&Pl011::kIntRx, 0u);
  uart_.receive(bytes_of("y"));
  EXPECT_EQ(in(Pl011::kRis)&Pl011::kIntRx, Pl011::kIntRx);
  out(Pl011::kIfls, 4 << 3);  // 7/8: 14 bytes
  EXPECT_EQ(in(Pl011::kRis)&Pl011::kIntRx, 0u);
  out(Pl011::kIfls, 7 << 3);  // reserved encodings act as the highest level
  EXPECT_EQ(in(Pl011::kRis)&Pl011::kIntRx, 0u);
}

TEST_F(Pl011Test, FifoHoldsSixteenAndTheRestWaits) {
  out(Pl011::kLcrH, kLcrHFen);
  const std::string input = "0123456789abcdefXYZ";
  uart_.receive(bytes_of(input));
  EXPECT_EQ(uart_.pending_bytes(), 3u);
  EXPECT_NE(in(Pl011::kFr)&Pl011::kFrRxff, 0u);
  EXPECT_EQ(read_all(), input);
  EXPECT_EQ(uart_.pending_bytes(), 0u);
}

TEST_F(Pl011Test, WithoutFifoOneByteAtATimeAndNothingLost) {
  uart_.receive(bytes_of("abc"));
  EXPECT_EQ(uart_.pending_bytes(), 2u);
  EXPECT_NE(in(Pl011::kFr)&Pl011::kFrRxff, 0u);
  out(Pl011::kLcrH, kLcrHFen);  // entering FIFO mode takes the waiting bytes
  EXPECT_EQ(uart_.pending_bytes(), 0u);
  out(Pl011::kLcrH, 0);  // leaving it keeps one byte in the holding register
  EXPECT_EQ(uart_.pending_bytes(), 2u);
  EXPECT_EQ(read_all(), "abc");
}

TEST_F(Pl011Test, NarrowAndOddAccesses) {
  uint8_t byte = 'q';
  uart_.write(Pl011::kDr, std::span(&byte, 1));
  EXPECT_EQ(backend_->output, "q");
  std::array<uint8_t, 2> half{0xEE, 0xEE};
  uart_.read(Pl011::kCr, half);
  EXPECT_EQ(half, (std::array<uint8_t, 2>{0x00, 0x03}));
  uart_.write(Pl011::kDr + 1, std::span(&byte, 1));  // unaligned: ignored
  uart_.write(Pl011::kWindowSize, std::span(&byte, 1));
  EXPECT_EQ(backend_->output, "q");
  EXPECT_EQ(in(Pl011::kDr + 2), 0u);
  EXPECT_EQ(in(0x800), 0u);  // reserved
  std::array<uint8_t, 8> wide{};
  wide.fill(0xEE);
  uart_.read(Pl011::kPeriphId0, wide);  // 8 bytes: the register, then zeros
  EXPECT_EQ(wide, (std::array<uint8_t, 8>{0x11, 0, 0, 0, 0, 0, 0, 0}));
  uart_.read(Pl011::kDr, std::span<uint8_t>());
}

TEST_F(Pl011Test, ReadOnlyRegistersIgnoreWrites) {
  out(Pl011::kFr, 0);
  out(Pl011::kRis, 0xFFFF);
  out(Pl011::kMis, 0xFFFF);
  out(Pl011::kPeriphId0, 0x55);
  EXPECT_EQ(in(Pl011::kFr)&Pl011::kFrTxfe, Pl011::kFrTxfe);
  EXPECT_EQ(in(Pl011::kPeriphId0), 0x11u);
}

class Pl011FlowControlTest : public Pl011Test {
 protected:
  Pl011FlowControlTest() : Pl011Test(8) {}
};

TEST_F(Pl011FlowControlTest, PausesWhenPendingIsFullAndResumesBelowHalf) {
  out(Pl011::kLcrH, kLcrHFen);
  std::string input;
  for (int i = 0; i < 30; ++i) input.push_back(static_cast<char>('A' + i));
  uart_.receive(bytes_of(std::string_view(input).substr(0, 23)));  // 16 + 7 pending
  EXPECT_EQ(backend_->pauses, 0);
  uart_.receive(bytes_of(std::string_view(input).substr(23)));  // 16 + 14 pending
  EXPECT_EQ(backend_->pauses, 1);
  std::string got;
  while (backend_->resumes == 0) got.push_back(static_cast<char>(in(Pl011::kDr)));
  EXPECT_EQ(got.size(), 11u);  // fewer than 4 pending now
  got += read_all();
  EXPECT_EQ(got, input);
  EXPECT_EQ(backend_->pauses, 1);
  EXPECT_EQ(backend_->repeated, 0);
}

TEST_F(Pl011FlowControlTest, ResumeIsPostedToTheLoopAfterStart) {
  EventLoop loop;
  uart_.start(loop);
  out(Pl011::kLcrH, kLcrHFen);
  backend_->sink(bytes_of("0123456789abcdef01234567"));
  EXPECT_EQ(backend_->pauses, 1);
  read_all();
  EXPECT_EQ(backend_->resumes, 0);  // not on this (vCPU) thread
  loop.post([&loop] { loop.stop(); });
  loop.run();
  EXPECT_EQ(backend_->resumes, 1);
}

// A hostile guest hammering every offset never crashes and never makes output from reads.
TEST_F(Pl011Test, EveryOffsetAndWidthIsSafe) {
  uart_.receive(bytes_of("input"));
  for (uint64_t offset = 0; offset < Pl011::kWindowSize + 8; ++offset) {
    for (size_t width : {1u, 2u, 4u, 8u}) {
      std::vector<uint8_t> data(width, 0xA5);
      uart_.read(offset, data);
      if (offset != Pl011::kDr) uart_.write(offset, data);
    }
  }
  SUCCEED();
}

// ---- Guest output to a backend without room -------------------------------------------------

// The backend takes nothing: bytes wait in the transmit FIFO (TXFE clear, BUSY set, TXFF once
// full) and the TX interrupt waits until the backend has room; then they leave in order.
TEST_F(Pl011Test, FullBackendFillsTheTransmitFifo) {
  out(Pl011::kLcrH, kLcrHFen | kLcrHWlen8);
  out(Pl011::kImsc, Pl011::kIntTx);
  EXPECT_TRUE(irq_->level());
  out(Pl011::kIcr, Pl011::kIntTx);
  EXPECT_FALSE(irq_->level());
  backend_->room = 0;
  out(Pl011::kDr, 'a');
  EXPECT_EQ(in(Pl011::kFr) & (Pl011::kFrTxfe | Pl011::kFrBusy | Pl011::kFrTxff), Pl011::kFrBusy);
  EXPECT_FALSE(irq_->level()) << "no TX interrupt while the FIFO waits";
  for (char c : std::string_view("bcdefghijklmnop")) out(Pl011::kDr, static_cast<uint8_t>(c));
  EXPECT_EQ(uart_.transmit_fifo_bytes(), Pl011::kFifoSize);
  EXPECT_NE(in(Pl011::kFr)&Pl011::kFrTxff, 0u);
  out(Pl011::kDr, '!');  // the driver did not wait for TXFF to clear: lost, as on the chip
  EXPECT_EQ(uart_.transmit_overruns(), 1u);

  backend_->make_room(3);
  EXPECT_EQ(backend_->output, "abc");
  EXPECT_EQ(in(Pl011::kFr)&Pl011::kFrTxff, 0u);  // room for more in the FIFO
  EXPECT_FALSE(irq_->level());
  backend_->make_room(test::FakeCharBackend::kUnbounded);
  EXPECT_EQ(backend_->output, "abcdefghijklmnop");
  EXPECT_EQ(in(Pl011::kFr) & (Pl011::kFrTxfe | Pl011::kFrBusy | Pl011::kFrTxff), Pl011::kFrTxfe);
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(in(Pl011::kMis), Pl011::kIntTx);
}

// Without the FIFO, one byte fills it.
TEST_F(Pl011Test, FullBackendWithoutFifoHoldsOneByte) {
  backend_->room = 0;
  out(Pl011::kDr, 'x');
  EXPECT_NE(in(Pl011::kFr)&Pl011::kFrTxff, 0u);
  out(Pl011::kDr, 'y');
  EXPECT_EQ(uart_.transmit_overruns(), 1u);
  backend_->make_room(test::FakeCharBackend::kUnbounded);
  EXPECT_EQ(backend_->output, "x");
  EXPECT_EQ(in(Pl011::kFr)&Pl011::kFrTxff, 0u);
}

// The PL011 on a FIFO whose reader does not read, driven as Linux's console does (wait while
// FR.TXFF, write DR): no register access waits on the host, the loop stays free, the backend
// keeps no more than its limit, and once the reader reads, everything arrives in order.
TEST(Pl011OutputTest, FifoNobodyReadsKeepsVcpuAndLoopFree) {
  using namespace std::chrono_literals;
  using Clock = std::chrono::steady_clock;
  ::signal(SIGPIPE, SIG_IGN);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("libvmm-pl011-fifo-" + std::to_string(::getpid())))
          .string();
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  UniqueFd reader(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  auto backend = std::make_shared<FileBackend>(path);
  std::filesystem::remove(path);
  const std::string data = test::numbered_lines(256 * 1024);
  std::atomic<size_t> sent{0};
  std::atomic<int64_t> slowest_access_us{0};
  std::atomic<bool> give_up{false};
  {
    Pl011 uart("pl011", backend, std::make_shared<FakeIrq>());
    test::LoopThread io;
    uart.start(io.loop);
    auto timed = [&](auto access) {
      const auto start = Clock::now();
      access();
      const int64_t us =
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
      if (us > slowest_access_us.load()) slowest_access_us.store(us);
    };
    auto fr = [&] {
      std::array<uint8_t, 4> b{};
      timed([&] { uart.read(Pl011::kFr, b); });
      return uint32_t{b[0]} | uint32_t{b[1]} << 8;
    };
    std::thread vcpu([&] {
      const std::array<uint8_t, 4> enable{static_cast<uint8_t>(kLcrHFen | kLcrHWlen8), 0, 0, 0};
      uart.write(Pl011::kLcrH, enable);
      for (const char c : data) {
        while ((fr() & Pl011::kFrTxff) != 0 && !give_up) std::this_thread::sleep_for(100us);
        if (give_up) return;
        const std::array<uint8_t, 4> byte{static_cast<uint8_t>(c), 0, 0, 0};
        timed([&] { uart.write(Pl011::kDr, byte); });
        ++sent;
      }
    });
    const auto deadline = Clock::now() + 20s;
    while (uart.transmit_fifo_bytes() < Pl011::kFifoSize && Clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(uart.transmit_fifo_bytes(), Pl011::kFifoSize) << "the backend never ran out of room";
    EXPECT_LT(sent.load(), data.size());
    EXPECT_LE(backend->queued_bytes(), FileBackend::kOutputLimit);
    auto loop_alive = std::async(std::launch::async, [&] { io.call([] {}); });
    EXPECT_EQ(loop_alive.wait_for(5s), std::future_status::ready) << "the event loop is stuck";

    const std::string got = test::read_fd(reader.get(), data.size(), 60s);
    give_up = true;
    vcpu.join();
    EXPECT_EQ(sent.load(), data.size());
    EXPECT_TRUE(got == data) << "output lost or reordered (" << got.size() << " bytes)";
    EXPECT_LT(slowest_access_us.load(), 1'000'000) << "a register access waited on the host";
    EXPECT_EQ(uart.transmit_overruns(), 0u);
  }
}

}  // namespace devices_pl011_test
}  // namespace libvmm
