#include "libvmm/devices/pl011.hpp"

#include <algorithm>
#include <array>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/backends/input_flow_control.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/irq.hpp"
#include "primecell.hpp"

namespace libvmm {
namespace {

constexpr uint32_t kLcrHFifoEnable = 1u << 4;
constexpr uint32_t kIflsRxShift = 3;
constexpr uint32_t kIflsMask = 0x3F;
constexpr uint32_t kCrWritable = 0xFF87;  // bits 6:3 are reserved
constexpr uint32_t kLcrHWritable = 0xFF;

}  // namespace

Pl011::Pl011(std::string name, std::shared_ptr<CharBackend> backend, std::shared_ptr<IrqLine> irq,
             size_t pending_limit)
    : name_(std::move(name)),
      backend_(std::move(backend)),
      irq_(std::move(irq)),
      input_flow_(InputFlowControl::create(backend_, pending_limit)) {
  backend_->set_output_listener([this] { on_output_room(); });
}

Pl011::~Pl011() {
  backend_->set_output_listener(nullptr);
}

void Pl011::start(EventLoop& loop) {
  {
    std::lock_guard lock(mutex_);
    loop_ = &loop;
  }
  backend_->start(loop, [this](std::span<const uint8_t> bytes) { receive(bytes); });
}

void Pl011::receive(std::span<const uint8_t> bytes) {
  Effects effects;
  {
    std::lock_guard lock(mutex_);
    pending_.insert(pending_.end(), bytes.begin(), bytes.end());
    refill_fifo(effects);
    update_irq();
  }
  // On the loop thread: apply the current flow-control wish now (see Uart16550::receive).
  input_flow_->apply();
}

size_t Pl011::pending_bytes() const {
  std::lock_guard lock(mutex_);
  return pending_.size();
}

size_t Pl011::transmit_fifo_bytes() const {
  std::lock_guard lock(mutex_);
  return tx_fifo_.size();
}

uint64_t Pl011::transmit_overruns() const {
  std::lock_guard lock(mutex_);
  return tx_overruns_;
}

void Pl011::on_output_room() {
  std::lock_guard lock(mutex_);
  drain_transmit_fifo();
  update_irq();
}

// The backend never blocks, so calling it under the lock keeps the output in order.
void Pl011::transmit(uint8_t byte) {
  if (tx_fifo_.size() >= fifo_capacity()) {
    ++tx_overruns_;  // the guest did not wait for TXFF to clear: lost, as on the chip
    return;
  }
  tx_fifo_.push_back(byte);
  drain_transmit_fifo();
  if (!tx_fifo_.empty()) tx_pending_ = false;  // above its trigger until the backend drains it
}

void Pl011::drain_transmit_fifo() {
  if (tx_fifo_.empty()) return;  // nothing was waiting: no new interrupt
  while (!tx_fifo_.empty()) {
    const uint8_t byte = tx_fifo_.front();
    if (backend_->write(std::span(&byte, 1)) == 0) return;  // the listener calls us again
    tx_fifo_.pop_front();
  }
  tx_pending_ = true;  // the FIFO is below its trigger level again
}

void Pl011::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (data.empty() || offset % 4 != 0 || offset >= kWindowSize) return;
  Effects effects;
  uint32_t value;
  {
    std::lock_guard lock(mutex_);
    value = read_register(offset, effects);
    update_irq();
  }
  for (size_t i = 0; i < std::min<size_t>(data.size(), 4); ++i) {
    data[i] = static_cast<uint8_t>(value >> (8 * i));
  }
  apply(effects);
}

void Pl011::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty() || offset % 4 != 0 || offset >= kWindowSize) return;
  uint32_t value = 0;
  for (size_t i = 0; i < std::min<size_t>(data.size(), 4); ++i)
    value |= uint32_t{data[i]} << (8 * i);
  Effects effects;
  {
    std::lock_guard lock(mutex_);
    write_register(offset, value, effects);
    update_irq();
  }
  apply(effects);
}

uint32_t Pl011::read_register(uint64_t offset, Effects& effects) {
  if (primecell::is_id_register(offset)) return primecell::id_register(offset, 0x011, 1);
  switch (offset) {
    case kDr: {
      if (rx_fifo_.empty()) return 0;
      const uint8_t byte = rx_fifo_.front();
      rx_fifo_.pop_front();
      refill_fifo(effects);
      return byte;  // error bits 11:8 stay clear: host input arrives intact
    }
    case kRsrEcr:
      return 0;
    case kFr:
      return flags();
    case kIlpr:
      return ilpr_;
    case kIbrd:
      return ibrd_;
    case kFbrd:
      return fbrd_;
    case kLcrH:
      return lcr_h_;
    case kCr:
      return cr_;
    case kIfls:
      return ifls_;
    case kImsc:
      return imsc_;
    case kRis:
      return raw_interrupts();
    case kMis:
      return raw_interrupts() & imsc_;
    case kDmacr:
      return dmacr_;
    default:
      return 0;
  }
}

void Pl011::write_register(uint64_t offset, uint32_t value, Effects& effects) {
  switch (offset) {
    case kDr:
      transmit(static_cast<uint8_t>(value));
      break;
    case kIlpr:
      ilpr_ = value & 0xFF;
      break;
    case kIbrd:
      ibrd_ = value & 0xFFFF;
      break;
    case kFbrd:
      fbrd_ = value & 0x3F;
      break;
    case kLcrH: {
      const bool was_enabled = (lcr_h_ & kLcrHFifoEnable) != 0;
      lcr_h_ = value & kLcrHWritable;
      // Leaving FIFO mode keeps one byte; host input beyond it waits in pending_, not lost.
      if (was_enabled && (lcr_h_ & kLcrHFifoEnable) == 0) {
        while (rx_fifo_.size() > 1) {
          pending_.push_front(rx_fifo_.back());
          rx_fifo_.pop_back();
        }
      }
      refill_fifo(effects);
      break;
    }
    case kCr:
      cr_ = value & kCrWritable;
      break;
    case kIfls:
      ifls_ = value & kIflsMask;
      break;
    case kImsc:
      imsc_ = value & kIntAll;
      break;
    case kIcr:
      // RX and RT follow the FIFO level (they drop when it is read); only TX is latched.
      if ((value & kIntTx) != 0) tx_pending_ = false;
      break;
    case kDmacr:
      dmacr_ = value & 0x7;
      break;
    default:
      break;  // read-only or reserved
  }
}

uint32_t Pl011::flags() const {
  uint32_t fr = kFrCts | kFrDsr | kFrDcd;  // a connected line
  if (tx_fifo_.empty()) {
    fr |= kFrTxfe;
  } else {
    fr |= kFrBusy;
  }
  if (tx_fifo_.size() >= fifo_capacity()) fr |= kFrTxff;
  if (rx_fifo_.empty()) fr |= kFrRxfe;
  if (rx_fifo_.size() >= fifo_capacity()) fr |= kFrRxff;
  return fr;
}

uint32_t Pl011::raw_interrupts() const {
  uint32_t ris = 0;
  if (tx_pending_) ris |= kIntTx;
  if (!rx_fifo_.empty() && rx_fifo_.size() >= rx_trigger_level()) ris |= kIntRx;
  if (!rx_fifo_.empty()) ris |= kIntRt;
  return ris;
}

// IFLS.RXIFLSEL: 1/8, 1/4, 1/2, 3/4 or 7/8 of the FIFO; without the FIFO, one byte.
size_t Pl011::rx_trigger_level() const {
  if ((lcr_h_ & kLcrHFifoEnable) == 0) return 1;
  static constexpr std::array<size_t, 5> kEighths = {1, 2, 4, 6, 7};
  const size_t select = std::min<size_t>((ifls_ >> kIflsRxShift) & 0x7, kEighths.size() - 1);
  return std::max<size_t>(1, kFifoSize * kEighths[select] / 8);
}

size_t Pl011::fifo_capacity() const {
  return (lcr_h_ & kLcrHFifoEnable) != 0 ? kFifoSize : 1;
}

void Pl011::refill_fifo(Effects& effects) {
  while (rx_fifo_.size() < fifo_capacity() && !pending_.empty()) {
    rx_fifo_.push_back(pending_.front());
    pending_.pop_front();
  }
  if (!input_flow_->update(pending_.size())) return;
  effects.input_flow_changed = true;
  effects.loop = loop_;
}

// Under the lock, so that level changes reach the line in the order they happened.
void Pl011::update_irq() {
  const bool level = (raw_interrupts() & imsc_) != 0;
  if (level == irq_level_) return;
  irq_level_ = level;
  irq_->set_level(level);
}

void Pl011::apply(const Effects& effects) {
  if (effects.input_flow_changed) input_flow_->request_apply(effects.loop);
}

}  // namespace libvmm
