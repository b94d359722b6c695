// Machine options (arch/machine_option.hpp): each architecture's rules and messages, checked on
// any host; and on this host, another architecture's options refused with one line naming the
// flag or element.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "libvmm/arch/machine_option.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/vm.hpp"
#include "support/temp_path.hpp"

namespace libvmm {
namespace vm_arch_flags_test {

std::string error_of(const VmConfig& c) {
  try {
    validate(c);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

struct ArchFlagsTest : ::testing::Test {
  ArchFlagsTest() {
    std::ofstream(kernel) << "x";
    config.kernel = kernel;
  }
  std::string kernel = test::temp_path("arch-flags-kernel");
  VmConfig config;
};

// A spec as a .system element writes it.
DeviceSpec element(std::string kind, std::vector<std::pair<std::string, std::string>> attributes,
                   uint32_t line = 9) {
  DeviceSpec spec;
  spec.where = fmt::format("t.system:{}: <{}>", line, kind);
  spec.kind = std::move(kind);
  spec.attributes = std::move(attributes);
  return spec;
}

const Architecture& aarch64() {
  const Architecture* arch = find_architecture("aarch64");
  EXPECT_NE(arch, nullptr);
  return *arch;
}

DeviceSpec aarch64_flag(std::string_view element_name, std::string_view value) {
  return machine_option_from_flag(*find_machine_option(aarch64(), element_name), value);
}

std::vector<std::string> aarch64_problems(const std::vector<DeviceSpec>& specs) {
  return check_machine_options(aarch64(), specs, HostFiles::real());
}

TEST(MachineOptions, EveryArchitectureNamesItsOptionsOnce) {
  ASSERT_NE(find_architecture(host_architecture().name), nullptr);
  for (const Architecture& arch : architectures()) {
    std::set<std::string_view> elements, flags;
    for (const MachineOption* option : arch.options) {
      EXPECT_TRUE(elements.insert(option->element()).second)
          << arch.name << " " << option->element();
      if (!option->flag().empty()) {
        EXPECT_TRUE(option->flag().starts_with("--")) << option->flag();
        EXPECT_TRUE(flags.insert(option->flag()).second) << arch.name << " " << option->flag();
      }
      EXPECT_FALSE(option->purpose().empty());
    }
  }
}

TEST(MachineOptions, GicVersion) {
  EXPECT_TRUE(aarch64_problems({aarch64_flag("gic", "v3")}).empty());
  EXPECT_TRUE(aarch64_problems({aarch64_flag("gic", "2")}).empty());
  EXPECT_TRUE(aarch64_problems({element("gic", {{"version", "3"}})}).empty());
  EXPECT_EQ(aarch64_problems({aarch64_flag("gic", "v4")}),
            std::vector<std::string>{"--gic v4: expected v2 or v3"});
  EXPECT_EQ(aarch64_problems({element("gic", {{"version", "4"}})}),
            std::vector<std::string>{"t.system:9: <gic>: version=\"4\": expected 2 or 3"});
  EXPECT_EQ(find_machine_option(aarch64(), "gic")->describe(element("gic", {{"version", "2"}})),
            "v2");
}

const Architecture& x86_64() {
  const Architecture* arch = find_architecture("x86_64");
  EXPECT_NE(arch, nullptr);
  return *arch;
}

TEST(MachineOptions, HaltInGuestOrHost) {
  const MachineOption& halt = *find_machine_option(x86_64(), "halt");
  const auto problems = [](const std::vector<DeviceSpec>& specs) {
    return check_machine_options(x86_64(), specs, HostFiles::real());
  };
  EXPECT_TRUE(problems({machine_option_from_flag(halt, "guest")}).empty());
  EXPECT_TRUE(problems({machine_option_from_flag(halt, "host")}).empty());
  EXPECT_TRUE(problems({element("halt", {{"in", "guest"}})}).empty());
  EXPECT_EQ(problems({machine_option_from_flag(halt, "never")}),
            std::vector<std::string>{"--halt never: expected host or guest"});
  EXPECT_EQ(problems({element("halt", {{"in", "vcpu"}})}),
            std::vector<std::string>{"t.system:9: <halt>: in=\"vcpu\": expected host or guest"});
  EXPECT_EQ(problems({element("halt", {})}).size(), 1u);  // `in` is required
  EXPECT_EQ(halt.describe(element("halt", {{"in", "guest"}})),
            "in the guest (HLT and PAUSE without VM exits)");
  EXPECT_EQ(halt.describe(machine_option_from_flag(halt, "host")),
            "in the host (HLT exits to KVM)");
}

TEST(MachineOptions, DeviceTreeMustBeReadable) {
  EXPECT_EQ(aarch64_problems({aarch64_flag("dtb", "/nonexistent/board.dtb")}),
            std::vector<std::string>{"--dtb /nonexistent/board.dtb: device tree "
                                     "/nonexistent/board.dtb: No such file or directory"});
  const std::string dir = ::testing::TempDir();
  EXPECT_EQ(aarch64_problems({element("dtb", {{"path", dir}})}),
            std::vector<std::string>{
                fmt::format("t.system:9: <dtb>: device tree {}: not a regular file", dir)});
  const std::string blob = test::temp_path("arch-flags-board.dtb");
  std::ofstream(blob) << "x";
  EXPECT_TRUE(aarch64_problems({aarch64_flag("dtb", blob)}).empty());
  EXPECT_EQ(find_machine_option(aarch64(), "dtb")->describe(aarch64_flag("dtb", blob)),
            blob + " (patched)");
  // The flag's value is the path as is, commas included.
  EXPECT_EQ(*aarch64_flag("dtb", "a,b.dtb").get("path"), "a,b.dtb");
}

TEST(MachineOptions, OverlaysAreReadFromTheirFile) {
  EXPECT_EQ(aarch64_problems({element("dtb_overlay", {{"path", "/nonexistent/o.dtbo"}})}),
            std::vector<std::string>{"t.system:9: <dtb_overlay>: device-tree overlay "
                                     "/nonexistent/o.dtbo: No such file or directory"});
  EXPECT_EQ(*aarch64_flag("dtb_overlay", "o.dtbo").get("path"), "o.dtbo");
  EXPECT_EQ(aarch64_flag("dtb_overlay", "o.dtbo").where, "--dtb-overlay o.dtbo");
}

TEST(MachineOptions, GenericRules) {
  EXPECT_EQ(aarch64_problems(
                {element("gic", {{"version", "2"}}, 9), element("gic", {{"version", "3"}}, 10)}),
            std::vector<std::string>{"t.system:10: <gic>: given twice (first: t.system:9: <gic>)"});
  EXPECT_EQ(aarch64_problems({element("gic", {{"version", "2"}, {"bogus", "1"}})}),
            std::vector<std::string>{"t.system:9: <gic>: unknown attribute 'bogus' (expected "
                                     "version)"});
  EXPECT_EQ(aarch64_problems({element("gic", {})}),
            std::vector<std::string>{"t.system:9: <gic>: missing version"});
  EXPECT_EQ(aarch64_problems({element("floppy", {})}),
            std::vector<std::string>{"t.system:9: <floppy>: unknown machine option 'floppy'"});
}

TEST_F(ArchFlagsTest, OtherArchitecturesOptionsAreRefusedByName) {
  // Whatever this host is, every other architecture's flags are refused in one line.
  for (const Architecture& arch : architectures()) {
    if (arch.name == host_architecture().name) continue;
    for (const MachineOption* option : arch.options) {
      if (option->flag().empty() || find_machine_option(option->element())) continue;
      config.machine_options = {machine_option_from_flag(*option, "x")};
      std::vector<std::string_view> titles;  // every architecture that has it
      for (const Architecture& other : architectures()) {
        if (find_machine_option(other, option->element())) titles.push_back(other.title);
      }
      std::string who(titles[0]);
      for (size_t i = 1; i < titles.size(); ++i) {
        who += i + 1 == titles.size() ? " and " : ", ";
        who += titles[i];
      }
      EXPECT_EQ(error_of(config),
                fmt::format("{} x: only {} machines {}; this vmm runs {} guests", option->flag(),
                            who, option->purpose(), host_architecture().name));
    }
  }
}

TEST_F(ArchFlagsTest, GicAndDtbOnX86) {
  if (host_architecture().name != "x86_64") GTEST_SKIP() << "an x86_64 host's messages";
  config.machine_options = {aarch64_flag("gic", "v3")};
  EXPECT_EQ(error_of(config),
            "--gic v3: only AArch64 machines have a GIC; this vmm runs x86_64 guests");
  config.machine_options = {aarch64_flag("dtb", kernel)};
  EXPECT_EQ(error_of(config),
            fmt::format("--dtb {}: only AArch64 and RISC-V machines boot with a device "
                        "tree; this vmm runs x86_64 guests",
                        kernel));
}

TEST_F(ArchFlagsTest, HaltIsAnX86Option) {
  if (host_architecture().name == "x86_64") {
    config.machine_options = {element("halt", {{"in", "guest"}})};
    EXPECT_EQ(error_of(config), "");
    config.machine_options = {element("halt", {{"in", "later"}})};
    EXPECT_EQ(error_of(config), "t.system:9: <halt>: in=\"later\": expected host or guest");
  } else {
    config.machine_options = {
        machine_option_from_flag(*find_machine_option(x86_64(), "halt"), "guest")};
    EXPECT_EQ(error_of(config),
              fmt::format("--halt guest: only x86_64 machines can keep a vCPU's HLT in the guest; "
                          "this vmm runs {} guests",
                          host_architecture().name));
  }
}
TEST_F(ArchFlagsTest, HostOptionsAreCheckedByValidate) {
  if (host_architecture().name != "aarch64") GTEST_SKIP() << "an AArch64 host's options";
  config.machine_options = {aarch64_flag("gic", "v3")};
  EXPECT_EQ(error_of(config), "");
  config.machine_options = {aarch64_flag("gic", "v4")};
  EXPECT_EQ(error_of(config), "--gic v4: expected v2 or v3");
}

}  // namespace vm_arch_flags_test
}  // namespace libvmm
