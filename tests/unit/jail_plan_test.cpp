// The jail's plan: which host files go in, at which paths, and how; what it refuses. Pure
// (no root, no mounts): run_in_jail() itself is tested by tests/integration/linux_jail.sh.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "libvmm/core/error.hpp"
#include "libvmm/jail/jail.hpp"
#include "libvmm/system/description.hpp"
#include "libvmm/system/system.hpp"
#include "libvmm/virtio/device_kind.hpp"

using namespace libvmm;

namespace jail_plan_test {

using Use = HostPath::Use;

DeviceSpec flag(std::string_view element, std::string_view value) {
  const VirtioDeviceKind* kind = find_virtio_device_kind(element);
  EXPECT_NE(kind, nullptr) << element;
  return spec_from_flag(*kind, value);
}

// The use of `path` in the plan, or nullopt when it is not there.
std::optional<Use> use_of(const JailPlan& plan, const std::string& path) {
  for (const JailFile& f : plan.files) {
    if (f.path == path) return f.use;
  }
  return std::nullopt;
}

std::string where_of(const JailPlan& plan, const std::string& path) {
  for (const JailFile& f : plan.files) {
    if (f.path == path) return f.where;
  }
  return "";
}

std::string refusal(const SystemDescription& d, const std::filesystem::path& cwd = "/work") {
  try {
    plan_jail(d, cwd);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

VmConfig flags_vm() {
  VmConfig c;
  c.kernel = "bzImage";
  c.initrd = "/images/initramfs.cpio.gz";
  c.serial = "stdio";
  return c;
}

TEST(JailPlan, FlagsPutEveryFileTheVmOpensAtItsAbsolutePath) {
  VmConfig c = flags_vm();
  c.devices.push_back(flag("virtio_block", "disks/root.img"));
  c.devices.push_back(flag("virtio_block", "/images/base.img,readonly"));
  c.devices.push_back(flag("virtio_net", "tap=tap0"));
  c.devices.push_back(flag("virtio_console", "file:out/console.log"));
  c.devices.push_back(flag("virtio_rng", ""));
  const JailPlan plan = plan_jail(SystemDescription::from_vm_config(c), "/work/vm");

  EXPECT_EQ(plan.cwd, "/work/vm");
  // Relative paths resolve against the working directory (recreated inside): no rewriting.
  EXPECT_EQ(use_of(plan, "/work/vm/bzImage"), Use::read);
  EXPECT_EQ(use_of(plan, "/images/initramfs.cpio.gz"), Use::read);
  EXPECT_EQ(use_of(plan, "/work/vm/disks/root.img"), Use::read_write);
  EXPECT_EQ(use_of(plan, "/images/base.img"), Use::read);
  EXPECT_EQ(use_of(plan, "/work/vm/out/console.log"), Use::create);
  EXPECT_EQ(use_of(plan, "/dev/kvm"), Use::device);
  EXPECT_EQ(use_of(plan, "/dev/net/tun"), Use::device);
  EXPECT_EQ(plan.files.size(), 7u);  // and nothing else (stdio, rng: no file)
  EXPECT_EQ(plan.taps, std::vector<std::string>{"tap0"});
  // Each file names who asked for it, as messages do.
  EXPECT_EQ(where_of(plan, "/work/vm/bzImage"), "--kernel");
  EXPECT_EQ(where_of(plan, "/work/vm/disks/root.img"), "--disk disks/root.img");
  // Sorted by path.
  for (size_t i = 1; i < plan.files.size(); ++i) {
    EXPECT_LT(plan.files[i - 1].path, plan.files[i].path);
  }
}

TEST(JailPlan, PathsAreLexicallyNormal) {
  VmConfig c = flags_vm();
  c.kernel = "../images/./bzImage";
  c.initrd.clear();
  const JailPlan plan = plan_jail(SystemDescription::from_vm_config(c), "/work/vm");
  EXPECT_EQ(use_of(plan, "/work/images/bzImage"), Use::read);
  EXPECT_EQ(plan.files.size(), 2u);  // and /dev/kvm
}

TEST(JailPlan, ReadAndReadWriteOfOneFileMergeIntoReadWrite) {
  VmConfig c = flags_vm();
  c.devices.push_back(flag("virtio_block", "/images/shared.img,readonly"));
  c.devices.push_back(flag("virtio_block", "/images/shared.img"));
  const JailPlan plan = plan_jail(SystemDescription::from_vm_config(c), "/work");
  EXPECT_EQ(use_of(plan, "/images/shared.img"), Use::read_write);
}

TEST(JailPlan, TheSerialBackendAndTheKvmDeviceOverride) {
  VmConfig c = flags_vm();
  c.serial = "socket:/run/vm/serial.sock";
  c.kvm_device = "/dev/kvm-test";
  const JailPlan plan = plan_jail(SystemDescription::from_vm_config(c), "/work");
  EXPECT_EQ(use_of(plan, "/run/vm/serial.sock"), Use::socket);
  EXPECT_EQ(where_of(plan, "/run/vm/serial.sock"), "--serial");
  EXPECT_EQ(use_of(plan, "/dev/kvm-test"), Use::device);
  EXPECT_FALSE(use_of(plan, "/dev/kvm"));
}

TEST(JailPlan, ASystemFileBringsItsRegionsAndInterruptSources) {
  const std::string xml = R"(<system>
  <memory_region name="guest_ram" size="256M" />
  <memory_region name="file" size="0x1_000" phys_addr="0xc0000000" path="shared.bin" />
  <memory_region name="mailbox" size="0x1_000" phys_addr="0xc0001000" shm="/mailbox" />
  <protection_domain name="vmm">
    <virtual_machine name="linux" id="0">
      <map mr="guest_ram" vaddr="0x0" perms="rwx" />
      <map mr="file" perms="rw" />
      <map mr="mailbox" perms="rw" />
      <kernel path="bzImage" />
      <irq irq="20" fifo="/run/vm/doorbell" />
      <irq irq="21" socket="/run/vm/bell.sock" />
      <serial backend="file:/var/log/vm/serial.log" />
      <virtio_block path="disk.img" />
    </virtual_machine>
  </protection_domain>
</system>
)";
  std::vector<std::string> problems;
  const auto d = SystemDescription::parse(xml, "/etc/vm/t.system", problems);
  ASSERT_TRUE(problems.empty()) << problems.front();
  const JailPlan plan = plan_jail(d, "/elsewhere");
  // Paths of a .system file are relative to the file, not to the working directory.
  EXPECT_EQ(use_of(plan, "/etc/vm/bzImage"), Use::read);
  EXPECT_EQ(use_of(plan, "/etc/vm/disk.img"), Use::read_write);
  EXPECT_EQ(use_of(plan, "/etc/vm/shared.bin"), Use::create);
  EXPECT_EQ(use_of(plan, "/dev/shm/mailbox"), Use::create);
  EXPECT_EQ(use_of(plan, "/run/vm/doorbell"), Use::fifo);
  EXPECT_EQ(use_of(plan, "/run/vm/bell.sock"), Use::socket);
  EXPECT_EQ(use_of(plan, "/var/log/vm/serial.log"), Use::create);
  EXPECT_EQ(use_of(plan, "/dev/kvm"), Use::device);
  EXPECT_EQ(plan.files.size(), 8u);
  EXPECT_EQ(where_of(plan, "/etc/vm/bzImage"), "/etc/vm/t.system:10: <kernel>");
  EXPECT_EQ(where_of(plan, "/run/vm/doorbell"), "/etc/vm/t.system:11: IRQ 20");
  EXPECT_NE(plan.describe().find("fifo       /run/vm/doorbell  (/etc/vm/t.system:11: IRQ 20)"),
            std::string::npos)
      << plan.describe();
}

// Passed-through devices: the VFIO container and each device's IOMMU group node, found on the
// host before the jail (which has no sysfs); and the memory their VMs pin for DMA.
TEST(JailPlan, PassedThroughDevicesBringTheVfioContainerAndTheirGroupNodes) {
  const std::string xml = R"(<system>
  <memory_region name="guest_ram" size="256M" />
  <memory_region name="other_ram" size="64M" />
  <memory_region name="window" size="0x1_000" phys_addr="0xc0000000" />
  <protection_domain name="vmm">
    <virtual_machine name="nvme" id="0">
      <map mr="guest_ram" vaddr="0x0" perms="rwx" />
      <map mr="window" perms="rw" />
      <kernel path="bzImage" />
      <vfio device="0000:01:00.0" />
      <vfio device="02:00.1" />
    </virtual_machine>
    <virtual_machine name="plain" id="1">
      <map mr="other_ram" vaddr="0x0" perms="rwx" />
      <kernel path="bzImage" />
    </virtual_machine>
  </protection_domain>
</system>
)";
  std::vector<std::string> problems;
  auto d = SystemDescription::parse(xml, "/etc/vm/t.system", problems);
  ASSERT_TRUE(problems.empty()) << problems.front();
  // Its group must be known first (resolve_vfio_devices reads it from sysfs, as root).
  EXPECT_THROW(plan_jail(d, "/work"), std::logic_error);
  EXPECT_EQ(vfio_pinned_bytes(d), 256 * MiB + 4 * KiB);  // the nvme VM's maps only

  resolve_vfio_devices(d, false);
  resolve_vfio_devices(d, false);  // moved once: nothing added the second time
  VirtualMachineSpec& vm = *d.vms().front();
  ASSERT_EQ(vm.config.vfio.size(), 2u);
  EXPECT_TRUE(vm.vfio.empty());
  EXPECT_EQ(vm.config.vfio[0].address, "0000:01:00.0");
  EXPECT_EQ(vm.config.vfio[1].address, "0000:02:00.1");
  EXPECT_EQ(vm.config.vfio[1].label, "/etc/vm/t.system:11: <vfio device=\"02:00.1\">");
  EXPECT_THROW(plan_jail(d, "/work"), std::logic_error);  // groups still unknown
  EXPECT_EQ(vfio_pinned_bytes(d), 256 * MiB + 4 * KiB);

  vm.config.vfio[0].iommu_group = 7;
  vm.config.vfio[1].iommu_group = 12;
  const JailPlan plan = plan_jail(d, "/work");
  EXPECT_EQ(use_of(plan, "/dev/vfio/vfio"), Use::device);
  EXPECT_EQ(use_of(plan, "/dev/vfio/7"), Use::device);
  EXPECT_EQ(use_of(plan, "/dev/vfio/12"), Use::device);
  EXPECT_EQ(where_of(plan, "/dev/vfio/12"), "/etc/vm/t.system:11: <vfio device=\"02:00.1\">");
  EXPECT_EQ(plan.files.size(), 5u);  // and the kernel, /dev/kvm

  // Two functions of one group: one node.
  vm.config.vfio[1].iommu_group = 7;
  EXPECT_EQ(plan_jail(d, "/work").files.size(), 4u);
}

// A sound card's WAV files in a .system file are relative to the file, like its other paths;
// an ALSA PCM needs no file in the jail (vmm opens it before the jail and the jail inherits it).
TEST(JailPlan, SoundFilesOfASystemFileAreRelativeToIt) {
  auto parse = [](const std::string& device) {
    const std::string xml = R"(<system>
  <memory_region name="guest_ram" size="256M" />
  <protection_domain name="vmm">
    <virtual_machine name="linux" id="0">
      <map mr="guest_ram" vaddr="0x0" perms="rwx" />
      <kernel path="bzImage" />
      )" + device + R"(
    </virtual_machine>
  </protection_domain>
</system>
)";
    std::vector<std::string> problems;
    auto d = SystemDescription::parse(xml, "/etc/vm/t.system", problems);
    EXPECT_TRUE(problems.empty()) << problems.front();
    return d;
  };
  const auto wav = parse(R"(<virtio_sound backend="wav:sound/out.wav" in="tone.wav" />)");
  const DeviceSpec& spec = wav.vms().front()->config.devices.front();
  EXPECT_EQ(spec.value_or("backend", ""), "wav:/etc/vm/sound/out.wav");
  EXPECT_EQ(spec.value_or("in", ""), "/etc/vm/tone.wav");
  const JailPlan plan = plan_jail(wav, "/elsewhere");
  EXPECT_EQ(use_of(plan, "/etc/vm/sound/out.wav"), Use::create);
  EXPECT_EQ(use_of(plan, "/etc/vm/tone.wav"), Use::read);

  setenv("LIBVMM_TEST_SOUND_DIR", "/srv/audio", 1);
  const auto absolute = parse(R"(<virtio_sound backend="wav:${LIBVMM_TEST_SOUND_DIR}/out.wav" />)");
  EXPECT_EQ(absolute.vms().front()->config.devices.front().value_or("backend", ""),
            "wav:/srv/audio/out.wav");

  // Not a path: alsa's PCM name, commas and all; none.
  const auto alsa = parse(R"(<virtio_sound backend="alsa:hw:0,0" />)");
  EXPECT_EQ(alsa.vms().front()->config.devices.front().value_or("backend", ""), "alsa:hw:0,0");
  const JailPlan alsa_plan = plan_jail(alsa, "/elsewhere");
  for (const JailFile& f : alsa_plan.files) {
    EXPECT_TRUE(f.path == "/etc/vm/bzImage" || f.path == "/dev/kvm") << f.path;
  }
  EXPECT_EQ(parse(R"(<virtio_sound backend="none" />)")
                .vms()
                .front()
                ->config.devices.front()
                .value_or("backend", ""),
            "none");
}

TEST(JailPlan, RefusesWhatAJailCannotHold) {
  VmConfig c = flags_vm();
  c.serial = "pty";
  EXPECT_EQ(refusal(SystemDescription::from_vm_config(c)),
            "--serial: pty: not in a jail (its /dev/pts/N would exist only inside it; use "
            "socket:PATH)");

  c = flags_vm();
  c.devices.push_back(flag("virtio_console", "socket:/console.sock"));
  EXPECT_EQ(refusal(SystemDescription::from_vm_config(c)),
            "--console socket:/console.sock: /console.sock: a socket in the jail needs a "
            "directory of its own (e.g. /run/vm/console.sock)");

  // Found in review: its directory would have been the jail's /dev, made the user's and
  // remounted read-only (no socket, no /dev/kvm).
  c = flags_vm();
  c.devices.push_back(flag("virtio_console", "socket:/dev/vm/console.sock"));
  EXPECT_EQ(refusal(SystemDescription::from_vm_config(c)),
            "--console socket:/dev/vm/console.sock: /dev/vm/console.sock: a socket in the jail "
            "cannot be under /dev (the jail's /dev is its own, read-only; e.g. "
            "/run/vm/console.sock)");

  c = flags_vm();
  c.kvm_device = "/tmp/kvm";
  EXPECT_EQ(refusal(SystemDescription::from_vm_config(c)),
            "the KVM device: /tmp/kvm: the jail makes device nodes only under /dev");

  c = flags_vm();
  c.devices.push_back(flag("virtio_block", "/proc/self/mem"));
  EXPECT_EQ(refusal(SystemDescription::from_vm_config(c)),
            "--disk /proc/self/mem: /proc/self/mem: /proc is the jail's own");

  c = flags_vm();
  c.serial = "file:/images/disk.img";
  c.devices.push_back(flag("virtio_block", "/images/disk.img"));
  EXPECT_EQ(refusal(SystemDescription::from_vm_config(c)),
            "--disk /images/disk.img: /images/disk.img is also used by --serial (written), not "
            "as read-write");

  c = flags_vm();
  c.devices.push_back(flag("virtio_block", "/images/disk.img"));
  c.devices.push_back(flag("virtio_block", "/images/disk.img/inner.img"));
  EXPECT_EQ(refusal(SystemDescription::from_vm_config(c)),
            "--disk /images/disk.img/inner.img: /images/disk.img/inner.img is inside "
            "/images/disk.img (--disk /images/disk.img), a file");
}

TEST(JailCheck, RefusesBadOptionsInOneLineNamingTheFlag) {
  JailPlan plan;
  JailOptions o;
  o.dir = "/nonexistent-jail-dir";
  o.uid = 1000;
  o.gid = 1000;
  auto refusal_of = [&]() -> std::string {
    try {
      check_jail(o, plan);
    } catch (const UserError& e) {
      return e.what();
    }
    return "(no error)";
  };
  if (::geteuid() != 0) {
    EXPECT_EQ(refusal_of(),
              "--jail: needs root (it makes namespaces, mounts and device nodes, then drops to "
              "--jail-uid)");
    return;
  }
  EXPECT_EQ(refusal_of(), "--jail /nonexistent-jail-dir: No such file or directory");
  const std::string dir = ::testing::TempDir() + "jail-check-XXXXXX";
  std::vector<char> name(dir.begin(), dir.end());
  name.push_back('\0');
  ASSERT_NE(::mkdtemp(name.data()), nullptr);
  o.dir = name.data();
  EXPECT_EQ(refusal_of(), "(no error)");
  ASSERT_EQ(::chmod(o.dir.c_str(), 0777), 0);
  EXPECT_EQ(refusal_of(),
            "--jail " + o.dir.string() + ": must be owned by root and writable by no one else");
  ASSERT_EQ(::chmod(o.dir.c_str(), 0755), 0);
  o.uid = 0;
  EXPECT_EQ(refusal_of(), "--jail-uid 0: the VM must run as a user other than root");
  o.uid = 1000;
  o.gid = 0;
  EXPECT_EQ(refusal_of(), "--jail-gid 0: the VM must run in a group other than root");
  o.gid = 1000;
  o.network = JailOptions::Network::none;
  plan.taps = {"tap0"};
  EXPECT_EQ(refusal_of(),
            "--jail-netns new: TAP 'tap0' would reach nothing from a new, empty network "
            "namespace (make one with ip netns add NAME, and give --jail-netns NAME)");
  plan.taps.clear();
  o.network = JailOptions::Network::named;
  o.netns = "libvmm-no-such-netns";
  EXPECT_EQ(refusal_of(),
            "--jail-netns libvmm-no-such-netns: no such network namespace "
            "(/run/netns/libvmm-no-such-netns: No such file or directory; make one with ip "
            "netns add NAME)");
  o.network = JailOptions::Network::host;
  plan.files.push_back({o.dir / "bzImage", Use::read, "--kernel"});
  EXPECT_EQ(refusal_of(), "--kernel " + (o.dir / "bzImage").string() +
                              ": inside the jail's directory " + o.dir.string());
  plan.files.clear();
  const std::string file = o.dir.string() + "/x";
  {
    FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  EXPECT_EQ(refusal_of(), "--jail " + o.dir.string() +
                              ": not empty (the jail holds only what the VM needs: give an empty "
                              "directory)");
  ::unlink(file.c_str());
  // Found in review: only DIR was checked, not the directories above it.
  const std::string inner = o.dir.string() + "/inner";
  ASSERT_EQ(::mkdir(inner.c_str(), 0700), 0);
  ASSERT_EQ(::chown(o.dir.c_str(), 1000, 1000), 0);
  const std::filesystem::path outer = o.dir;
  o.dir = inner;
  EXPECT_EQ(refusal_of(), "--jail " + inner + ": " + outer.string() +
                              " above it is not root's alone (owner uid 1000, mode 755): another "
                              "user could swap the jail's directory");
  ASSERT_EQ(::chown(outer.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(outer.c_str(), 0777), 0);
  EXPECT_THAT(refusal_of(), ::testing::HasSubstr("(owner uid 0, mode 777)"));
  ASSERT_EQ(::chmod(outer.c_str(), 01777), 0);  // sticky, as /tmp: no one else can swap it
  EXPECT_EQ(refusal_of(), "(no error)");
  const std::string link = outer.string() + "/link";
  ASSERT_EQ(::symlink(inner.c_str(), link.c_str()), 0);
  const std::string through = link + "/sub";
  ASSERT_EQ(::mkdir(through.c_str(), 0700), 0);
  o.dir = through;
  EXPECT_EQ(refusal_of(), "(no error)");  // a link of root's in a sticky directory of root's
  ASSERT_EQ(::lchown(link.c_str(), 1000, 1000), 0);
  EXPECT_THAT(refusal_of(), ::testing::HasSubstr(link + " above it is not root's alone"));
  ::rmdir(through.c_str());
  ::unlink(link.c_str());
  ::rmdir(inner.c_str());
  o.dir = outer;
  ::rmdir(o.dir.c_str());
  o.dir = "/";
  EXPECT_EQ(refusal_of(), "--jail /: the jail's root must be a directory of its own");
}

// vmm-device's jail: its device's files through the registry and its socket's directory.
TEST(JailPlan, AListOfHostPathsForADeviceBackEnd) {
  std::vector<std::pair<HostPath, std::string>> paths;
  const DeviceSpec disk = flag("virtio_block", "disk.img,readonly");
  for (HostPath& p : find_virtio_device_kind("virtio_block")->host_paths(disk)) {
    paths.emplace_back(std::move(p), disk.where);
  }
  paths.emplace_back(HostPath{"/run/vm/blk.sock", Use::socket, {}}, "--socket /run/vm/blk.sock");
  const JailPlan plan = plan_jail(paths, "/srv");
  ASSERT_EQ(plan.files.size(), 2u);
  EXPECT_EQ(use_of(plan, "/srv/disk.img"), Use::read);
  EXPECT_EQ(where_of(plan, "/srv/disk.img"), "--disk disk.img,readonly");
  EXPECT_EQ(use_of(plan, "/run/vm/blk.sock"), Use::socket);
  EXPECT_TRUE(plan.taps.empty());
  paths.emplace_back(HostPath{"/blk.sock", Use::socket, {}}, "--socket /blk.sock");
  try {
    plan_jail(paths, "/srv");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_STREQ(e.what(),
                 "--socket /blk.sock: /blk.sock: a socket in the jail needs a directory of its "
                 "own (e.g. /run/vm/blk.sock)");
  }
}

TEST(JailOptionsFromFlags, NameTheFlagAndWhatRunsInside) {
  auto refusal = [](int64_t uid, int64_t gid) -> std::string {
    try {
      jail_options_from_flags("/srv/jail/", uid, gid, "", "the device");
    } catch (const UserError& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_EQ(refusal(-1, -1),
            "--jail: needs --jail-uid N (and --jail-gid N, default the same): the user the "
            "device runs as");
  EXPECT_EQ(refusal(1ll << 32, -1), "--jail-uid 4294967296: not a user id");
  EXPECT_EQ(refusal(1000, -2), "--jail-gid -2: not a group id");
  const JailOptions o = jail_options_from_flags("/srv/jail/", 1000, -1, "new", "the device");
  EXPECT_EQ(o.dir, "/srv/jail");
  EXPECT_EQ(o.uid, 1000u);
  EXPECT_EQ(o.gid, 1000u);
  EXPECT_EQ(o.network, JailOptions::Network::none);
  EXPECT_EQ(o.who, "the device");
  EXPECT_EQ(jail_options_from_flags("/j", 5, 6, "ns1", "the VM").netns, "ns1");
}

}  // namespace jail_plan_test
