#include "libvmm/arch/riscv64/plic.hpp"

#include <stdexcept>

namespace libvmm::riscv64 {
namespace {

constexpr uint32_t kMaxSources = 1024;
constexpr uint32_t kMaxContexts = 15872;

class PlicLine final : public IrqLine {
 public:
  PlicLine(std::shared_ptr<Plic> plic, uint32_t source) : plic_(std::move(plic)), source_(source) {}
  uint32_t number() const override { return source_; }
  void set_level(bool asserted) override { plic_->set_level(source_, asserted); }
  void pulse() override { plic_->pulse(source_); }

 private:
  std::shared_ptr<Plic> plic_;
  uint32_t source_;
};

}  // namespace

Plic::Plic(uint32_t sources, uint32_t contexts, Output output)
    : sources_(sources),
      contexts_(contexts),
      words_((sources + 31) / 32),
      output_(std::move(output)),
      priority_(sources, 0),
      pending_(sources, false),
      claimed_(sources, false),
      level_(sources, false),
      enable_(static_cast<size_t>(contexts) * words_, 0),
      threshold_(contexts, 0),
      asserted_(contexts, false) {
  if (sources < 2 || sources > kMaxSources || contexts == 0 || contexts > kMaxContexts) {
    throw std::invalid_argument("PLIC: 2-1024 sources and 1-15872 contexts");
  }
}

void Plic::read(uint64_t offset, std::span<uint8_t> data) {
  uint32_t value = 0;
  if (data.size() == 4 && offset % 4 == 0 && offset < kPlicSize) {
    std::lock_guard lock(mutex_);
    value = read_register(offset);
  }
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = i < 4 ? static_cast<uint8_t>(value >> (8 * i)) : 0;
  }
}

void Plic::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.size() != 4 || offset % 4 != 0 || offset >= kPlicSize) return;
  const uint32_t value = uint32_t{data[0]} | (uint32_t{data[1]} << 8) | (uint32_t{data[2]} << 16) |
                         (uint32_t{data[3]} << 24);
  std::lock_guard lock(mutex_);
  write_register(offset, value);
}

uint32_t Plic::read_register(uint64_t offset) {
  if (offset < kPlicPendingBase) {
    const uint64_t source = offset / 4;
    return source < sources_ ? priority_[source] : 0;
  }
  if (offset < kPlicEnableBase) {
    const uint64_t word = (offset - kPlicPendingBase) / 4;
    if (word >= words_) return 0;
    uint32_t bits = 0;
    for (uint32_t bit = 0; bit < 32; ++bit) {
      const uint64_t source = word * 32 + bit;
      if (source < sources_ && pending_[source]) bits |= 1u << bit;
    }
    return bits;
  }
  if (offset < kPlicContextBase) {
    const uint64_t context = (offset - kPlicEnableBase) / kPlicEnableStride;
    const uint64_t word = (offset - kPlicEnableBase) % kPlicEnableStride / 4;
    if (context >= contexts_ || word >= words_) return 0;
    return enable_[context * words_ + word];
  }
  const uint64_t context = (offset - kPlicContextBase) / kPlicContextStride;
  const uint64_t reg = (offset - kPlicContextBase) % kPlicContextStride;
  if (context >= contexts_) return 0;
  const auto c = static_cast<uint32_t>(context);
  if (reg == 0) return threshold_[c];
  if (reg != 4) return 0;
  // Claim: the best interrupt for this context, no longer pending, in service until completed.
  const uint32_t source = best_source(c);
  if (source != 0) {
    pending_[source] = false;
    claimed_[source] = true;
    update_outputs();
  }
  return source;
}

void Plic::write_register(uint64_t offset, uint32_t value) {
  if (offset < kPlicPendingBase) {
    const uint64_t source = offset / 4;
    if (source == 0 || source >= sources_) return;
    priority_[source] = value & kPlicMaxPriority;  // WARL: the bits this PLIC has
  } else if (offset < kPlicEnableBase) {
    return;  // pending bits are read-only
  } else if (offset < kPlicContextBase) {
    const uint64_t context = (offset - kPlicEnableBase) / kPlicEnableStride;
    const uint64_t word = (offset - kPlicEnableBase) % kPlicEnableStride / 4;
    if (context >= contexts_ || word >= words_) return;
    uint32_t bits = value;
    if (word == 0) bits &= ~1u;  // source 0 does not exist
    if (word == words_ - 1 && sources_ % 32 != 0) bits &= (1u << (sources_ % 32)) - 1;
    enable_[context * words_ + word] = bits;
  } else {
    const uint64_t context = (offset - kPlicContextBase) / kPlicContextStride;
    const uint64_t reg = (offset - kPlicContextBase) % kPlicContextStride;
    if (context >= contexts_) return;
    const auto c = static_cast<uint32_t>(context);
    if (reg == 0) {
      threshold_[c] = value & kPlicMaxPriority;
    } else if (reg == 4) {
      // Complete: ignored unless the source is in service and enabled for this context.
      if (value == 0 || value >= sources_ || !claimed_[value] || !enabled(c, value)) return;
      claimed_[value] = false;
      if (level_[value]) pending_[value] = true;  // still asserted: a new request
    } else {
      return;
    }
  }
  update_outputs();
}

uint32_t Plic::best_source(uint32_t context) const {
  uint32_t best = 0;
  uint32_t best_priority = threshold_[context];
  for (uint32_t source = 1; source < sources_; ++source) {
    if (pending_[source] && !claimed_[source] && enabled(context, source) &&
        priority_[source] > best_priority) {
      best = source;
      best_priority = priority_[source];
    }
  }
  return best;
}

void Plic::update_outputs() {
  for (uint32_t context = 0; context < contexts_; ++context) {
    const bool now = best_source(context) != 0;
    if (now == asserted_[context]) continue;
    asserted_[context] = now;
    if (output_) output_(context, now);
  }
}

void Plic::set_level(uint32_t source, bool asserted) {
  if (source == 0 || source >= sources_) return;
  std::lock_guard lock(mutex_);
  if (level_[source] == asserted) return;
  level_[source] = asserted;
  // A level request is withdrawn when the line drops before it is claimed.
  if (!claimed_[source]) pending_[source] = asserted;
  update_outputs();
}

void Plic::pulse(uint32_t source) {
  if (source == 0 || source >= sources_) return;
  std::lock_guard lock(mutex_);
  pending_[source] = true;  // delivered after the current one completes, if in service
  update_outputs();
}

std::shared_ptr<IrqLine> Plic::line(uint32_t source) {
  if (source == 0 || source >= sources_) {
    throw std::invalid_argument("PLIC: no source " + std::to_string(source));
  }
  return std::make_shared<PlicLine>(shared_from_this(), source);
}

bool Plic::output(uint32_t context) const {
  std::lock_guard lock(mutex_);
  return context < contexts_ && asserted_[context];
}

}  // namespace libvmm::riscv64
