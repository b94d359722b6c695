// The VFIO device file of one passed-through PCI function, as VfioPciDevice uses it: its ioctls
// (Linux's linux/vfio.h: device, region and interrupt info, VFIO_DEVICE_SET_IRQS, reset), reads
// and writes at region offsets, and mmaps of BAR pages. VfioDeviceFd is the real one, on the
// descriptor VFIO_GROUP_GET_DEVICE_FD gives; tests and fuzzers give a device of their own
// making instead (tests/unit/support/fake_vfio_device.hpp).
#pragma once

#include <linux/vfio.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "libvmm/core/unique_fd.hpp"

namespace libvmm::pci {

class VfioDeviceFile {
 public:
  virtual ~VfioDeviceFile() = default;

  // Each call answers as its ioctl would: false with errno set when VFIO refuses.
  // VFIO_DEVICE_GET_INFO.
  virtual bool device_info(vfio_device_info& info) = 0;
  // VFIO_DEVICE_GET_REGION_INFO of region info.index, the fixed part only.
  virtual bool region_info(vfio_region_info& info) = 0;
  // The same with its capability chain: `reply` gets the whole answer, the fixed part first and
  // the chain at the offsets it names (counted from the reply's start), at most 64 KiB.
  virtual bool region_info_with_caps(uint32_t index, std::vector<uint8_t>& reply) = 0;
  // VFIO_DEVICE_GET_IRQ_INFO of interrupt info.index.
  virtual bool irq_info(vfio_irq_info& info) = 0;
  // VFIO_DEVICE_SET_IRQS of interrupt `index`, `action` (VFIO_IRQ_SET_ACTION_*), vectors 0 on:
  // eventfds `fds`, or none (DATA_NONE, count 0: the trigger off).
  virtual bool set_irqs(uint32_t index, uint32_t action, std::span<const int32_t> fds) = 0;
  // VFIO_DEVICE_RESET.
  virtual bool reset() = 0;

  // pread and pwrite at `offset` in the file (a region's offset plus one within it): the bytes
  // done, or -1 with errno.
  virtual ssize_t read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual ssize_t write(uint64_t offset, std::span<const uint8_t> data) = 0;
  // Shared read-write mapping of [offset, offset + size) of the file; nullptr with errno when
  // refused. unmap() undoes one.
  virtual void* map(uint64_t offset, size_t size) = 0;
  virtual void unmap(void* host, size_t size) = 0;
};

// The real device file: a VFIO device descriptor.
class VfioDeviceFd final : public VfioDeviceFile {
 public:
  explicit VfioDeviceFd(UniqueFd fd) : fd_(std::move(fd)) {}

  bool device_info(vfio_device_info& info) override;
  bool region_info(vfio_region_info& info) override;
  bool region_info_with_caps(uint32_t index, std::vector<uint8_t>& reply) override;
  bool irq_info(vfio_irq_info& info) override;
  bool set_irqs(uint32_t index, uint32_t action, std::span<const int32_t> fds) override;
  bool reset() override;
  ssize_t read(uint64_t offset, std::span<uint8_t> data) override;
  ssize_t write(uint64_t offset, std::span<const uint8_t> data) override;
  void* map(uint64_t offset, size_t size) override;
  void unmap(void* host, size_t size) override;

 private:
  UniqueFd fd_;
};

}  // namespace libvmm::pci
