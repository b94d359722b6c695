#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/backends/file_backend.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/irq.hpp"
#include "libvmm/devices/uart16550.hpp"
#include "unit/support/char_io.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/loop_thread.hpp"

namespace libvmm {
namespace devices_uart16550_test {

// Register offsets and bits, spelled as in Linux's serial_reg.h.
constexpr uint64_t kRx = 0, kTx = 0, kDll = 0, kIer = 1, kDlm = 1, kIir = 2, kFcr = 2, kLcr = 3,
                   kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
constexpr uint8_t kIerRdi = 0x01, kIerThri = 0x02, kIerRlsi = 0x04, kIerMsi = 0x08;
constexpr uint8_t kIirNoInt = 0x01, kIirMsi = 0x00, kIirThri = 0x02, kIirRdi = 0x04,
                  kIirRlsi = 0x06, kIirIdMask = 0x0F, kIirFifos = 0xC0;
constexpr uint8_t kFcrEnable = 0x01, kFcrClearRcvr = 0x02, kFcrClearXmit = 0x04;
constexpr uint8_t kLcrDlab = 0x80, kLcrWlen8 = 0x03;
constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10;
constexpr uint8_t kLsrDr = 0x01, kLsrOe = 0x02, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kMsrDcts = 0x01, kMsrDdsr = 0x02, kMsrTeri = 0x04, kMsrDdcd = 0x08,
                  kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;

class FakeIrq : public IrqLine {
 public:
  uint32_t number() const override { return 4; }
  void set_level(bool asserted) override { levels.push_back(asserted); }
  void pulse() override { ++pulses; }
  bool level() const { return !levels.empty() && levels.back(); }

  std::vector<bool> levels;  // every change, in order
  int pulses = 0;
};

using test::bytes_of;
using FakeBackend = test::FakeCharBackend;

class UartTest : public testing::Test {
 protected:
  explicit UartTest(size_t pending_limit = Uart16550::kDefaultPendingLimit)
      : uart_("com1", backend_, irq_, pending_limit) {}

  uint8_t in(uint64_t offset) {
    uint8_t value = 0xEE;
    uart_.read(offset, std::span(&value, 1));
    return value;
  }
  void out(uint64_t offset, uint8_t value) { uart_.write(offset, std::span(&value, 1)); }
  uint8_t interrupt_id() { return in(kIir)&kIirIdMask; }
  std::string read_all() {
    std::string got;
    while ((in(kLsr)&kLsrDr) != 0) got.push_back(static_cast<char>(in(kRx)));
    return got;
  }

  std::shared_ptr<FakeBackend> backend_ = std::make_shared<FakeBackend>();
  std::shared_ptr<FakeIrq> irq_ = std::make_shared<FakeIrq>();
  Uart16550 uart_;
};

// The checks of Linux's 8250 autoconfig() and autoconfig_16550a(), in order.
TEST_F(UartTest, PassesLinuxProbeAs16550A) {
  out(kIer, 0);
  EXPECT_EQ(in(kIer)&0x0F, 0);
  out(kIer, 0x0F);
  EXPECT_EQ(in(kIer)&0x0F, 0x0F);
  out(kIer, 0);

  // Loopback test: RTS and OUT2 looped back as CTS and DCD.
  out(kMcr, kMcrLoop | 0x0A);
  EXPECT_EQ(in(kMsr)&0xF0, kMsrDcd | kMsrCts);
  out(kMcr, 0);

  out(kFcr, kFcrEnable);
  EXPECT_EQ(in(kIir) >> 6, 3);  // 16550A: FIFOs enabled and working

  // No EFR behind LCR 0xBF (offset 2 still reads IIR, which is never 0 with FIFOs on).
  out(kLcr, 0xBF);
  EXPECT_NE(in(kIir), 0);
  out(kLcr, 0);
  // No 64-byte FIFO (16750) and no UUE bit in IER (XScale).
  out(kFcr, kFcrEnable | 0x20);
  EXPECT_EQ(in(kIir)&0xE0, kIirFifos);
  out(kIer, 0x40);
  EXPECT_EQ(in(kIer), 0);

  out(kScr, 0x55);
  EXPECT_EQ(in(kScr), 0x55);
  out(kScr, 0xAA);
  EXPECT_EQ(in(kScr), 0xAA);

  EXPECT_NE(in(kLsr), 0xFF);
  EXPECT_EQ(in(kLsr), kLsrThre | kLsrTemt);
}

TEST_F(UartTest, ResetState) {
  EXPECT_EQ(in(kIer), 0);
  EXPECT_EQ(in(kIir), kIirNoInt);  // no interrupt, FIFOs off
  EXPECT_EQ(in(kLcr), 0);
  EXPECT_EQ(in(kMcr), 0);
  EXPECT_EQ(in(kMsr), kMsrDcd | kMsrDsr | kMsrCts);
  EXPECT_TRUE(irq_->levels.empty());
}

TEST_F(UartTest, DivisorLatchBehindDlab) {
  out(kIer, kIerRdi);
  out(kLcr, kLcrDlab | kLcrWlen8);
  out(kDll, 0x0C);
  out(kDlm, 0x01);
  EXPECT_EQ(in(kDll), 0x0C);
  EXPECT_EQ(in(kDlm), 0x01);
  EXPECT_EQ(backend_->output, "");  // DLL writes are not transmitted
  EXPECT_EQ(in(kLcr), kLcrDlab | kLcrWlen8);

  out(kLcr, kLcrWlen8);
  EXPECT_EQ(in(kIer), kIerRdi);  // offsets 0/1 are THR/IER again
  out(kTx, 'A');
  EXPECT_EQ(backend_->output, "A");
  out(kLcr, kLcrDlab);
  EXPECT_EQ(in(kDll), 0x0C);  // the divisor survived
}

TEST_F(UartTest, TransmitsToBackend) {
  for (char c : std::string_view("hello\r\n")) out(kTx, static_cast<uint8_t>(c));
  EXPECT_EQ(backend_->output, "hello\r\n");
  EXPECT_EQ(in(kLsr) & (kLsrThre | kLsrTemt), kLsrThre | kLsrTemt);
}

TEST_F(UartTest, ThreInterruptRaisedByEnableAndClearedByIirRead) {
  out(kFcr, kFcrEnable);
  out(kIer, kIerThri);  // enabling while THR is empty raises it
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(in(kIir), kIirFifos | kIirThri);  // reading IIR acknowledges it
  EXPECT_FALSE(irq_->level());
  EXPECT_EQ(in(kIir), kIirFifos | kIirNoInt);

  out(kIer, kIerThri);  // still enabled: no new edge, no new interrupt
  EXPECT_FALSE(irq_->level());

  out(kTx, 'x');  // after each transmitted byte THR is empty again
  EXPECT_TRUE(irq_->level());
  out(kIer, 0);  // disabling hides it
  EXPECT_FALSE(irq_->level());
  EXPECT_EQ(irq_->levels, (std::vector<bool>{true, false, true, false}));
}

TEST_F(UartTest, ThreClearedByThrWriteAndSetAgainAfterTransmit) {
  out(kIer, kIerThri);
  EXPECT_EQ(interrupt_id(), kIirThri);  // acknowledged
  out(kTx, 'a');
  out(kTx, 'b');
  EXPECT_EQ(interrupt_id(), kIirThri);
  EXPECT_EQ(interrupt_id(), kIirNoInt);
  EXPECT_EQ(backend_->output, "ab");
}

// serial8250_do_startup(): a real 16550 reasserts THRE when THRI is re-enabled while idle.
TEST_F(UartTest, ReassertsThreForLinuxThreTest) {
  out(kIer, kIerThri);
  const uint8_t iir1 = in(kIir);
  out(kIer, 0);
  out(kIer, kIerThri);
  const uint8_t iir = in(kIir);
  out(kIer, 0);
  EXPECT_EQ(iir1 & kIirNoInt, 0);
  EXPECT_EQ(iir & kIirNoInt, 0);
  EXPECT_FALSE(irq_->level());
}

TEST_F(UartTest, ReceiveRaisesDataInterruptUntilFifoIsRead) {
  out(kFcr, kFcrEnable);
  uart_.receive(bytes_of("ab"));
  EXPECT_FALSE(irq_->level());  // ERBFI off
  EXPECT_EQ(in(kLsr)&kLsrDr, kLsrDr);

  out(kIer, kIerRdi);
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(in(kIir), kIirFifos | kIirRdi);
  EXPECT_TRUE(irq_->level());  // reading IIR does not clear received data
  EXPECT_EQ(in(kRx), 'a');
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(in(kRx), 'b');
  EXPECT_FALSE(irq_->level());
  EXPECT_EQ(in(kLsr)&kLsrDr, 0);
  EXPECT_EQ(in(kRx), 0);  // empty FIFO
  EXPECT_EQ(irq_->levels, (std::vector<bool>{true, false}));
}

// Held host input refills the FIFO as the guest reads it, so the guest may never see it empty:
// Linux's handler then gives up after its pass limit with the line high, and COM1's pin is
// edge-triggered. After a refill, the handler's next IIR read makes a new edge; without one,
// no edge is added.
TEST_F(UartTest, AFifoRefilledUnderTheReaderMakesANewEdgeAtTheNextIirRead) {
  out(kFcr, kFcrEnable);
  out(kIer, kIerRdi);
  uart_.receive(bytes_of(std::string(40, 'x')));
  EXPECT_EQ(irq_->levels, (std::vector<bool>{true}));
  EXPECT_EQ(in(kIir), kIirFifos | kIirRdi);
  EXPECT_EQ(irq_->levels, (std::vector<bool>{true})) << "no refill yet: no edge";
  for (int i = 0; i < 20; ++i) in(kRx);  // the FIFO refilled from the held bytes
  EXPECT_EQ(in(kIir), kIirFifos | kIirRdi);
  EXPECT_EQ(irq_->levels, (std::vector<bool>{true, false, true})) << "a new edge";
  EXPECT_EQ(in(kIir), kIirFifos | kIirRdi);
  EXPECT_EQ(irq_->levels.size(), 3u) << "one per refill";
  EXPECT_EQ(read_all().size(), 20u);
  EXPECT_FALSE(irq_->level());
}

TEST_F(UartTest, IrqLineOnlyChangesOnLevelChange) {
  out(kIer, kIerRdi | kIerThri);
  uart_.receive(bytes_of("x"));
  uart_.receive(bytes_of("y"));
  out(kTx, '1');
  EXPECT_EQ(irq_->levels, (std::vector<bool>{true}));
}

TEST_F(UartTest, InterruptPriority) {
  out(kFcr, kFcrEnable);
  out(kMcr, kMcrLoop);  // modem status deltas and a loopback overrun
  for (int i = 0; i < 17; ++i) out(kTx, static_cast<uint8_t>('0' + i));
  out(kIer, kIerRdi | kIerThri | kIerRlsi | kIerMsi);

  EXPECT_EQ(interrupt_id(), kIirRlsi);  // overrun
  EXPECT_EQ(in(kLsr)&kLsrOe, kLsrOe);   // reading LSR clears it
  EXPECT_EQ(interrupt_id(), kIirRdi);
  EXPECT_EQ(read_all().size(), Uart16550::kFifoSize);
  EXPECT_EQ(interrupt_id(), kIirThri);  // reported once
  EXPECT_EQ(interrupt_id(), kIirMsi);
  in(kMsr);
  EXPECT_EQ(interrupt_id(), kIirNoInt);
  EXPECT_FALSE(irq_->level());
}

TEST_F(UartTest, LoopbackEchoesTransmitAndReflectsModemControl) {
  out(kFcr, kFcrEnable);
  EXPECT_EQ(in(kMsr)&0x0F, 0);
  out(kMcr, kMcrLoop);
  // All four modem inputs dropped (RI was already low).
  EXPECT_EQ(in(kMsr), kMsrDcts | kMsrDdsr | kMsrDdcd);
  EXPECT_EQ(in(kMsr), 0);  // reading MSR clears the deltas

  out(kMcr, kMcrLoop | kMcrDtr | kMcrRts | kMcrOut1 | kMcrOut2);
  EXPECT_EQ(in(kMsr), kMsrCts | kMsrDsr | kMsrRi | kMsrDcd | kMsrDcts | kMsrDdsr | kMsrDdcd);
  out(kMcr, kMcrLoop | kMcrDtr | kMcrRts | kMcrOut2);  // RI falls: trailing edge
  EXPECT_EQ(in(kMsr), kMsrCts | kMsrDsr | kMsrDcd | kMsrTeri);

  out(kTx, 'L');
  out(kTx, 'B');
  EXPECT_EQ(backend_->output, "");
  EXPECT_EQ(read_all(), "LB");

  out(kMcr, 0);
  EXPECT_EQ(in(kMsr)&0xF0, kMsrDcd | kMsrDsr | kMsrCts);
  out(kTx, 'T');
  EXPECT_EQ(backend_->output, "T");
  EXPECT_EQ(read_all(), "");
}

TEST_F(UartTest, LoopbackOverrunSetsOverrunUntilLsrRead) {
  out(kMcr, kMcrLoop);  // FIFOs off: a single-byte receive buffer
  out(kTx, '1');
  out(kTx, '2');
  EXPECT_EQ(in(kLsr), kLsrDr | kLsrOe | kLsrThre | kLsrTemt);
  EXPECT_EQ(in(kLsr), kLsrDr | kLsrThre | kLsrTemt);
  EXPECT_EQ(read_all(), "1");
}

TEST_F(UartTest, HostInputWaitsDuringLoopback) {
  out(kMcr, kMcrLoop);
  uart_.receive(bytes_of("host"));
  EXPECT_EQ(read_all(), "");  // the receiver is disconnected from the line
  out(kMcr, 0);
  EXPECT_EQ(read_all(), "host");
}

TEST_F(UartTest, FifoClearKeepsPendingHostInput) {
  out(kFcr, kFcrEnable);
  uart_.receive(bytes_of("0123456789abcdefWXYZ"));  // 16 in the FIFO, 4 waiting
  out(kFcr, kFcrEnable | kFcrClearRcvr | kFcrClearXmit);
  EXPECT_EQ(read_all(), "WXYZ");
}

// FCR's "clear transmit FIFO" discards what waits for a stalled backend (Linux writes it when
// it closes the port): THR is empty again, and its interrupt comes.
TEST_F(UartTest, ClearingTheTransmitFifoDropsWhatWaitsForTheBackend) {
  out(kFcr, kFcrEnable);
  out(kIer, kIerThri);
  EXPECT_EQ(interrupt_id(), kIirThri);
  backend_->room = 0;
  for (char c : std::string_view("held")) out(kTx, static_cast<uint8_t>(c));
  EXPECT_EQ(uart_.transmit_fifo_bytes(), 4u);
  out(kFcr, kFcrEnable | kFcrClearXmit);
  EXPECT_EQ(uart_.transmit_fifo_bytes(), 0u);
  EXPECT_EQ(uart_.transmit_discarded(), 4u);
  EXPECT_EQ(in(kLsr) & (kLsrThre | kLsrTemt), kLsrThre | kLsrTemt);
  EXPECT_EQ(interrupt_id(), kIirThri);
  backend_->make_room(FakeBackend::kUnbounded);
  EXPECT_EQ(backend_->output, "") << "nothing of it left later";
}

TEST_F(UartTest, FifoSizeDependsOnFifoEnable) {
  uart_.receive(bytes_of("abc"));  // FIFOs off: one byte at a time, the rest waits
  EXPECT_EQ(in(kRx), 'a');
  out(kFcr, kFcrEnable);  // switching modes resets the FIFO, then refills it
  EXPECT_EQ(read_all(), "c");
  uart_.receive(bytes_of("0123456789abcdefgh"));
  out(kMcr, kMcrLoop);
  out(kTx, '!');  // FIFO is full: 16 bytes
  EXPECT_EQ(in(kLsr)&kLsrOe, kLsrOe);
  out(kMcr, 0);
  EXPECT_EQ(read_all(), "0123456789abcdefgh");
}

TEST_F(UartTest, StartConnectsBackendInput) {
  EventLoop loop;
  uart_.start(loop);
  ASSERT_TRUE(backend_->sink);
  backend_->sink(bytes_of("in"));
  EXPECT_EQ(read_all(), "in");
}

TEST_F(UartTest, WideAccessUsesFirstByte) {
  const std::array<uint8_t, 4> value = {0x12, 0x34, 0x56, 0x78};
  uart_.write(kScr, value);
  std::array<uint8_t, 4> got{};
  got.fill(0xEE);
  uart_.read(kScr, got);
  EXPECT_EQ(got, (std::array<uint8_t, 4>{0x12, 0, 0, 0}));

  uart_.write(kTx, std::span(value).first(2));
  EXPECT_EQ(backend_->output, "\x12");
}

TEST_F(UartTest, OffsetsBeyondRegistersIgnored) {
  const uint8_t value = 'z';
  uart_.write(8, std::span(&value, 1));
  uart_.write(0x1000, std::span(&value, 1));
  EXPECT_EQ(backend_->output, "");
  std::array<uint8_t, 2> got{0xEE, 0xEE};
  uart_.read(8, got);
  EXPECT_EQ(got, (std::array<uint8_t, 2>{0, 0}));
  uart_.write(kLsr, std::span(&value, 1));  // read-only registers ignore writes
  uart_.write(kMsr, std::span(&value, 1));
  EXPECT_EQ(in(kLsr), kLsrThre | kLsrTemt);
  EXPECT_EQ(in(kMsr), kMsrDcd | kMsrDsr | kMsrCts);
}

class UartFlowControlTest : public UartTest {
 protected:
  UartFlowControlTest() : UartTest(8) {}
};

TEST_F(UartFlowControlTest, PausesWhenPendingIsFullAndResumesBelowHalf) {
  out(kFcr, kFcrEnable);
  std::string input;
  for (int i = 0; i < 30; ++i) input.push_back(static_cast<char>('A' + i));
  uart_.receive(bytes_of(std::string_view(input).substr(0, 23)));  // 16 + 7 pending
  EXPECT_EQ(backend_->pauses, 0);
  uart_.receive(bytes_of(std::string_view(input).substr(23)));  // 16 + 14 pending: full
  EXPECT_EQ(backend_->pauses, 1);
  uart_.receive({});
  EXPECT_EQ(backend_->pauses, 1);  // asked once

  std::string got;
  while (backend_->resumes == 0) got.push_back(static_cast<char>(in(kRx)));
  // Resumed when fewer than half the limit (4) wait: 16 in the FIFO + 3 pending.
  EXPECT_EQ(got.size(), 11u);
  got += read_all();
  EXPECT_EQ(got, input);  // nothing lost beyond the limit
  EXPECT_EQ(backend_->pauses, 1);
  EXPECT_EQ(backend_->resumes, 1);
}

// A paused terminal keeps reading (for the escape keys) and holds what is typed; resuming hands
// that to the UART from inside resume_input(), whose receive() asks flow control again. That
// call must not wait for the one in progress: it deadlocked the event loop, quit key included.
TEST_F(UartFlowControlTest, InputHeldWhilePausedGoesToTheGuestOnResume) {
  backend_->sink = [this](std::span<const uint8_t> bytes) { uart_.receive(bytes); };
  out(kFcr, kFcrEnable);
  const std::string input = "0123456789abcdef01234567";  // 16 in the FIFO + 8 pending: full
  uart_.receive(bytes_of(input));
  ASSERT_EQ(backend_->pauses, 1);
  const std::string typed = "typed while paused";
  backend_->held.assign(typed.begin(), typed.end());

  std::promise<std::string> read;
  auto got = read.get_future();
  std::thread guest([&] { read.set_value(read_all()); });  // resumes on the way
  if (got.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    std::fprintf(stderr, "the guest's read deadlocked in the flow control\n");
    std::abort();  // fail rather than hang
  }
  guest.join();
  EXPECT_EQ(got.get(), input + typed);  // in order, none lost
  EXPECT_FALSE(backend_->paused);       // paused again by the held bytes, then resumed
  EXPECT_TRUE(backend_->held.empty());
}

TEST_F(UartFlowControlTest, ResumeIsPostedToTheLoopAfterStart) {
  EventLoop loop;
  uart_.start(loop);
  out(kFcr, kFcrEnable);
  backend_->sink(bytes_of("0123456789abcdef01234567"));
  EXPECT_EQ(backend_->pauses, 1);
  read_all();
  EXPECT_EQ(backend_->resumes, 0);  // not on this (vCPU) thread
  loop.post([&loop] { loop.stop(); });
  loop.run();
  EXPECT_EQ(backend_->resumes, 1);
}

// The old race: a guest read decides to resume and posts it; before the loop runs that task, a
// delivery already under way refills the buffer and pauses input again on the loop thread.
TEST_F(UartFlowControlTest, PostedResumeDoesNotUndoANewerPause) {
  EventLoop loop;
  uart_.start(loop);
  out(kFcr, kFcrEnable);
  backend_->sink(bytes_of("0123456789abcdef01234567"));  // 16 in the FIFO, 8 waiting
  ASSERT_TRUE(backend_->paused);
  std::string got;
  while (uart_.pending_bytes() * 2 >= 8) got.push_back(static_cast<char>(in(kRx)));
  EXPECT_EQ(uart_.pending_bytes(), 3u);  // resume wanted, and posted
  EXPECT_TRUE(backend_->paused);

  backend_->sink(bytes_of("ABCDE"));  // 8 waiting again: pause wanted before the resume ran
  EXPECT_TRUE(backend_->paused);
  loop.post([&loop] { loop.stop(); });
  loop.run();  // the posted resume
  EXPECT_TRUE(backend_->paused);
  EXPECT_EQ(uart_.pending_bytes(), 8u);
  EXPECT_EQ(backend_->repeated, 0);

  got += read_all();
  EXPECT_EQ(got, "0123456789abcdef01234567ABCDE");
}

using test::LoopThread;

// Rounds of that interleaving with real threads: a vCPU drains until input should resume; while
// the loop thread is held up, the resume is posted behind a delivery that was under way; then the
// host types for as long as the backend lets it. Pending input stays within pending_limit - 1 plus
// one delivery, and every byte reaches the guest in order.
TEST_F(UartFlowControlTest, PendingStaysBoundedWhenResumesRaceWithPauses) {
  constexpr size_t kLimit = 8;
  constexpr size_t kChunk = 5;  // one host read: 3 waiting + 5 reaches the limit again
  constexpr size_t kBound = kLimit - 1 + kChunk;
  constexpr size_t kMaxTyped = 100 * kChunk;  // a host that ignored pause stops here
  std::string typed;
  std::string got;
  size_t most_pending = 0;
  auto next_bytes = [&typed](size_t n) {
    const size_t start = typed.size();
    for (size_t i = 0; i < n; ++i) typed.push_back(static_cast<char>('!' + (start + i) % 90));
    return std::string_view(typed).substr(start);
  };
  auto deliver = [&](size_t n) {
    backend_->sink(bytes_of(next_bytes(n)));
    most_pending = std::max(most_pending, uart_.pending_bytes());
  };
  // On the loop thread: the host types whenever the backend reads.
  auto type_while_reading = [&] {
    while (!backend_->paused && typed.size() < kMaxTyped) deliver(kChunk);
  };

  LoopThread loop_thread;
  uart_.start(loop_thread.loop);
  out(kFcr, kFcrEnable);
  loop_thread.call(type_while_reading);

  for (int round = 0; round < 20; ++round) {
    std::promise<void> drained;
    std::promise<void> delivered;
    // Odd rounds' late delivery is too small to pause again: the resume goes through.
    const size_t late = round % 2 == 0 ? kChunk : 1;
    loop_thread.loop.post([&, late, wait = drained.get_future().share()] {
      wait.wait();
      deliver(late);  // the read that was under way when the guest drained
      delivered.set_value();
    });
    while (uart_.pending_bytes() * 2 >= kLimit) got.push_back(static_cast<char>(in(kRx)));
    drained.set_value();  // the resume is now posted behind the late delivery
    delivered.get_future().wait();
    loop_thread.call(type_while_reading);  // after the posted resume ran
    EXPECT_TRUE(backend_->paused) << "round " << round;
  }
  EXPECT_LE(most_pending, kBound);
  EXPECT_LT(typed.size(), kMaxTyped);
  EXPECT_EQ(backend_->repeated, 0);
  got += read_all();
  EXPECT_EQ(got, typed);
}

// ---- Guest output to a backend without room -------------------------------------------------

// The backend takes nothing: the byte waits in the transmit FIFO, LSR.THRE and TEMT stay clear
// and no THR-empty interrupt comes until the backend has room; then the bytes leave in order.
TEST_F(UartTest, FullBackendKeepsTheTransmitterBusy) {
  out(kFcr, kFcrEnable);
  out(kIer, kIerThri);
  EXPECT_EQ(interrupt_id(), kIirThri);  // THR empty at first; reading IIR acknowledges it
  backend_->room = 0;
  out(kTx, 'a');
  EXPECT_EQ(in(kLsr) & (kLsrThre | kLsrTemt), 0);
  EXPECT_EQ(interrupt_id(), kIirNoInt);
  EXPECT_FALSE(irq_->level());
  out(kIer, 0);
  out(kIer, kIerThri);  // re-enabling THRI does not raise it while THR holds a byte
  EXPECT_EQ(interrupt_id(), kIirNoInt);
  // The driver's interrupt path writes a FIFO's worth at once: all of it is kept.
  for (char c : std::string_view("bcdefghijklmnop")) out(kTx, static_cast<uint8_t>(c));
  EXPECT_EQ(uart_.transmit_fifo_bytes(), Uart16550::kFifoSize);
  out(kTx, '!');  // the driver did not wait for THRE: lost, as on the chip
  EXPECT_EQ(uart_.transmit_overruns(), 1u);

  backend_->make_room(4);  // some room: still busy
  EXPECT_EQ(backend_->output, "abcd");
  EXPECT_EQ(in(kLsr)&kLsrThre, 0);
  EXPECT_FALSE(irq_->level());
  backend_->make_room(FakeBackend::kUnbounded);
  EXPECT_EQ(backend_->output, "abcdefghijklmnop");
  EXPECT_EQ(in(kLsr) & (kLsrThre | kLsrTemt), kLsrThre | kLsrTemt);
  EXPECT_TRUE(irq_->level());
  EXPECT_EQ(interrupt_id(), kIirThri);
  EXPECT_FALSE(irq_->level());
  out(kTx, 'q');  // and on as before
  EXPECT_EQ(backend_->output, "abcdefghijklmnopq");
  EXPECT_EQ(in(kLsr)&kLsrThre, kLsrThre);
}

// Without the FIFO the transmitter holds one byte.
TEST_F(UartTest, FullBackendWithoutFifoHoldsOneByte) {
  backend_->room = 0;
  out(kTx, 'x');
  out(kTx, 'y');
  EXPECT_EQ(uart_.transmit_fifo_bytes(), 1u);
  EXPECT_EQ(uart_.transmit_overruns(), 1u);
  backend_->make_room(FakeBackend::kUnbounded);
  EXPECT_EQ(backend_->output, "x");
  // A listener call with nothing waiting raises no interrupt.
  out(kIer, kIerThri);
  EXPECT_EQ(interrupt_id(), kIirThri);
  backend_->make_room(FakeBackend::kUnbounded);
  EXPECT_EQ(interrupt_id(), kIirNoInt);
}

// COM1 on a FIFO whose reader does not read, driven as Linux's console does (wait for THRE,
// write THR): no register access waits on the host, the loop stays free, the backend keeps no
// more than its limit, and once the reader reads, all the guest wrote arrives in order.
TEST(UartOutputTest, FifoNobodyReadsKeepsVcpuAndLoopFree) {
  using namespace std::chrono_literals;
  using Clock = std::chrono::steady_clock;
  ::signal(SIGPIPE, SIG_IGN);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("libvmm-uart-fifo-" + std::to_string(::getpid())))
          .string();
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  UniqueFd reader(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  auto backend = std::make_shared<FileBackend>(path);
  std::filesystem::remove(path);
  auto irq = std::make_shared<FakeIrq>();
  const std::string data = test::numbered_lines(256 * 1024);  // > pipe + queue
  std::atomic<size_t> sent{0};
  std::atomic<int64_t> slowest_access_us{0};
  std::atomic<bool> give_up{false};
  {
    Uart16550 uart("com1", backend, irq);
    test::LoopThread io;
    uart.start(io.loop);
    auto timed = [&](auto access) {
      const auto start = Clock::now();
      access();
      const int64_t us =
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
      if (us > slowest_access_us.load()) slowest_access_us.store(us);
    };
    std::thread vcpu([&] {
      for (const char c : data) {
        uint8_t lsr = 0;
        while (true) {
          timed([&] { uart.read(kLsr, std::span(&lsr, 1)); });
          if ((lsr & kLsrThre) != 0 || give_up) break;
          std::this_thread::sleep_for(100us);
        }
        if (give_up) return;
        const uint8_t byte = static_cast<uint8_t>(c);
        timed([&] { uart.write(kTx, std::span(&byte, 1)); });
        ++sent;
      }
    });
    // The guest fills the pipe and the backend's queue, then waits for THRE.
    const auto deadline = Clock::now() + 20s;
    while (uart.transmit_fifo_bytes() == 0 && Clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    EXPECT_EQ(uart.transmit_fifo_bytes(), 1u) << "the backend never ran out of room";
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

}  // namespace devices_uart16550_test
}  // namespace libvmm
