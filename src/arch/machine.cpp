// What every machine shares (machine.hpp).
#include "machine.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace libvmm {

std::string Machine::irq_problem(uint32_t number) const {
  if (number >= irq_count()) {
    return fmt::format("IRQ {} is outside the interrupt controller's range 0-{} on {}", number,
                       irq_count() - 1, name());
  }
  const std::vector<uint32_t> free = device_irqs();
  if (std::find(free.begin(), free.end(), number) == free.end()) {
    std::string list;
    for (uint32_t f : free) {
      if (!list.empty()) list += ' ';
      list += std::to_string(f);  // appended, not "sep" + string: GCC 12 -O3 -Wrestrict
    }
    return fmt::format("IRQ {} belongs to the machine's own devices; free lines: {}", number, list);
  }
  return "";
}

}  // namespace libvmm
