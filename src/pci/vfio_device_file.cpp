#include "libvmm/pci/vfio_device_file.hpp"

#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace libvmm::pci {

bool VfioDeviceFd::device_info(vfio_device_info& info) {
  return ::ioctl(fd_.get(), VFIO_DEVICE_GET_INFO, &info) == 0;
}

bool VfioDeviceFd::region_info(vfio_region_info& info) {
  return ::ioctl(fd_.get(), VFIO_DEVICE_GET_REGION_INFO, &info) == 0;
}

bool VfioDeviceFd::region_info_with_caps(uint32_t index, std::vector<uint8_t>& reply) {
  // Asked with room for the fixed part and a little more; VFIO answers with the room the
  // chain needs (argsz), and is asked again with that much (bounded).
  std::vector<uint64_t> buffer(sizeof(vfio_region_info) / sizeof(uint64_t) + 1);
  auto query = [&] {
    auto* info = reinterpret_cast<vfio_region_info*>(buffer.data());
    const auto argsz = static_cast<uint32_t>(buffer.size() * sizeof(uint64_t));
    std::memset(buffer.data(), 0, argsz);
    info->argsz = argsz;
    info->index = index;
    return ::ioctl(fd_.get(), VFIO_DEVICE_GET_REGION_INFO, info) == 0;
  };
  if (!query()) return false;
  const uint32_t wanted = reinterpret_cast<vfio_region_info*>(buffer.data())->argsz;
  if (wanted > buffer.size() * sizeof(uint64_t) && wanted <= 64 * 1024) {
    buffer.resize((wanted + sizeof(uint64_t) - 1) / sizeof(uint64_t));
    if (!query()) return false;
  }
  const size_t have = std::min<size_t>(reinterpret_cast<vfio_region_info*>(buffer.data())->argsz,
                                       buffer.size() * sizeof(uint64_t));
  const auto* bytes = reinterpret_cast<const uint8_t*>(buffer.data());
  reply.assign(bytes, bytes + have);
  return true;
}

bool VfioDeviceFd::irq_info(vfio_irq_info& info) {
  return ::ioctl(fd_.get(), VFIO_DEVICE_GET_IRQ_INFO, &info) == 0;
}

bool VfioDeviceFd::set_irqs(uint32_t index, uint32_t action, std::span<const int32_t> fds) {
  // In 32-bit words, so the header is aligned on every architecture.
  const size_t bytes = sizeof(vfio_irq_set) + fds.size() * sizeof(int32_t);
  std::vector<uint32_t> words((bytes + sizeof(uint32_t) - 1) / sizeof(uint32_t));
  auto* set = reinterpret_cast<vfio_irq_set*>(words.data());
  set->argsz = static_cast<uint32_t>(bytes);
  set->flags = (fds.empty() ? VFIO_IRQ_SET_DATA_NONE : VFIO_IRQ_SET_DATA_EVENTFD) | action;
  set->index = index;
  set->start = 0;
  set->count = static_cast<uint32_t>(fds.size());
  if (!fds.empty()) {
    std::memcpy(reinterpret_cast<uint8_t*>(words.data()) + sizeof(vfio_irq_set), fds.data(),
                fds.size() * sizeof(int32_t));
  }
  return ::ioctl(fd_.get(), VFIO_DEVICE_SET_IRQS, set) == 0;
}

bool VfioDeviceFd::reset() {
  return ::ioctl(fd_.get(), VFIO_DEVICE_RESET) == 0;
}

ssize_t VfioDeviceFd::read(uint64_t offset, std::span<uint8_t> data) {
  return ::pread(fd_.get(), data.data(), data.size(), static_cast<off_t>(offset));
}

ssize_t VfioDeviceFd::write(uint64_t offset, std::span<const uint8_t> data) {
  return ::pwrite(fd_.get(), data.data(), data.size(), static_cast<off_t>(offset));
}

void* VfioDeviceFd::map(uint64_t offset, size_t size) {
  void* host = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(),
                      static_cast<off_t>(offset));
  return host == MAP_FAILED ? nullptr : host;
}

void VfioDeviceFd::unmap(void* host, size_t size) {
  ::munmap(host, size);
}

}  // namespace libvmm::pci
