// The device registry: flag values split into attributes, the checks every spec gets, and each
// registered kind's own rules, with problems located the way users see them.
#include <gtest/gtest.h>

#include <fstream>

#include "libvmm/virtio/device_kind.hpp"

using namespace libvmm;

namespace virtio_device_kind_test {

// Every file exists and is a distinct file, except "missing" (none) and "same" (one file).
class FakeFiles final : public HostFiles {
 public:
  std::string check_readable(const std::filesystem::path& path) const override {
    return path == "missing" ? "No such file or directory" : "";
  }
  std::optional<std::string> identity(const std::filesystem::path& path) const override {
    return path.string().starts_with("same") ? "one" : path.string();
  }
};

std::vector<std::string> problems_of(std::string_view kind_name, std::string_view flag_value) {
  const VirtioDeviceKind* kind = find_virtio_device_kind(kind_name);
  EXPECT_NE(kind, nullptr) << kind_name;
  return check_spec(spec_from_flag(*kind, flag_value), FakeFiles());
}

std::string first_problem(std::string_view kind, std::string_view value) {
  auto p = problems_of(kind, value);
  return p.empty() ? "" : p.front();
}

TEST(SplitFlagValue, PositionalBooleansAndPairs) {
  std::string error;
  const auto a = split_flag_value("d.img,readonly,serial=x=y", "path", error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0], (std::pair<std::string, std::string>{"path", "d.img"}));
  EXPECT_EQ(a[1], (std::pair<std::string, std::string>{"readonly", "true"}));
  EXPECT_EQ(a[2], (std::pair<std::string, std::string>{"serial", "x=y"}));
  EXPECT_TRUE(split_flag_value("", "", error).empty());
  EXPECT_EQ(error, "") << "a flag without a value (--rng)";
}

// A first item with '=' is an option only if what comes before is an option's name: a path
// may hold '='.
TEST(SplitFlagValue, APathWithAnEqualsSignIsThePositionalValue) {
  std::string error;
  const auto a = split_flag_value("/srv/vm=1.img,readonly", "path", error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0], (std::pair<std::string, std::string>{"path", "/srv/vm=1.img"}));
  EXPECT_EQ(a[1], (std::pair<std::string, std::string>{"readonly", "true"}));
  const auto b = split_flag_value("path=/srv/vm=1.img", "path", error);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0], (std::pair<std::string, std::string>{"path", "/srv/vm=1.img"}));
  const auto c = split_flag_value("tap=t0,a/b=c", "tap", error);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1], (std::pair<std::string, std::string>{"a/b", "c"})) << "only the first item";
}

TEST(SplitFlagValue, DoubledCommaIsALiteralComma) {
  std::string error;
  const auto a = split_flag_value("alsa:hw:0,,0", "backend", error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0], (std::pair<std::string, std::string>{"backend", "alsa:hw:0,0"}));
  const auto b = split_flag_value("my,,disk.img,readonly,serial=a,,b", "path", error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0], (std::pair<std::string, std::string>{"path", "my,disk.img"}));
  EXPECT_EQ(b[1], (std::pair<std::string, std::string>{"readonly", "true"}));
  EXPECT_EQ(b[2], (std::pair<std::string, std::string>{"serial", "a,b"}));
  const auto c = split_flag_value("a,,,b", "path", error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].second, "a,") << "a doubled comma first, then the separator";
  EXPECT_EQ(c[1].first, "b");
}

TEST(SplitFlagValue, Malformed) {
  std::string error;
  EXPECT_TRUE(split_flag_value("", "path", error).empty()) << "the kind reports the missing path";
  EXPECT_EQ(error, "");
  EXPECT_EQ(split_flag_value(",readonly", "path", error).size(), 1u);
  EXPECT_EQ(error, "");
  split_flag_value("d.img,readonly,", "path", error);
  EXPECT_EQ(error, "empty option between commas");
  error.clear();
  split_flag_value("tap=a,tap=b", "", error);
  EXPECT_EQ(error, "option 'tap' given twice");
  split_flag_value("d.img,", "path", error);
  EXPECT_EQ(error, "empty option between commas");
}

TEST(DeviceRegistry, EveryKindIsFoundByItsElementAndHasAFlag) {
  ASSERT_GE(virtio_device_kinds().size(), 4u);
  for (const VirtioDeviceKind* kind : virtio_device_kinds()) {
    EXPECT_EQ(find_virtio_device_kind(kind->element()), kind);
    EXPECT_TRUE(kind->flag().starts_with("--")) << kind->element();
    EXPECT_FALSE(kind->help().empty()) << kind->element();
  }
  EXPECT_EQ(find_virtio_device_kind("virtio_nothing"), nullptr);
}

TEST(DeviceRegistry, UnknownKindIsAProblem) {
  DeviceSpec spec{"virtio_nothing", {}, "f.system:3: <virtio_nothing>", ""};
  EXPECT_EQ(check_spec(spec, FakeFiles()),
            std::vector<std::string>{
                "f.system:3: <virtio_nothing>: unknown device kind 'virtio_nothing'"});
}

TEST(DeviceRegistry, BlockRules) {
  EXPECT_TRUE(
      problems_of("virtio_block", "d.img,readonly,direct,serial=disk-1,io=io_uring").empty());
  EXPECT_TRUE(problems_of("virtio_block", "d.img,iothread=off").empty());
  EXPECT_EQ(first_problem("virtio_block", "d.img,iothread"),
            "--disk d.img,iothread: iothread=\"true\" must be on or off");
  EXPECT_EQ(first_problem("virtio_block", "d.img,bogus"),
            "--disk d.img,bogus: unknown option 'bogus' (expected readonly, direct, serial=ID, "
            "io=auto, io=sync or io=io_uring, iothread=on or iothread=off, poll_us=N, "
            "num_queues=N, transport=pci|mmio)");
  EXPECT_EQ(first_problem("virtio_block", "d.img,poll_us=2000"),
            "--disk d.img,poll_us=2000: poll_us=\"2000\" must be a number of microseconds from 0 "
            "to 1000");
  EXPECT_EQ(first_problem("virtio_block", "d.img,num_queues=0"),
            "--disk d.img,num_queues=0: num_queues=\"0\" must be a number from 1 to 16");
  EXPECT_EQ(first_problem("virtio_block", ""), "--disk: missing image path");
  EXPECT_EQ(first_problem("virtio_block", ",readonly"), "--disk ,readonly: missing image path");
  EXPECT_EQ(first_problem("virtio_block", "missing"),
            "--disk missing: image missing: No such file or directory");
  EXPECT_EQ(first_problem("virtio_block", "d.img,serial=123456789012345678901"),
            "--disk d.img,serial=123456789012345678901: serial '123456789012345678901' is longer "
            "than 20 characters");
  EXPECT_EQ(first_problem("virtio_block", "d.img,io=aio"),
            "--disk d.img,io=aio: io=\"aio\" must be auto, sync or io_uring");
  EXPECT_EQ(first_problem("virtio_block", "d.img,readonly=maybe"),
            "--disk d.img,readonly=maybe: readonly=\"maybe\" must be true or false");
  EXPECT_EQ(first_problem("virtio_block", "d.img,serial=a\tb"),
            "--disk d.img,serial=a\tb: serial must be printable ASCII");
}

TEST(DeviceRegistry, BlockClaimsItsImage) {
  const VirtioDeviceKind& kind = *find_virtio_device_kind("virtio_block");
  const auto a = kind.claims(spec_from_flag(kind, "same-a"), FakeFiles());
  const auto b = kind.claims(spec_from_flag(kind, "same-b"), FakeFiles());
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].resource, b[0].resource) << "two paths of one file claim one resource";
  EXPECT_EQ(kind.describe(spec_from_flag(kind, "d.img,readonly"), 1, "vm"),
            "virtio-blk vdb d.img (read-only)");
}

TEST(DeviceRegistry, ConsoleRules) {
  EXPECT_TRUE(problems_of("virtio_console", "pty").empty());
  EXPECT_EQ(first_problem("virtio_console", "bogus")
                .rfind("--console bogus: unknown backend 'bogus' (expected ", 0),
            0u);
  EXPECT_EQ(first_problem("virtio_console", "socket:"),
            "--console socket:: backend 'socket:' needs a PATH (socket:PATH)");
  const VirtioDeviceKind& kind = *find_virtio_device_kind("virtio_console");
  EXPECT_EQ(kind.max_per_vm(), 1u);
  EXPECT_EQ(kind.claims(spec_from_flag(kind, "stdio"), FakeFiles()).size(), 1u);
  EXPECT_TRUE(kind.claims(spec_from_flag(kind, "pty"), FakeFiles()).empty());
}

TEST(DeviceRegistry, ConsoleNamedPorts) {
  EXPECT_TRUE(problems_of("virtio_console",
                          "pty,port1=org.qemu.guest_agent.0=socket:/run/qga.sock,port8=log=none")
                  .empty());
  EXPECT_EQ(first_problem("virtio_console", "pty,port1=agent"),
            "--console pty,port1=agent: port1 'agent': expected port1=NAME=BACKEND");
  EXPECT_EQ(first_problem("virtio_console", "pty,port2=a b=none")
                .rfind("--console pty,port2=a b=none: port2: port name 'a b': only printable", 0),
            0u);
  EXPECT_EQ(first_problem("virtio_console", "pty,port1=a=none,port2=a=none"),
            "--console pty,port1=a=none,port2=a=none: port2: port name 'a' is given twice");
  EXPECT_EQ(first_problem("virtio_console", "pty,port1=a=bogus")
                .rfind("--console pty,port1=a=bogus: port1 a: unknown backend 'bogus'", 0),
            0u);
  EXPECT_EQ(first_problem("virtio_console", "pty,port9=a=none")
                .rfind("--console pty,port9=a=none: unknown option 'port9' (expected "
                       "port1..port8=NAME=BACKEND, ",
                       0),
            0u)
      << "the family is named once";

  const VirtioDeviceKind& kind = *find_virtio_device_kind("virtio_console");
  const DeviceSpec spec =
      spec_from_flag(kind, "stdio,port1=agent=socket:/run/a.sock,port2=log=file:/tmp/log");
  EXPECT_EQ(kind.describe(spec, 0, "vm"),
            "virtio-console hvc0 -> stdio, port agent -> socket:/run/a.sock, port log -> "
            "file:/tmp/log");
  const auto paths = kind.host_paths(spec);
  ASSERT_EQ(paths.size(), 2u) << "each port's socket or file, for a jail";
  EXPECT_EQ(paths[0].path, "/run/a.sock");
  EXPECT_EQ(paths[0].use, HostPath::Use::socket);
  EXPECT_EQ(paths[1].path, "/tmp/log");
  EXPECT_EQ(kind.claims(spec_from_flag(kind, "pty,port1=a=stdio"), FakeFiles()).size(), 1u)
      << "a port on stdio takes stdin like the console would";
}

TEST(DeviceRegistry, NetRules) {
  EXPECT_TRUE(problems_of("virtio_net", "tap=t0,mac=52:54:00:12:34:56,mtu=9000").empty());
  EXPECT_EQ(first_problem("virtio_net", "mtu=1500"), "--net mtu=1500: missing tap=NAME");
  EXPECT_EQ(first_problem("virtio_net", "tap=t0,mac=52:54:00:12:34"),
            "--net tap=t0,mac=52:54:00:12:34: malformed MAC '52:54:00:12:34' (expected "
            "52:54:00:12:34:56)");
  EXPECT_EQ(first_problem("virtio_net", "tap=t0,mac=01:00:5e:00:00:01"),
            "--net tap=t0,mac=01:00:5e:00:00:01: MAC 01:00:5e:00:00:01 is a multicast address");
  EXPECT_EQ(first_problem("virtio_net", "tap=t0,mtu=67"),
            "--net tap=t0,mtu=67: MTU '67' is not a number from 68 to 65535");
  EXPECT_EQ(first_problem("virtio_net", "tap=t0,mtu=+100"),
            "--net tap=t0,mtu=+100: MTU '+100' is not a number from 68 to 65535");
  EXPECT_EQ(first_problem("virtio_net", "tap=0123456789abcdef"),
            "--net tap=0123456789abcdef: TAP name '0123456789abcdef' is longer than 15 "
            "characters");
  // '%' would make an interface per queue; '/', ':', blanks, "." and ".." Linux refuses.
  EXPECT_EQ(first_problem("virtio_net", "tap=tap%d,num_queues=2"),
            "--net tap=tap%d,num_queues=2: TAP name 'tap%d' has '%', which interface names "
            "cannot have (name one interface)");
  EXPECT_EQ(first_problem("virtio_net", "tap=a:b"),
            "--net tap=a:b: TAP name 'a:b' has ':', which interface names cannot have");
  EXPECT_EQ(first_problem("virtio_net", "tap=.."),
            "--net tap=..: TAP name '..' is no interface name");
  EXPECT_EQ(first_problem("virtio_net", "tap=a,tap=b"),
            "--net tap=a,tap=b: option 'tap' given twice");
  // Nothing polls without a thread: refused rather than ignored.
  EXPECT_EQ(first_problem("virtio_net", "tap=t0,poll_us=100"),
            "--net tap=t0,poll_us=100: poll_us= needs iothread=on or vhost=on (nothing polls "
            "without them)");
  EXPECT_TRUE(problems_of("virtio_net", "tap=t0,iothread=on,poll_us=100").empty());
  EXPECT_TRUE(problems_of("virtio_net", "tap=t0,vhost=on,poll_us=100").empty());
  EXPECT_TRUE(problems_of("virtio_net", "tap=t0,poll_us=0").empty()) << "no polling: no thread";
}

// Two devices on one TAP would split its frames (multiqueue) or fail as if another process had
// it: each claims its TAP.
TEST(DeviceRegistry, NetClaimsItsTap) {
  const VirtioDeviceKind& kind = *find_virtio_device_kind("virtio_net");
  const auto a = kind.claims(spec_from_flag(kind, "tap=t0,num_queues=2"), FakeFiles());
  const auto b = kind.claims(spec_from_flag(kind, "tap=t0,mac=52:54:00:12:34:57"), FakeFiles());
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].resource, b[0].resource);
  EXPECT_EQ(a[0].what, "TAP t0");
  EXPECT_NE(kind.claims(spec_from_flag(kind, "tap=t1"), FakeFiles())[0].resource, a[0].resource);
}

TEST(DeviceRegistry, RngRules) {
  EXPECT_TRUE(problems_of("virtio_rng", "").empty());
  EXPECT_EQ(first_problem("virtio_rng", "rate=1"),
            "--rng rate=1: unknown option 'rate' (expected transport=pci|mmio)");
  EXPECT_TRUE(problems_of("virtio_rng", "transport=pci").empty());
  EXPECT_EQ(first_problem("virtio_rng", "transport=isa"),
            "--rng transport=isa: transport 'isa': expected pci or mmio");
  const VirtioDeviceKind& kind = *find_virtio_device_kind("virtio_rng");
  EXPECT_TRUE(kind.flag_value_optional());
  EXPECT_EQ(kind.max_per_vm(), 1u);
}

TEST(DeviceRegistry, DevicesArePlacedByKindKeepingTheirOrder) {
  const std::vector<DeviceSpec> specs = {
      {"virtio_net", {{"tap", "t0"}}, "", ""},
      {"virtio_block", {{"path", "a"}}, "", ""},
      {"virtio_rng", {}, "", ""},
      {"virtio_block", {{"path", "b"}}, "", ""},
  };
  const auto ordered = in_device_order(specs);
  ASSERT_EQ(ordered.size(), 4u);
  EXPECT_EQ(ordered[0].spec, &specs[1]);
  EXPECT_EQ(ordered[0].index, 0u);
  EXPECT_EQ(ordered[1].spec, &specs[3]);
  EXPECT_EQ(ordered[1].index, 1u);
  EXPECT_EQ(ordered[2].spec, &specs[0]);
  EXPECT_EQ(ordered[3].spec, &specs[2]);
}

}  // namespace virtio_device_kind_test
