#include "libvmm/pci/msix.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace libvmm::pci {
namespace {

constexpr uint16_t kMsixControlEnable = 1u << 15;
constexpr uint16_t kControlFunctionMask = 1u << 14;

bool valid(uint64_t offset, size_t size, uint64_t limit, const char* what, std::string& why) {
  if ((size != 4 && size != 8) || offset % size != 0 || offset > limit || size > limit - offset) {
    why = fmt::format(
        "{}-byte access at {} offset {:#x}: takes aligned 4- or 8-byte accesses "
        "within its {} bytes",
        size, what, offset, limit);
    return false;
  }
  return true;
}

}  // namespace

MsixTable::MsixTable(uint16_t vectors, std::shared_ptr<MsiSink> sink, bool direct)
    : sink_(std::move(sink)),
      direct_(direct && sink_ && sink_->direct_eventfd(0) >= 0),
      entries_(vectors),
      pending_(vectors),
      reported_(direct_ ? vectors : 0) {
  if (vectors == 0 || vectors > kMaxVectors || !sink_) {
    throw std::invalid_argument("MSI-X: 1 to 2048 vectors and a sink are needed");
  }
}

uint32_t MsixTable::add_capability(ConfigSpace& config, unsigned table_bar, uint32_t table_offset,
                                   unsigned pba_bar, uint32_t pba_offset) {
  if (table_bar >= kBarCount || pba_bar >= kBarCount || table_offset % 8 || pba_offset % 8) {
    throw std::invalid_argument("MSI-X: table and PBA need a BAR and 8-byte aligned offsets");
  }
  const uint32_t cap = config.add_capability(kCapMsix, 12);
  config.set_u16(cap + 2, static_cast<uint16_t>(entries_.size() - 1));
  config.set_writable(cap + 2, 2, kMsixControlEnable | kControlFunctionMask);
  config.set_u32(cap + 4, table_offset | table_bar);
  config.set_u32(cap + 8, pba_offset | pba_bar);
  return cap;
}

void MsixTable::control_written(uint16_t control) {
  const std::lock_guard reporting(report_mutex_);
  std::vector<Message> messages;
  std::vector<std::pair<uint16_t, VectorState>> changed;
  {
    std::lock_guard lock(mutex_);
    enabled_ = control & kMsixControlEnable;
    function_masked_ = control & kControlFunctionMask;
    deliver_pending_locked(messages);
    changed_states_locked(changed);
  }
  report(changed);  // before the pending messages, which may go through the irqfds
  send_all(messages);
}

bool MsixTable::enabled() const {
  std::lock_guard lock(mutex_);
  return enabled_;
}

bool MsixTable::table_read(uint64_t offset, std::span<uint8_t> data, std::string& why) {
  std::fill(data.begin(), data.end(), 0);
  if (!valid(offset, data.size(), table_size(), "MSI-X table", why)) return false;
  std::lock_guard lock(mutex_);
  for (size_t done = 0; done < data.size(); done += 4) {
    const Entry& e = entries_[(offset + done) / kEntrySize];
    const uint32_t words[4] = {e.address_low, e.address_high, e.data, e.control};
    const uint32_t value = words[((offset + done) % kEntrySize) / 4];
    std::memcpy(data.data() + done, &value, 4);
  }
  return true;
}

bool MsixTable::table_write(uint64_t offset, std::span<const uint8_t> data, std::string& why) {
  if (!valid(offset, data.size(), table_size(), "MSI-X table", why)) return false;
  const std::lock_guard reporting(report_mutex_);
  std::vector<Message> programmed;
  std::vector<Message> messages;
  std::vector<std::pair<uint16_t, VectorState>> changed;
  {
    std::lock_guard lock(mutex_);
    for (size_t done = 0; done < data.size(); done += 4) {
      Entry& e = entries_[(offset + done) / kEntrySize];
      uint32_t value;
      std::memcpy(&value, data.data() + done, 4);
      switch (((offset + done) % kEntrySize) / 4) {
        case 0:
          e.address_low = value & ~3u;  // dword aligned
          break;
        case 1:
          e.address_high = value;
          break;
        case 2:
          e.data = value;
          break;
        default:
          e.control = value & 1;  // only the mask bit is defined
          break;
      }
    }
    // An access touches one entry (at most 8 bytes, aligned): tell the sink its message once
    // the entry is unmasked (drivers write address and data while it is masked).
    const auto vector = static_cast<uint16_t>(offset / kEntrySize);
    const Entry& e = entries_[vector];
    if (!(e.control & 1)) {
      programmed.push_back({vector, uint64_t{e.address_high} << 32 | e.address_low, e.data});
    }
    deliver_pending_locked(messages);
    changed_states_locked(changed);
  }
  for (const Message& m : programmed) sink_->vector_programmed(m.vector, m.address, m.data);
  report(changed);
  send_all(messages);
  return true;
}

bool MsixTable::pba_read(uint64_t offset, std::span<uint8_t> data, std::string& why) {
  std::fill(data.begin(), data.end(), 0);
  if (!valid(offset, data.size(), pba_size(), "MSI-X PBA", why)) return false;
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size() * 8; ++i) {
    const size_t vector = offset * 8 + i;
    if (vector >= pending_.size()) continue;
    // A direct vector's signals while masked wait in its eventfd (the sink's).
    if (pending_[vector] || (direct_ && sink_->direct_pending(static_cast<uint16_t>(vector)))) {
      data[i / 8] |= 1u << (i % 8);
    }
  }
  return true;
}

bool MsixTable::notify(uint16_t vector) {
  const std::shared_lock sending(report_mutex_);
  uint64_t address = 0;
  uint32_t value = 0;
  {
    std::lock_guard lock(mutex_);
    if (!enabled_ || vector >= entries_.size()) return false;
    const Entry& e = entries_[vector];
    if (function_masked_ || (e.control & 1)) {
      pending_[vector] = true;
      return true;
    }
    address = uint64_t{e.address_high} << 32 | e.address_low;
    value = e.data;
  }
  sink_->send_vector(vector, address, value);
  return true;
}

bool MsixTable::pending(uint16_t vector) const {
  std::lock_guard lock(mutex_);
  return vector < pending_.size() && pending_[vector];
}

std::optional<MsixTable::VectorState> MsixTable::state(uint16_t vector) const {
  std::lock_guard lock(mutex_);
  if (vector >= entries_.size()) return std::nullopt;
  return state_locked(entries_[vector]);
}

MsixTable::VectorState MsixTable::state_locked(const Entry& e) const {
  return VectorState{enabled_ && !function_masked_ && !(e.control & 1),
                     uint64_t{e.address_high} << 32 | e.address_low, e.data};
}

void MsixTable::deliver_pending_locked(std::vector<Message>& out) {
  if (!enabled_ || function_masked_) return;
  for (size_t v = 0; v < entries_.size(); ++v) {
    const Entry& e = entries_[v];
    if (pending_[v] && !(e.control & 1)) {
      pending_[v] = false;
      out.push_back(
          {static_cast<uint16_t>(v), uint64_t{e.address_high} << 32 | e.address_low, e.data});
    }
  }
}

void MsixTable::changed_states_locked(std::vector<std::pair<uint16_t, VectorState>>& out) {
  if (!direct_) return;
  for (size_t v = 0; v < entries_.size(); ++v) {
    const VectorState now = state_locked(entries_[v]);
    if (now == reported_[v]) continue;
    reported_[v] = now;
    out.emplace_back(static_cast<uint16_t>(v), now);
  }
}

void MsixTable::report(const std::vector<std::pair<uint16_t, VectorState>>& changed) {
  for (const auto& [vector, s] : changed)
    sink_->direct_state(vector, s.deliverable, s.address, s.data);
}

void MsixTable::send_all(const std::vector<Message>& messages) {
  for (const Message& m : messages) sink_->send_vector(m.vector, m.address, m.data);
}

void MsixTable::clear_pending() {
  std::lock_guard lock(mutex_);
  std::fill(pending_.begin(), pending_.end(), false);
}

void MsixTable::reset() {
  const std::lock_guard reporting(report_mutex_);
  std::vector<std::pair<uint16_t, VectorState>> changed;
  {
    std::lock_guard lock(mutex_);
    std::fill(entries_.begin(), entries_.end(), Entry{});
    std::fill(pending_.begin(), pending_.end(), false);
    enabled_ = false;
    function_masked_ = false;
    changed_states_locked(changed);
  }
  report(changed);
}

}  // namespace libvmm::pci
