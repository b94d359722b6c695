#include "msi_routes.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "libvmm/core/error.hpp"
#include "libvmm/core/kvm.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {

GsiRoutes::GsiRoutes(std::vector<kvm_irq_routing_entry> irqchip_routes, uint32_t first_gsi,
                     uint32_t count, Commit commit)
    : irqchip_(std::move(irqchip_routes)),
      first_gsi_(first_gsi),
      count_(count),
      commit_(std::move(commit)) {}

std::optional<uint32_t> GsiRoutes::allocate() {
  std::lock_guard lock(mutex_);
  if (msis_.size() >= count_) return std::nullopt;
  const auto gsi = static_cast<uint32_t>(first_gsi_ + msis_.size());
  msis_.push_back({gsi});
  return gsi;
}

void GsiRoutes::set_msi(uint32_t gsi, uint64_t address, uint32_t data,
                        std::optional<uint32_t> devid) {
  std::lock_guard lock(mutex_);
  if (gsi < first_gsi_ || gsi - first_gsi_ >= msis_.size()) return;  // not ours
  Msi& m = msis_[gsi - first_gsi_];
  if (m.routed && m.address == address && m.data == data && m.devid == devid) return;
  const Msi before = m;
  m = {gsi, true, address, data, devid};
  std::vector<kvm_irq_routing_entry> table = irqchip_;
  for (const Msi& r : msis_) {
    if (!r.routed) continue;
    kvm_irq_routing_entry e{};
    e.gsi = r.gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(r.address);
    e.u.msi.address_hi = static_cast<uint32_t>(r.address >> 32);
    e.u.msi.data = r.data;
    if (r.devid) {
      e.flags = KVM_MSI_VALID_DEVID;
      e.u.msi.devid = *r.devid;
    }
    table.push_back(e);
  }
  try {
    commit_(table);
  } catch (...) {
    m = before;
    throw;
  }
}

size_t GsiRoutes::msi_routes() const {
  std::lock_guard lock(mutex_);
  return static_cast<size_t>(
      std::count_if(msis_.begin(), msis_.end(), [](const Msi& m) { return m.routed; }));
}

RoutedMsiSink::RoutedMsiSink(std::shared_ptr<GsiRoutes> routes, uint16_t vectors,
                             const RegisterIrqfd& register_irqfd, Signal signal,
                             std::optional<uint32_t> devid)
    : routes_(std::move(routes)),
      signal_(std::move(signal)),
      devid_(devid),
      register_(register_irqfd) {
  allocate(vectors);
  for (Vector& v : vectors_) register_(v.fd.get(), v.gsi);
}

RoutedMsiSink::RoutedMsiSink(std::shared_ptr<GsiRoutes> routes, uint16_t vectors,
                             RegisterIrqfd register_irqfd, RegisterIrqfd unregister_irqfd,
                             Signal signal, std::optional<uint32_t> devid)
    : routes_(std::move(routes)),
      signal_(std::move(signal)),
      devid_(devid),
      direct_(true),
      register_(std::move(register_irqfd)),
      unregister_(std::move(unregister_irqfd)) {
  allocate(vectors);
}

void RoutedMsiSink::allocate(uint16_t vectors) {
  for (uint16_t v = 0; v < vectors && routes_; ++v) {
    const std::optional<uint32_t> gsi = routes_->allocate();
    if (!gsi) {
      log::debug("MSI-X: no GSI left for vector {} and after; they use KVM_SIGNAL_MSI", v);
      break;
    }
    Vector vector;
    vector.gsi = *gsi;
    vector.fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!vector.fd) throw_errno("eventfd for an MSI-X vector");
    vectors_.push_back(std::move(vector));
  }
}

void set_gsi_routing(KvmVm& vm, const std::vector<kvm_irq_routing_entry>& entries) {
  // The kernel's struct kvm_irq_routing: nr and flags (two __u32s), then the entries from byte
  // 8. Laid out by hand: g++ puts the struct's flexible array at offset 16.
  constexpr size_t kHeader = 2 * sizeof(__u32);
  const size_t bytes = kHeader + entries.size() * sizeof(kvm_irq_routing_entry);
  std::vector<uint64_t> buffer((bytes + sizeof(uint64_t) - 1) / sizeof(uint64_t));
  auto* raw = reinterpret_cast<unsigned char*>(buffer.data());
  const auto header = std::array<__u32, 2>{static_cast<__u32>(entries.size()), 0};
  std::memcpy(raw, header.data(), kHeader);
  if (!entries.empty()) {
    std::memcpy(raw + kHeader, entries.data(), entries.size() * sizeof(kvm_irq_routing_entry));
  }
  kvm_ioctl(vm.fd(), kKvmSetGsiRouting, "KVM_SET_GSI_ROUTING", static_cast<const void*>(raw));
}

std::shared_ptr<RoutedMsiSink> RoutedMsiSink::for_vm(KvmVm& vm, std::shared_ptr<GsiRoutes> routes,
                                                     uint16_t vectors, bool direct,
                                                     std::optional<uint32_t> devid,
                                                     RegisterIrqfd register_early) {
  KvmVm* kvm = &vm;
  auto register_irqfd = [kvm](int fd, uint32_t gsi) { kvm->register_irqfd(fd, gsi); };
  auto signal = [kvm, devid](uint64_t address, uint32_t data) {
    if (!kvm->signal_msi(address, data, devid)) {
      log::debug("MSI to {:#x} (data {:#x}) not delivered", address, data);
    }
  };
  if (direct) {
    return std::make_shared<RoutedMsiSink>(
        std::move(routes), vectors, register_irqfd,
        [kvm](int fd, uint32_t gsi) { kvm->unregister_irqfd(fd, gsi); }, signal, devid);
  }
  return std::make_shared<RoutedMsiSink>(
      std::move(routes), vectors, register_early ? register_early : register_irqfd, signal, devid);
}

bool RoutedMsiSink::route_locked(Vector& v, uint16_t vector, uint64_t address, uint32_t data) {
  if (v.routed && v.address == address && v.data == data) return true;
  v.routed = false;  // until KVM has the new route
  try {
    routes_->set_msi(v.gsi, address, data, devid_);
  } catch (const std::exception& e) {
    log::warn("MSI-X vector {}: {}; {}", vector, e.what(),
              direct_ ? "its signals stay pending until the guest reprograms it"
                      : "it uses KVM_SIGNAL_MSI");
    return false;
  }
  v.routed = true;
  v.address = address;
  v.data = data;
  return true;
}

void RoutedMsiSink::vector_programmed(uint16_t vector, uint64_t address, uint32_t data) {
  std::lock_guard lock(mutex_);
  // Direct vectors are routed by direct_state(), which knows the function's masks too.
  if (direct_ || vector >= vectors_.size()) return;
  route_locked(vectors_[vector], vector, address, data);
}

namespace {
// The eventfd's count (consumed): whether it was signalled.
bool drain(int fd) {
  uint64_t count = 0;
  return ::read(fd, &count, sizeof count) == sizeof count && count != 0;
}
}  // namespace

int RoutedMsiSink::direct_eventfd(uint16_t vector) {
  std::lock_guard lock(mutex_);
  return direct_ && vector < vectors_.size() ? vectors_[vector].fd.get() : -1;
}

void RoutedMsiSink::direct_state(uint16_t vector, bool deliverable, uint64_t address,
                                 uint32_t data) {
  std::lock_guard lock(mutex_);
  if (!direct_ || vector >= vectors_.size()) return;
  Vector& v = vectors_[vector];
  if (!deliverable) {
    if (!v.attached) return;
    try {
      unregister_(v.fd.get(), v.gsi);
    } catch (const std::exception& e) {
      log::warn("MSI-X vector {}: cannot mask it: {}", vector, e.what());
      return;
    }
    v.attached = false;
    return;
  }
  // Deliverable: the route first (KVM follows a route change under a registered irqfd).
  if (!route_locked(v, vector, address, data)) {
    // KVM kept the old route: an irqfd left on it would deliver to the old message. Detached,
    // the signals wait as pending until the guest programs the vector again.
    if (v.attached) {
      try {
        unregister_(v.fd.get(), v.gsi);
        v.attached = false;
      } catch (const std::exception& e) {
        log::warn("MSI-X vector {}: cannot detach it from its old route: {}", vector, e.what());
      }
    }
    return;
  }
  if (v.attached) return;
  v.pending = drain(v.fd.get()) || v.pending;
  try {
    register_(v.fd.get(), v.gsi);
  } catch (const std::exception& e) {
    log::warn("MSI-X vector {}: {}; its signals stay pending", vector, e.what());
    return;
  }
  v.attached = true;
  if (v.pending) {  // what arrived while it was masked, now through the irqfd
    v.pending = false;
    const uint64_t one = 1;
    if (::write(v.fd.get(), &one, sizeof one) != sizeof one) signal_(address, data);
  }
}

bool RoutedMsiSink::direct_pending(uint16_t vector) {
  std::lock_guard lock(mutex_);
  if (!direct_ || vector >= vectors_.size()) return false;
  Vector& v = vectors_[vector];
  if (v.attached) return false;  // delivered as it comes
  v.pending = drain(v.fd.get()) || v.pending;
  return v.pending;
}

size_t RoutedMsiSink::attached() const {
  std::lock_guard lock(mutex_);
  return static_cast<size_t>(
      std::count_if(vectors_.begin(), vectors_.end(), [](const Vector& v) { return v.attached; }));
}

void RoutedMsiSink::send_vector(uint16_t vector, uint64_t address, uint32_t data) {
  int fd = -1;
  {
    std::lock_guard lock(mutex_);
    if (vector < vectors_.size()) {
      const Vector& v = vectors_[vector];
      if (v.routed && v.address == address && v.data == data) fd = v.fd.get();
    }
  }
  const uint64_t one = 1;
  if (fd >= 0 && ::write(fd, &one, sizeof one) == sizeof one) return;
  signal_(address, data);
}

int RoutedMsiSink::eventfd(uint16_t vector) const {
  std::lock_guard lock(mutex_);
  return vector < vectors_.size() ? vectors_[vector].fd.get() : -1;
}

std::vector<std::pair<int, uint32_t>> RoutedMsiSink::irqfds() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<int, uint32_t>> out;
  for (const Vector& v : vectors_) out.emplace_back(v.fd.get(), v.gsi);
  return out;
}

}  // namespace libvmm
