// What every user-DTB patcher promises for a tree it accepts (dtb_patch_fuzzer for arm64,
// riscv64_dtb_patch_fuzzer): a valid flattened tree within the architecture's limit, the
// machine's bootargs in /chosen, a memory node, and every device's virtio_mmio node.
#pragma once

#include <libfdt.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/arch/virtio_mmio_fdt.hpp"
#include "libvmm/core/fdt.hpp"

namespace libvmm::fuzz {

inline void check_patched_tree(const std::vector<uint8_t>& blob, uint64_t max_size,
                               const std::string& bootargs,
                               const std::vector<std::shared_ptr<const FdtNodeSource>>& devices) {
  check(blob.size() <= max_size);
  check(fdt_check_full(blob.data(), blob.size()) == 0);
  const int chosen = fdt_path_offset(blob.data(), "/chosen");
  check(chosen >= 0);
  if (!bootargs.empty()) {
    int len = 0;
    const auto* args = static_cast<const char*>(fdt_getprop(blob.data(), chosen, "bootargs", &len));
    check(args != nullptr && len == static_cast<int>(bootargs.size()) + 1 &&
          std::memcmp(args, bootargs.data(), bootargs.size() + 1) == 0);
  }
  check(fdt_node_offset_by_prop_value(blob.data(), -1, "device_type", "memory", sizeof("memory")) >=
        0);
  for (const auto& device : devices) {
    const auto& d = static_cast<const VirtioMmioFdt&>(*device);
    char path[64];
    std::snprintf(path, sizeof path, "/virtio_mmio@%llx", static_cast<unsigned long long>(d.base));
    check(fdt_path_offset(blob.data(), path) >= 0);
  }
}

}  // namespace libvmm::fuzz
