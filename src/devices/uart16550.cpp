#include "libvmm/devices/uart16550.hpp"

#include <algorithm>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/backends/input_flow_control.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/irq.hpp"

namespace libvmm {
namespace {

// Register offsets. With LCR.DLAB set, offsets 0 and 1 are the divisor latch (DLL, DLM).
constexpr uint64_t kRbrThr = 0;
constexpr uint64_t kIer = 1;
constexpr uint64_t kIirFcr = 2;
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

constexpr uint8_t kIerRxData = 0x01;
constexpr uint8_t kIerThre = 0x02;
constexpr uint8_t kIerLineStatus = 0x04;
constexpr uint8_t kIerModemStatus = 0x08;
constexpr uint8_t kIerWritable = 0x0F;

// IIR interrupt identification, highest priority first.
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirThre = 0x02;
constexpr uint8_t kIirModemStatus = 0x00;
constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kIirFifoEnabled = 0xC0;

constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kFcrClearTx = 0x04;

constexpr uint8_t kLcrDlab = 0x80;

constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrWritable = 0x1F;

constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrThrEmpty = 0x20;
constexpr uint8_t kLsrTransmitterEmpty = 0x40;

constexpr uint8_t kMsrDeltaCts = 0x01;
constexpr uint8_t kMsrDeltaDsr = 0x02;
constexpr uint8_t kMsrTrailingRi = 0x04;
constexpr uint8_t kMsrDeltaDcd = 0x08;
constexpr uint8_t kMsrDeltas = 0x0F;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;
constexpr uint8_t kMsrStatus = 0xF0;

// A connected modem-less line: carrier, data set ready and clear to send.
constexpr uint8_t kMsrConnected = kMsrDcd | kMsrDsr | kMsrCts;

}  // namespace

Uart16550::Uart16550(std::string name, std::shared_ptr<CharBackend> backend,
                     std::shared_ptr<IrqLine> irq, size_t pending_limit)
    : name_(std::move(name)),
      backend_(std::move(backend)),
      irq_(std::move(irq)),
      input_flow_(InputFlowControl::create(backend_, pending_limit)),
      msr_(kMsrConnected) {
  backend_->set_output_listener([this] { on_output_room(); });
}

Uart16550::~Uart16550() {
  backend_->set_output_listener(nullptr);
}

void Uart16550::start(EventLoop& loop) {
  {
    std::lock_guard lock(mutex_);
    loop_ = &loop;
  }
  backend_->start(loop, [this](std::span<const uint8_t> bytes) { receive(bytes); });
}

void Uart16550::receive(std::span<const uint8_t> bytes) {
  Effects effects;
  {
    std::lock_guard lock(mutex_);
    pending_.insert(pending_.end(), bytes.begin(), bytes.end());
    refill_fifo(effects);  // also decides whether input should pause
    update_irq();
  }
  // We are on the loop thread (or a test's), where flow control runs: apply the current state
  // now, whether or not this call changed it, rather than post it behind older requests.
  input_flow_->apply();
}

size_t Uart16550::pending_bytes() const {
  std::lock_guard lock(mutex_);
  return pending_.size();
}

size_t Uart16550::transmit_fifo_bytes() const {
  std::lock_guard lock(mutex_);
  return tx_fifo_.size();
}

uint64_t Uart16550::transmit_discarded() const {
  std::lock_guard lock(mutex_);
  return tx_discarded_;
}

uint64_t Uart16550::transmit_overruns() const {
  std::lock_guard lock(mutex_);
  return tx_overruns_;
}

void Uart16550::on_output_room() {
  std::lock_guard lock(mutex_);
  drain_transmit_fifo();
  update_irq();
}

void Uart16550::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (data.empty() || offset >= kRegisterCount) return;
  Effects effects;
  {
    std::lock_guard lock(mutex_);
    data[0] = read_register(offset, effects);
    update_irq();
  }
  apply(effects);
}

void Uart16550::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty() || offset >= kRegisterCount) return;
  Effects effects;
  {
    std::lock_guard lock(mutex_);
    write_register(offset, data[0], effects);
    update_irq();
  }
  apply(effects);
}

uint8_t Uart16550::read_register(uint64_t offset, Effects& effects) {
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kRbrThr: {
      if (dlab) return dll_;
      if (rx_fifo_.empty()) return 0;
      const uint8_t byte = rx_fifo_.front();
      rx_fifo_.pop_front();
      const size_t before = rx_fifo_.size();
      refill_fifo(effects);
      refilled_ = refilled_ || rx_fifo_.size() > before;
      return byte;
    }
    case kIer:
      return dlab ? dlm_ : ier_;
    case kIirFcr:
      return read_iir();
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      return read_lsr();
    case kMsr:
      return read_msr();
    case kScr:
      return scr_;
    default:
      return 0;
  }
}

void Uart16550::write_register(uint64_t offset, uint8_t value, Effects& effects) {
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kRbrThr:
      if (dlab) {
        dll_ = value;
      } else {
        transmit(value);
      }
      break;
    case kIer:
      if (dlab) {
        dlm_ = value;
      } else {
        write_ier(value);
      }
      break;
    case kIirFcr:
      write_fcr(value, effects);
      break;
    case kLcr:
      lcr_ = value;
      break;
    case kMcr:
      write_mcr(value, effects);
      break;
    case kScr:
      scr_ = value;
      break;
    default:  // LSR and MSR are read-only
      break;
  }
}

// The byte leaves (or loops back) at once, and THRE rises again, unless the backend has no room:
// then it waits in the transmit FIFO, THRE stays clear, and its interrupt comes with the room.
// The backend never blocks, so calling it under the lock keeps the output in order.
void Uart16550::transmit(uint8_t byte) {
  if (loopback()) {
    thre_pending_ = true;
    if (rx_fifo_.size() < fifo_capacity()) {
      rx_fifo_.push_back(byte);
    } else {
      overrun_ = true;
    }
    return;
  }
  thre_pending_ = false;  // writing THR acknowledges the THR-empty interrupt
  if (tx_fifo_.size() >= fifo_capacity()) {
    ++tx_overruns_;  // the guest did not wait for THRE: the byte is lost, as on the chip
    return;
  }
  tx_fifo_.push_back(byte);
  drain_transmit_fifo();
}

void Uart16550::drain_transmit_fifo() {
  if (tx_fifo_.empty()) return;  // nothing was waiting: no new interrupt
  while (!tx_fifo_.empty()) {
    const uint8_t byte = tx_fifo_.front();
    if (backend_->write(std::span(&byte, 1)) == 0) return;  // the listener calls us again
    tx_fifo_.pop_front();
  }
  thre_pending_ = true;
}

void Uart16550::write_ier(uint8_t value) {
  value &= kIerWritable;
  // A real 16550 raises THRE when it is enabled while THR is empty.
  if ((ier_ & kIerThre) == 0 && (value & kIerThre) != 0 && tx_fifo_.empty()) {
    thre_pending_ = true;
  }
  ier_ = value;
}

void Uart16550::write_fcr(uint8_t value, Effects& effects) {
  const bool enable = (value & kFcrEnable) != 0;
  // Switching between FIFO and single-byte mode resets the FIFOs, as on the real chip.
  if (enable != fifo_enabled_ || (value & kFcrClearRx) != 0) rx_fifo_.clear();
  if ((enable != fifo_enabled_ || (value & kFcrClearTx) != 0) && !tx_fifo_.empty()) {
    // What waited for a stalled backend, discarded as the guest asks (Linux does when it
    // closes the port, after its own wait for the output to drain); THR is empty again.
    tx_discarded_ += tx_fifo_.size();
    tx_fifo_.clear();
    thre_pending_ = true;
  }
  fifo_enabled_ = enable;
  // Only the chip's FIFO is cleared: host input still waiting is not the guest's to discard.
  refill_fifo(effects);
}

void Uart16550::write_mcr(uint8_t value, Effects& effects) {
  mcr_ = value & kMcrWritable;
  update_modem_status();
  refill_fifo(effects);  // leaving loopback reconnects the receiver
}

uint8_t Uart16550::read_iir() {
  const uint8_t id = pending_interrupt();
  if (id == kIirThre) thre_pending_ = false;  // reading IIR acknowledges THRE
  // The FIFO refills from held host input as the guest reads it, faster than any line, so the
  // guest may never see it empty: Linux's handler then gives up ("too much work for irq")
  // with the line still high, and COM1's ISA pin is edge-triggered: no edge, no interrupt,
  // input stalled for good. Each handler pass reads IIR: after a refill a new edge is made
  // there, which the controller holds until the handler ends, and then delivers.
  if (refilled_ && irq_level_) {
    irq_->set_level(false);
    irq_->set_level(true);
  }
  refilled_ = false;
  return id | (fifo_enabled_ ? kIirFifoEnabled : 0);
}

uint8_t Uart16550::read_lsr() {
  uint8_t lsr = tx_fifo_.empty() ? kLsrThrEmpty | kLsrTransmitterEmpty : 0;
  if (!rx_fifo_.empty()) lsr |= kLsrDataReady;
  if (overrun_) lsr |= kLsrOverrun;
  overrun_ = false;
  return lsr;
}

uint8_t Uart16550::read_msr() {
  const uint8_t msr = msr_;
  msr_ &= kMsrStatus;
  return msr;
}

bool Uart16550::loopback() const {
  return (mcr_ & kMcrLoop) != 0;
}

size_t Uart16550::fifo_capacity() const {
  return fifo_enabled_ ? kFifoSize : 1;
}

void Uart16550::refill_fifo(Effects& effects) {
  if (!loopback()) {
    while (rx_fifo_.size() < fifo_capacity() && !pending_.empty()) {
      rx_fifo_.push_back(pending_.front());
      pending_.pop_front();
    }
  }
  update_input_pause(effects);
}

void Uart16550::update_input_pause(Effects& effects) {
  if (!input_flow_->update(pending_.size())) return;
  effects.input_flow_changed = true;
  effects.loop = loop_;
}

// In loopback the modem inputs follow the modem outputs; otherwise the line looks connected.
void Uart16550::update_modem_status() {
  uint8_t status = kMsrConnected;
  if (loopback()) {
    status = 0;
    if ((mcr_ & kMcrRts) != 0) status |= kMsrCts;
    if ((mcr_ & kMcrDtr) != 0) status |= kMsrDsr;
    if ((mcr_ & kMcrOut1) != 0) status |= kMsrRi;
    if ((mcr_ & kMcrOut2) != 0) status |= kMsrDcd;
  }
  const uint8_t old = msr_ & kMsrStatus;
  const uint8_t changed = old ^ status;
  uint8_t deltas = msr_ & kMsrDeltas;
  if ((changed & kMsrCts) != 0) deltas |= kMsrDeltaCts;
  if ((changed & kMsrDsr) != 0) deltas |= kMsrDeltaDsr;
  if ((changed & kMsrDcd) != 0) deltas |= kMsrDeltaDcd;
  if ((old & kMsrRi) != 0 && (status & kMsrRi) == 0) deltas |= kMsrTrailingRi;
  msr_ = status | deltas;
}

uint8_t Uart16550::pending_interrupt() const {
  if ((ier_ & kIerLineStatus) != 0 && overrun_) return kIirLineStatus;
  if ((ier_ & kIerRxData) != 0 && !rx_fifo_.empty()) return kIirRxData;
  if ((ier_ & kIerThre) != 0 && thre_pending_) return kIirThre;
  if ((ier_ & kIerModemStatus) != 0 && (msr_ & kMsrDeltas) != 0) return kIirModemStatus;
  return kIirNoInterrupt;
}

// Called under the lock so that level changes reach the line in the order they happened.
void Uart16550::update_irq() {
  const bool level = pending_interrupt() != kIirNoInterrupt;
  if (level == irq_level_) return;
  irq_level_ = level;
  irq_->set_level(level);
}

void Uart16550::apply(const Effects& effects) {
  // Flow control runs on the loop thread; without a loop (tests) the call is direct.
  if (effects.input_flow_changed) input_flow_->request_apply(effects.loop);
}

}  // namespace libvmm
