// Writes KVM queues in a ring instead of exiting to the VMM (KVM_CAP_COALESCED_PIO and
// _MMIO), for registers whose value matters only to a later access that exits anyway: PCI's
// CONFIG_ADDRESS at port 0xCF8, which only the next access to 0xCFC-0xCFF uses, so a
// configuration access costs one trip to the VMM instead of two. A vCPU replays the ring before
// it handles any port or MMIO exit, so devices see the writes in the guest's order, as if each
// had exited. KVM still takes its own exit for each write; the trip to this process is saved.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

namespace libvmm {

class Bus;
class KvmVm;

class CoalescedWrites {
 public:
  // Over a ring page KVM fills (struct kvm_coalesced_mmio_ring and its entries), or a test's.
  explicit CoalescedWrites(std::span<uint8_t> page);
  ~CoalescedWrites();
  CoalescedWrites(const CoalescedWrites&) = delete;
  CoalescedWrites& operator=(const CoalescedWrites&) = delete;

  // The VM's ring, mapped through one of its vCPUs' descriptors; nullptr where KVM has none
  // (no KVM_CAP_COALESCED_MMIO).
  static std::unique_ptr<CoalescedWrites> map(const KvmVm& vm, int vcpu_fd);

  // Replays the queued writes, oldest first: port writes on `pio`, memory writes on `mmio`
  // (either may be null: those writes are dropped). Any vCPU thread; one at a time.
  void replay(const Bus* pio, const Bus* mmio);
  uint64_t replayed() const { return replayed_.load(); }  // writes replayed so far

 private:
  std::span<uint8_t> page_;
  bool mapped_ = false;  // page_ is this object's mapping (map()), unmapped with it
  uint32_t capacity_ = 0;
  std::mutex mutex_;
  std::atomic<uint64_t> replayed_{0};
};

}  // namespace libvmm
