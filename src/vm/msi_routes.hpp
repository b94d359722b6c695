// MSI-X vectors delivered through KVM GSI routes and irqfds: each vector of a PCI function gets
// a GSI whose route (KVM_SET_GSI_ROUTING, an MSI entry) carries the message the guest
// programmed, and an eventfd registered as that GSI's irqfd. A device then signals a vector by
// writing its eventfd (no ioctl on the device's thread, and the same fd can be handed to
// another producer, such as a VFIO device or a vhost back-end); the route is rewritten when the
// guest reprograms the vector. Internal to the library.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "libvmm/core/unique_fd.hpp"
#include "libvmm/pci/msix.hpp"

namespace libvmm {

class KvmVm;

// The VM's GSI routing table: the interrupt controller's own routes (which KVM_SET_GSI_ROUTING
// replaces, so they are part of every table) and one MSI route per allocated GSI. Thread-safe.
class GsiRoutes {
 public:
  using Commit = std::function<void(const std::vector<kvm_irq_routing_entry>&)>;
  // GSIs [first_gsi, first_gsi + count) are handed out; `commit` installs a table.
  GsiRoutes(std::vector<kvm_irq_routing_entry> irqchip_routes, uint32_t first_gsi, uint32_t count,
            Commit commit);

  // A free GSI (no route yet), or nullopt when all are taken.
  std::optional<uint32_t> allocate();
  // Routes `gsi` (allocated) to the message (address, data) from requester `devid` (where the
  // MSI controller needs it: KVM_MSI_VALID_DEVID); commits the table when that changes the
  // route. Throws SystemError when KVM refuses the table.
  void set_msi(uint32_t gsi, uint64_t address, uint32_t data,
               std::optional<uint32_t> devid = std::nullopt);
  size_t msi_routes() const;

 private:
  struct Msi {
    uint32_t gsi;
    bool routed = false;
    uint64_t address = 0;
    uint32_t data = 0;
    std::optional<uint32_t> devid{};
  };
  const std::vector<kvm_irq_routing_entry> irqchip_;
  const uint32_t first_gsi_;
  const uint32_t count_;
  const Commit commit_;
  mutable std::mutex mutex_;
  std::vector<Msi> msis_;  // by allocation order
};

// KVM_SET_GSI_ROUTING as the kernel numbers it: its size field is that of the C header's
// struct kvm_irq_routing (two __u32s, 8 bytes); g++ lays that struct out with its flexible
// array of entries at offset 16 and sizes it 16, and KVM answers that number with ENOTTY.
constexpr unsigned long kKvmSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, 2 * sizeof(__u32));

// KVM_SET_GSI_ROUTING: replaces `vm`'s whole GSI routing table with `entries` (a GsiRoutes
// commit).
void set_gsi_routing(KvmVm& vm, const std::vector<kvm_irq_routing_entry>& entries);

// The MSI-X sink of one PCI function: vector v -> GSI, eventfd (an irqfd). Vectors beyond the
// GSIs available, and any message that is not (yet) the vector's route, go through
// KVM_SIGNAL_MSI (`signal`).
//
// Two ways to use it. Signalled by this process (virtio-pci): MsixTable::notify() applies the
// masks and send_vector() writes the eventfd; every irqfd is registered at construction.
// Signalled by the device (direct: a VFIO device's host interrupts write the eventfds, see
// pci::MsiSink::direct_eventfd): the irqfd of a vector is registered only while the guest has
// the vector deliverable with a routed message; while it is masked the irqfd is deassigned,
// so the eventfd only counts, and that count is the vector's pending bit (PBA), delivered
// when the guest unmasks it (PCI 3.0 §6.8.2.9).
class RoutedMsiSink final : public pci::MsiSink {
 public:
  using RegisterIrqfd = std::function<void(int eventfd, uint32_t gsi)>;
  using Signal = std::function<void(uint64_t address, uint32_t data)>;
  // `devid`: the function's requester ID, carried by its routes where the MSI controller
  // translates per device (the GICv3 ITS); nullopt elsewhere.
  RoutedMsiSink(std::shared_ptr<GsiRoutes> routes, uint16_t vectors,
                const RegisterIrqfd& register_irqfd, Signal signal,
                std::optional<uint32_t> devid = std::nullopt);
  // Direct: irqfds registered and unregistered as the vectors' states change.
  RoutedMsiSink(std::shared_ptr<GsiRoutes> routes, uint16_t vectors, RegisterIrqfd register_irqfd,
                RegisterIrqfd unregister_irqfd, Signal signal,
                std::optional<uint32_t> devid = std::nullopt);
  // On a VM: irqfds and KVM_SIGNAL_MSI on `vm` (with `devid` as above). `register_early`
  // registers the irqfds made with the sink (not direct), which may be before the VM can take
  // them (AArch64: before the vGIC is initialised); null: at once on `vm`.
  static std::shared_ptr<RoutedMsiSink> for_vm(KvmVm& vm, std::shared_ptr<GsiRoutes> routes,
                                               uint16_t vectors, bool direct = false,
                                               std::optional<uint32_t> devid = std::nullopt,
                                               RegisterIrqfd register_early = nullptr);

  int direct_eventfd(uint16_t vector) override;
  void direct_state(uint16_t vector, bool deliverable, uint64_t address, uint32_t data) override;
  bool direct_pending(uint16_t vector) override;
  // Direct: how many vectors have their irqfd registered now.
  size_t attached() const;

  void send(uint64_t address, uint32_t data) override { signal_(address, data); }
  void vector_programmed(uint16_t vector, uint64_t address, uint32_t data) override;
  void send_vector(uint16_t vector, uint64_t address, uint32_t data) override;

  // Vector `vector`'s eventfd (-1 when it has none): writing it delivers the routed message.
  int eventfd(uint16_t vector) const;
  // The (gsi, eventfd) pairs registered, to unregister at teardown.
  std::vector<std::pair<int, uint32_t>> irqfds() const;

 private:
  struct Vector {
    uint32_t gsi = 0;
    UniqueFd fd;
    bool routed = false;  // the route carries (address, data)
    uint64_t address = 0;
    uint32_t data = 0;
    bool attached = false;  // direct: the irqfd is registered
    bool pending = false;   // direct: signalled while detached, not yet delivered
  };
  void allocate(uint16_t vectors);
  bool route_locked(Vector& v, uint16_t vector, uint64_t address, uint32_t data);
  const std::shared_ptr<GsiRoutes> routes_;
  const Signal signal_;
  const std::optional<uint32_t> devid_;
  const bool direct_ = false;
  RegisterIrqfd register_;
  RegisterIrqfd unregister_;
  mutable std::mutex mutex_;
  std::vector<Vector> vectors_;
};

}  // namespace libvmm
