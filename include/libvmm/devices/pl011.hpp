// An ARM PrimeCell PL011 UART, as Linux's amba-pl011 driver binds and drives it (the console of
// AArch64 guests; arch-neutral code, unit-tested everywhere).
//
// Guest output goes to a CharBackend at once while it has room: the transmit FIFO stays empty,
// FR.TXFE is set and the TX interrupt is raised again by every write to DR. When the backend has
// no room (a reader who does not read), bytes wait in the transmit FIFO (16 entries, or 1 with
// the FIFO off): FR.TXFE clears, FR.BUSY sets, FR.TXFF sets once it is full, and the TX
// interrupt waits until the backend drained it, so the guest's driver waits as on real
// hardware and no host thread waits. A byte written to a full FIFO is lost (counted). Host input
// fills a 16-entry receive FIFO; what does not fit waits in a bounded pending buffer, and the
// backend is paused while that buffer is full (InputFlowControl, as in Uart16550). RX and
// receive-timeout interrupts are levels of the FIFO: RX at the IFLS trigger level, RT whenever data
// waits, so a driver that reads until RXFE always sees its interrupt drop. Loopback (CR.LBE), DMA,
// IrDA and modem-control outputs are not emulated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "libvmm/core/bus.hpp"

namespace libvmm {

class CharBackend;
class EventLoop;
class InputFlowControl;
class IrqLine;

class Pl011 : public BusDevice {
 public:
  static constexpr uint64_t kWindowSize = 0x1000;  // the size to attach on the MMIO bus
  static constexpr size_t kFifoSize = 16;          // PL011 r1p4: Linux reads 16 from the ID
  static constexpr size_t kDefaultPendingLimit = 4096;

  // Register offsets (PL011 TRM, table 3-1).
  static constexpr uint64_t kDr = 0x000;
  static constexpr uint64_t kRsrEcr = 0x004;
  static constexpr uint64_t kFr = 0x018;
  static constexpr uint64_t kIlpr = 0x020;
  static constexpr uint64_t kIbrd = 0x024;
  static constexpr uint64_t kFbrd = 0x028;
  static constexpr uint64_t kLcrH = 0x02C;
  static constexpr uint64_t kCr = 0x030;
  static constexpr uint64_t kIfls = 0x034;
  static constexpr uint64_t kImsc = 0x038;
  static constexpr uint64_t kRis = 0x03C;
  static constexpr uint64_t kMis = 0x040;
  static constexpr uint64_t kIcr = 0x044;
  static constexpr uint64_t kDmacr = 0x048;
  static constexpr uint64_t kPeriphId0 = 0xFE0;  // PeriphID0..3 then PCellID0..3, 4 bytes apart

  // Flag register bits.
  static constexpr uint32_t kFrCts = 1u << 0;
  static constexpr uint32_t kFrDsr = 1u << 1;
  static constexpr uint32_t kFrDcd = 1u << 2;
  static constexpr uint32_t kFrBusy = 1u << 3;
  static constexpr uint32_t kFrRxfe = 1u << 4;
  static constexpr uint32_t kFrTxff = 1u << 5;
  static constexpr uint32_t kFrRxff = 1u << 6;
  static constexpr uint32_t kFrTxfe = 1u << 7;

  // Interrupt bits (IMSC, RIS, MIS, ICR).
  static constexpr uint32_t kIntRx = 1u << 4;
  static constexpr uint32_t kIntTx = 1u << 5;
  static constexpr uint32_t kIntRt = 1u << 6;
  static constexpr uint32_t kIntAll = 0x7FF;

  Pl011(std::string name, std::shared_ptr<CharBackend> backend, std::shared_ptr<IrqLine> irq,
        size_t pending_limit = kDefaultPendingLimit);

  // Starts host input: the backend delivers it to receive() on `loop`'s thread. Before start()
  // (tests), flow control calls are direct. The backend and loop must stop delivering before
  // this UART is destroyed.
  void start(EventLoop& loop);

  // Host input (the backend's sink). Never drops bytes; see the class comment.
  void receive(std::span<const uint8_t> bytes);
  size_t pending_bytes() const;
  // Guest output waiting for the backend, and output lost to a full transmit FIFO.
  size_t transmit_fifo_bytes() const;
  uint64_t transmit_overruns() const;

  ~Pl011() override;
  Pl011(const Pl011&) = delete;
  Pl011& operator=(const Pl011&) = delete;

  std::string name() const override { return name_; }
  // 32-bit registers; narrower accesses see their low bytes, unknown offsets read 0.
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  struct Effects {
    bool input_flow_changed = false;
    EventLoop* loop = nullptr;
  };

  uint32_t read_register(uint64_t offset, Effects& effects);
  void write_register(uint64_t offset, uint32_t value, Effects& effects);
  uint32_t flags() const;
  uint32_t raw_interrupts() const;
  size_t rx_trigger_level() const;
  size_t fifo_capacity() const;
  void refill_fifo(Effects& effects);
  void transmit(uint8_t byte);
  void drain_transmit_fifo();  // under the lock: offers the transmit FIFO to the backend
  void on_output_room();       // the backend's output listener, on the loop thread
  void update_irq();
  void apply(const Effects& effects);

  const std::string name_;
  const std::shared_ptr<CharBackend> backend_;
  const std::shared_ptr<IrqLine> irq_;
  const std::shared_ptr<InputFlowControl> input_flow_;

  mutable std::mutex mutex_;
  EventLoop* loop_ = nullptr;
  std::deque<uint8_t> rx_fifo_;
  std::deque<uint8_t> pending_;
  std::deque<uint8_t> tx_fifo_;  // guest output the backend has not taken yet
  uint64_t tx_overruns_ = 0;
  bool tx_pending_ = true;  // TX raw interrupt: the transmit FIFO drained below its trigger
  bool irq_level_ = false;
  uint32_t ibrd_ = 0;
  uint32_t fbrd_ = 0;
  uint32_t lcr_h_ = 0;
  uint32_t cr_ = 0x300;   // reset value: TXE and RXE set, UART disabled
  uint32_t ifls_ = 0x12;  // reset value: both trigger levels at 1/2
  uint32_t imsc_ = 0;
  uint32_t ilpr_ = 0;
  uint32_t dmacr_ = 0;
};

}  // namespace libvmm
