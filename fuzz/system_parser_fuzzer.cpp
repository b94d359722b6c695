// libFuzzer target: the .system parser, validator, resource planner and layout on arbitrary
// bytes. Whatever the input, they must report problems, never crash; a description they accept
// must lay out. Every file a description names "exists" (a stand-in for the host's file
// system), so descriptions with virtual machines and devices reach planning and layout(). Each
// input is read for one of the boards (x86_64 or AArch64, by its size's parity), with the
// Microkit board devices interpreted as `vmm check --arch` does.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/system/description.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> problems;
  libvmm::SystemDescription d = libvmm::SystemDescription::parse(text, "fuzz.system", problems);
  d.arch = size % 2 == 0 ? "x86_64" : "aarch64";
  d.interpret_board_devices(problems);
  libvmm::CheckOptions options;
  options.kernel_required = false;
  for (auto& p : d.problems(libvmm::HostFiles::assume_present(), options)) {
    problems.push_back(std::move(p));
  }
  if (problems.empty()) (void)d.layout();
  return 0;
}
