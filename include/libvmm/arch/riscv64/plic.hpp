// A RISC-V PLIC (riscv-plic-spec 1.0.0, compatible "sifive,plic-1.0.0") emulated in the VMM:
// the interrupt controller of a riscv64 guest whose host KVM has no in-kernel AIA (Linux
// before 6.5). One supervisor-mode context per hart (context n is hart n's S-mode external
// interrupt, as the device tree's interrupts-extended says).
//
// Registers (32-bit, naturally aligned; anything else reads 0 and ignores writes, as do
// sources and contexts the PLIC does not have):
//   0x000000 + 4*s         priority of source s (0 = never; 1..7)
//   0x001000 + 4*(s/32)    pending bits (read-only)
//   0x002000 + 0x80*c + 4*(s/32)   context c's enable bits
//   0x200000 + 0x1000*c    context c's priority threshold (0..7)
//   0x200004 + 0x1000*c    context c's claim (read) / complete (write)
//
// Sources are driven by devices (set_level for level-triggered ones such as the 16550A,
// pulse for edge-triggered ones such as virtio-mmio). Whenever a context's output (an enabled,
// pending, unclaimed source above its threshold) changes, `output(context, asserted)` is called
// (the machine raises or lowers the hart's external interrupt with KVM_INTERRUPT). Thread-safe:
// vCPU threads access the registers while the event loop drives sources; `output` is called
// with the PLIC's lock held, in order, and must not call back into it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "libvmm/core/bus.hpp"
#include "libvmm/core/irq.hpp"

namespace libvmm::riscv64 {

constexpr uint64_t kPlicPendingBase = 0x1000;
constexpr uint64_t kPlicEnableBase = 0x2000;
constexpr uint64_t kPlicEnableStride = 0x80;
constexpr uint64_t kPlicContextBase = 0x20'0000;
constexpr uint64_t kPlicContextStride = 0x1000;
constexpr uint64_t kPlicSize = 0x400'0000;  // the whole register space
constexpr uint32_t kPlicMaxPriority = 7;

class Plic final : public BusDevice, public std::enable_shared_from_this<Plic> {
 public:
  using Output = std::function<void(uint32_t context, bool asserted)>;

  // Sources 1 .. sources-1 (at most 1024), `contexts` contexts (at most 15872).
  Plic(uint32_t sources, uint32_t contexts, Output output);

  std::string name() const override { return "PLIC"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // A level-triggered source's line; out-of-range sources are ignored.
  void set_level(uint32_t source, bool asserted);
  // One edge on an edge-triggered source.
  void pulse(uint32_t source);
  // Source `source` as a device's interrupt line (the PLIC must be owned by a shared_ptr).
  std::shared_ptr<IrqLine> line(uint32_t source);

  // What the hart of `context` sees (tests, and the machine after creating its vCPUs).
  bool output(uint32_t context) const;

 private:
  uint32_t read_register(uint64_t offset);
  void write_register(uint64_t offset, uint32_t value);
  uint32_t best_source(uint32_t context) const;  // 0 if none; lock held
  void update_outputs();                         // lock held

  bool enabled(uint32_t context, uint32_t source) const {
    return (enable_[context * words_ + source / 32] >> (source % 32)) & 1;
  }

  const uint32_t sources_;
  const uint32_t contexts_;
  const uint32_t words_;  // 32-bit words of bits per source
  Output output_;
  mutable std::mutex mutex_;
  std::vector<uint32_t> priority_;  // per source
  std::vector<bool> pending_;       // per source
  std::vector<bool> claimed_;       // per source: claimed and not yet completed
  std::vector<bool> level_;         // per source: the line of a level-triggered source
  std::vector<uint32_t> enable_;    // contexts_ * words_
  std::vector<uint32_t> threshold_;
  std::vector<bool> asserted_;  // per context: the output last reported
};

}  // namespace libvmm::riscv64
