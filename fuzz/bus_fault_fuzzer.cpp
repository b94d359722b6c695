// Builds an MMIO bus and a guest memory map from fuzz input, then sends guest accesses at any
// address and size through them, and checks the bus against a plain model: a range is refused
// exactly when it is empty, wraps or overlaps another device; an access reaches the one device
// that covers all of it, at the right offset, or none. Every access nothing serves is
// explained by the fault reporter: the report names the address, the access and the nearest
// thing the guest has (the distance computed without wrapping around), and report() answers
// "stop" exactly in strict mode, remembering a bounded number of addresses.
//
// Input: up to 8 devices (base, size), up to 4 memory mappings (gpa, size, read-only), then
// accesses (address as an offset from something or absolute, size, read or write).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_input.hpp"
#include "libvmm/core/bus.hpp"
#include "libvmm/core/error.hpp"
#include "libvmm/core/fault_report.hpp"
#include "libvmm/core/guest_memory.hpp"

using namespace libvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRegionSize = 64 * KiB;

// Records the last access it served.
struct Recorder final : BusDevice {
  explicit Recorder(int id) : id(id) {}
  std::string name() const override { return "dev" + std::to_string(id); }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    last = {offset, data.size(), true};
    std::fill(data.begin(), data.end(), static_cast<uint8_t>(id));
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    last = {offset, data.size(), false};
  }
  struct Access {
    uint64_t offset = ~0ull;
    size_t size = 0;
    bool read = false;
  };
  int id;
  Access last;
};

uint64_t u64(fuzz::Input& in) {
  const uint64_t low = in.u32();
  return low | uint64_t{in.u32()} << 32;
}

// Fault reports go to stderr: the fuzzer's own output, where they would drown everything.
struct QuietStderr {
  QuietStderr() : saved(::dup(STDERR_FILENO)) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDERR_FILENO);
    ::close(null);
  }
  ~QuietStderr() {
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
  }
  int saved;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::array regions = {MemoryRegion::create("ram", kRegionSize),
                                     MemoryRegion::create("rom", kRegionSize)};
  fuzz::Input in(data, size);

  Bus mmio("MMIO");
  std::vector<std::shared_ptr<Recorder>> devices;
  const size_t device_count = in.u8() % 9;
  for (size_t i = 0; i < device_count; ++i) {
    const uint64_t base = u64(in);
    const uint64_t length = in.u8() & 1 ? u64(in) : in.u16();
    auto device = std::make_shared<Recorder>(static_cast<int>(i));
    bool refused = length == 0 || base + length < base;
    for (const auto& e : mmio.entries()) refused |= base < e.end() && e.base < base + length;
    try {
      mmio.attach(base, length, device);
      check(!refused);
      devices.push_back(device);
    } catch (const UserError& e) {
      check(refused && std::string(e.what()).starts_with("MMIO bus: device 'dev"));
    }
  }
  check(std::is_sorted(mmio.entries().begin(), mmio.entries().end(),
                       [](const auto& a, const auto& b) { return a.base < b.base; }));

  GuestMemory memory;
  const size_t map_count = in.u8() % 5;
  for (size_t i = 0; i < map_count; ++i) {
    const uint8_t flags = in.u8();
    const uint64_t gpa = flags & 1 ? u64(in) : uint64_t{in.u32()} << 12;
    const uint64_t length = std::min<uint64_t>(1 + in.u16(), kRegionSize);
    try {
      memory.map(gpa, regions[(flags >> 1) & 1], 0, length, (flags & 4) != 0);
    } catch (const UserError&) {
      // An overlapping or wrapping map: refused, and the map stays as it was.
    }
  }

  FaultReporter lenient(memory, mmio, {});
  FaultReporter strict(memory, mmio, FaultReporter::Options::with_strict(true));
  for (size_t op = 0; op < 256 && !in.empty(); ++op) {
    const uint8_t code = in.u8();
    const size_t width = size_t{1} << (code & 3);
    // Near a device's or a mapping's edges, where mistakes live, or anywhere.
    uint64_t address = u64(in);
    if ((code & 0x0c) == 0x04 && !mmio.entries().empty()) {
      const auto& e = mmio.entries()[address % mmio.entries().size()];
      address = (code & 0x10 ? e.end() : e.base) + static_cast<int8_t>(in.u8());
    } else if ((code & 0x0c) == 0x08 && !memory.mappings().empty()) {
      const auto& m = memory.mappings()[address % memory.mappings().size()];
      address = (code & 0x10 ? m.end() : m.gpa) + static_cast<int8_t>(in.u8());
    }

    const Bus::Entry* covering = nullptr;
    for (const auto& e : mmio.entries()) {
      if (address >= e.base && address - e.base < e.size && width <= e.end() - address) {
        covering = &e;
      }
    }
    check(mmio.find(address, width) == covering);
    uint8_t bytes[8] = {};
    const bool write = code & 0x20;
    const bool served = write ? mmio.write(address, std::span<const uint8_t>(bytes, width))
                              : mmio.read(address, std::span(bytes, width));
    check(served == (covering != nullptr));
    if (covering != nullptr) {
      const auto& last = static_cast<Recorder&>(*covering->device).last;
      check(last.offset == address - covering->base && last.size == width && last.read == !write);
      continue;
    }

    const GuestAccess access{static_cast<uint32_t>(code >> 6),
                             address,
                             static_cast<uint32_t>(width),
                             write,
                             u64(in),
                             (code & 0x10) != 0};
    const std::string report = FaultReporter::describe(
        access, memory, mmio, FaultReporter::Options::with_strict((code & 0x40) != 0));
    char where[32];
    std::snprintf(where, sizeof where, "at guest-physical 0x%llx",
                  static_cast<unsigned long long>(address));
    check(report.find(where) != std::string::npos);
    check(report.find(write ? " wrote " : " read ") != std::string::npos);
    check(report.find("  nearest: ") != std::string::npos);
    // The nearest thing is one at the smallest distance, computed without wrapping around.
    uint64_t best = ~0ull;
    std::vector<std::pair<uint64_t, uint64_t>> known;
    for (const auto& m : memory.mappings()) known.emplace_back(m.gpa, m.end());
    for (const auto& e : mmio.entries()) known.emplace_back(e.base, e.end());
    for (const auto& [base, end] : known) {
      best = std::min(best, address < base  ? base - address
                            : address < end ? 0
                                            : address - end + 1);
    }
    const std::string nearest = report.substr(report.find("  nearest: "));
    bool named = known.empty() && nearest.find("nothing") != std::string::npos;
    for (const auto& [base, end] : known) {
      const uint64_t distance = address < base  ? base - address
                                : address < end ? 0
                                                : address - end + 1;
      char range[64];
      std::snprintf(range, sizeof range, "[0x%llx, 0x%llx)", static_cast<unsigned long long>(base),
                    static_cast<unsigned long long>(end));
      named |= distance == best && nearest.find(range) < nearest.find('\n');
    }
    check(named);
    // "Nothing there" only when the access overlaps nothing (and is no write to a read-only
    // map); an access over an edge says so.
    const uint64_t last = address > ~0ull - (width - 1) ? ~0ull : address + (width - 1);
    bool overlaps = false;
    for (const auto& [base, end] : known) overlaps |= end > base && address < end && last >= base;
    const GuestMapping* mapping = memory.find(address);
    if (mapping == nullptr || !mapping->readonly) {
      check(overlaps == (report.find("no RAM or device is mapped there") == std::string::npos));
    }
    if (code & 0x80) {
      const QuietStderr quiet;
      check(!lenient.report(access));
      check(strict.report(access));
    }
  }
  return 0;
}
