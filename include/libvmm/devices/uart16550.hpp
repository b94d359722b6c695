// A 16550A UART, as Linux's 8250 driver probes and drives it (COM1: port 0x3F8, IRQ 4).
//
// Guest output goes to a CharBackend byte by byte. While the backend takes it at once, THR and
// the transmitter are always empty. When the backend has no room (a reader who does not read),
// the byte waits in the transmit FIFO (16 bytes, or 1 with the FIFO off) and LSR.THRE/TEMT stay
// clear, with the THR-empty interrupt held back, until the backend drains: the guest's driver
// waits for the UART as on real hardware, and no host thread waits. A byte written while that
// FIFO is full is lost (counted), as on the chip. Host input fills a 16-byte receive FIFO; what
// does not fit waits in a bounded pending buffer, and the backend is asked to pause its input while
// that buffer is full.
//
// Flow control is a desired state (InputFlowControl): the UART records whether input should be
// paused (decided on the loop thread by receive(), on vCPU threads by guest reads), and whatever
// runs on the loop thread afterwards tells the backend that *current* state if it differs from
// what the backend was last told. So a resume posted from a vCPU thread that runs after a newer
// pause cannot undo it.
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

class Uart16550 : public BusDevice {
 public:
  static constexpr uint64_t kCom1Port = 0x3F8;
  static constexpr uint32_t kCom1Irq = 4;
  static constexpr uint64_t kRegisterCount = 8;  // the size to attach on the port bus
  static constexpr size_t kFifoSize = 16;
  static constexpr size_t kDefaultPendingLimit = 4096;

  // Tests pass a fake backend and IrqLine and feed input through receive() without start().
  Uart16550(std::string name, std::shared_ptr<CharBackend> backend, std::shared_ptr<IrqLine> irq,
            size_t pending_limit = kDefaultPendingLimit);

  // Starts host input: the backend delivers it to receive() on `loop`'s thread, and flow control
  // decided on vCPU threads is posted there. Before start(), those calls are direct.
  // The backend and loop must stop delivering before this UART is destroyed.
  void start(EventLoop& loop);

  // Host input (the backend's sink). Never drops bytes: beyond the FIFO they wait, and the
  // backend is paused once `pending_limit` bytes wait, resumed when fewer than half do. So with a
  // backend that honours pause_input(), at most pending_limit - 1 bytes plus one delivery wait.
  // Must not be called from the backend's pause_input()/resume_input().
  void receive(std::span<const uint8_t> bytes);

  // Host input waiting for FIFO space.
  size_t pending_bytes() const;
  // Guest output waiting for the backend, and output lost to a full transmit FIFO.
  size_t transmit_fifo_bytes() const;
  uint64_t transmit_overruns() const;
  // Bytes the guest discarded from the transmit FIFO (FCR) before the backend took them.
  uint64_t transmit_discarded() const;

  ~Uart16550() override;
  Uart16550(const Uart16550&) = delete;
  Uart16550& operator=(const Uart16550&) = delete;

  std::string name() const override { return name_; }
  // One-byte registers: a wider access uses its first byte (extra read bytes are 0).
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  // What a register access decided to do outside the lock (host I/O, flow control).
  struct Effects {
    bool input_flow_changed = false;  // the desired pause state changed
    EventLoop* loop = nullptr;        // where flow control runs, if start() was called
  };

  uint8_t read_register(uint64_t offset, Effects& effects);
  void write_register(uint64_t offset, uint8_t value, Effects& effects);
  void transmit(uint8_t byte);
  // Under the lock: offers the transmit FIFO to the backend; THRE rises once it is empty.
  void drain_transmit_fifo();
  // The backend has room again (its output listener, on the loop thread).
  void on_output_room();
  void write_ier(uint8_t value);
  void write_fcr(uint8_t value, Effects& effects);
  void write_mcr(uint8_t value, Effects& effects);
  uint8_t read_iir();
  uint8_t read_lsr();
  uint8_t read_msr();
  bool loopback() const;
  size_t fifo_capacity() const;
  // Moves pending host input into the FIFO (not in loopback: the receiver is disconnected).
  void refill_fifo(Effects& effects);
  // Pauses input at the limit, resumes it below half (the desired state, not yet the backend's).
  void update_input_pause(Effects& effects);
  void update_modem_status();
  // Interrupt identification: the highest-priority pending source, or kNoInterrupt.
  uint8_t pending_interrupt() const;
  void update_irq();
  void apply(const Effects& effects);

  const std::string name_;
  const std::shared_ptr<CharBackend> backend_;
  const std::shared_ptr<IrqLine> irq_;
  // Pauses the backend while pending_ is full; shared with the tasks posted to the loop.
  const std::shared_ptr<InputFlowControl> input_flow_;

  mutable std::mutex mutex_;
  EventLoop* loop_ = nullptr;    // set by start()
  std::deque<uint8_t> rx_fifo_;  // what the guest can read now
  std::deque<uint8_t> pending_;  // host input waiting for FIFO space
  std::deque<uint8_t> tx_fifo_;  // guest output the backend has not taken yet
  uint64_t tx_overruns_ = 0;
  uint64_t tx_discarded_ = 0;
  bool thre_pending_ = false;  // THR-empty interrupt, until IIR reports it or THR is written
  bool overrun_ = false;       // LSR.OE
  bool irq_level_ = false;     // what the IRQ line was last set to
  bool refilled_ = false;      // a receive-buffer read refilled the FIFO since IIR was last read
  uint8_t ier_ = 0;
  uint8_t lcr_ = 0;
  uint8_t mcr_ = 0;
  uint8_t msr_ = 0;  // status bits 7:4 and delta bits 3:0
  uint8_t scr_ = 0;
  uint8_t dll_ = 0;
  uint8_t dlm_ = 0;
  bool fifo_enabled_ = false;
};

}  // namespace libvmm
