#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "libvmm/core/guest_memory.hpp"
#include "libvmm/core/seccomp.hpp"
#include "libvmm/core/sigbus_guard.hpp"
#include "libvmm/core/unique_fd.hpp"

namespace libvmm {
namespace core_sigbus_guard_test {

constexpr size_t kSize = 2 * 4096;

// Two pages of a memfd, mapped shared and filled with 0xab: what a front-end shares.
struct SharedFile {
  UniqueFd fd{::memfd_create("sigbus-test", MFD_CLOEXEC)};
  uint8_t* map = nullptr;
  SharedFile() {
    EXPECT_EQ(::ftruncate(fd.get(), kSize), 0);
    void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    EXPECT_NE(p, MAP_FAILED);
    map = static_cast<uint8_t*>(p);
    std::memset(map, 0xab, kSize);
  }
  ~SharedFile() { ::munmap(map, kSize); }
  uint8_t read(size_t offset) const { return *static_cast<volatile const uint8_t*>(map + offset); }
};

TEST(SigbusGuard, AShrunkMappingReadsZerosAndTheOwnerIsTold) {
  SharedFile file;
  UniqueFd notify(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  SigbusGuard guard(file.map, kSize, notify.get());
  EXPECT_EQ(file.read(4096), 0xab);
  EXPECT_FALSE(guard.tripped());

  // The peer shrinks the file to one page: the second page is past its end.
  ASSERT_EQ(::ftruncate(file.fd.get(), 4096), 0);
  EXPECT_EQ(file.read(4096), 0);  // a SIGBUS, caught: zero pages now
  EXPECT_TRUE(guard.tripped());
  EXPECT_EQ(file.read(0), 0);  // the whole mapping was replaced
  file.map[100] = 7;           // and takes writes, which go nowhere the peer sees
  EXPECT_EQ(file.read(100), 7);
  pollfd p{notify.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 0), 1);
  uint64_t count = 0;
  ASSERT_EQ(::read(notify.get(), &count, sizeof count), static_cast<ssize_t>(sizeof count));
  EXPECT_EQ(count, 1u);
}

TEST(SigbusGuard, AMemoryRegionGuardedAgainstShrinking) {
  UniqueFd fd(::memfd_create("sigbus-region", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(fd.get(), kSize), 0);
  const int raw = fd.get();
  auto region = MemoryRegion::from_fd("front-end region", std::move(fd), kSize);
  region->guard_against_shrinking(-1);
  EXPECT_FALSE(region->shrunk());
  ASSERT_EQ(::ftruncate(raw, 0), 0);
  EXPECT_EQ(*static_cast<volatile uint8_t*>(region->host()), 0);
  EXPECT_TRUE(region->shrunk());
}

// A `.system` file's shared regions (host files, shm objects). Found in review: they were
// unguarded, so another process shrinking one ended vmm with SIGBUS at a device's next access.
TEST(RegionShrinkWatch, SaysWhichRegionShrankOnce) {
  RegionShrinkWatch watch;
  std::vector<int> raw;
  std::vector<std::shared_ptr<MemoryRegion>> regions;
  for (const char* name : {"mailbox", "frames"}) {
    UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(fd.get(), kSize), 0);
    raw.push_back(fd.get());
    regions.push_back(MemoryRegion::from_fd(name, std::move(fd), kSize));
    ASSERT_TRUE(watch.add(regions.back()));
  }
  EXPECT_TRUE(watch.take_shrunk().empty());
  ASSERT_EQ(::ftruncate(raw[1], 0), 0);
  EXPECT_EQ(*static_cast<volatile uint8_t*>(regions[1]->host() + 4096), 0);  // no SIGBUS
  pollfd p{watch.fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 0), 1);
  EXPECT_EQ(watch.take_shrunk(), std::vector<std::string>{"frames"});
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "emptied";
  EXPECT_TRUE(watch.take_shrunk().empty()) << "said once";
}

// Found in review: the regions could take every guard, and a VM's kernel then failed to load.
TEST(RegionShrinkWatch, LeavesHalfTheGuardsToOthers) {
  RegionShrinkWatch watch;
  std::vector<std::shared_ptr<MemoryRegion>> regions;
  size_t guarded = 0;
  for (size_t i = 0; i <= SigbusGuard::kMaxGuards / 2; ++i) {
    UniqueFd fd(::memfd_create("many", MFD_CLOEXEC));
    ASSERT_EQ(::ftruncate(fd.get(), kSize), 0);
    regions.push_back(MemoryRegion::from_fd("many", std::move(fd), kSize));
    guarded += watch.add(regions.back()) ? 1 : 0;
  }
  EXPECT_EQ(guarded, SigbusGuard::kMaxGuards / 2);
  SharedFile file;
  EXPECT_NO_THROW(SigbusGuard(file.map, kSize, -1)) << "a guard left for someone else";
}

// Killed by SIGBUS; under ASan, whose SIGBUS handler the guard's hands over to, its report of
// it ends the process with a failure status instead.
bool EndedBySigbus(int status) {
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGBUS;
  return WIFEXITED(status) && WEXITSTATUS(status) != 0 && seccomp_kill_runs_as_log();
}

TEST(SigbusGuardDeathTest, ASigbusElsewhereStillEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        SharedFile guarded;
        SigbusGuard guard(guarded.map, kSize, -1);  // the handler is installed
        SharedFile other;
        static_cast<void>(::ftruncate(other.fd.get(), 0));
        static_cast<void>(other.read(0));
      },
      EndedBySigbus, "");
}

TEST(SigbusGuardDeathTest, AReleasedGuardNoLongerCatches) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        SharedFile file;
        { SigbusGuard guard(file.map, kSize, -1); }
        static_cast<void>(::ftruncate(file.fd.get(), 0));
        static_cast<void>(file.read(0));
      },
      EndedBySigbus, "");
}

// Found in review: a SIGBUS sent with kill() found no guard, had the old disposition restored and
// returned, so the signal was lost (and every guard silently off from then on).
TEST(SigbusGuardDeathTest, ASentSigbusIsNotSwallowed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        SharedFile guarded;
        SigbusGuard guard(guarded.map, kSize, -1);
        ::kill(::getpid(), SIGBUS);
        ::sleep(1);  // delivered by now; surviving it is the defect
        std::_Exit(0);
      },
      EndedBySigbus, "");
}

}  // namespace core_sigbus_guard_test
}  // namespace libvmm
