// log::RateLimited: the lines a guest can cause come in a burst, then one per interval, with
// notes saying that and how many were left out; a whole burst comes back after a quiet spell.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "libvmm/core/log.hpp"

using namespace libvmm;
using namespace std::chrono_literals;

namespace core_log_test {

using Clock = log::RateLimited::Clock;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(text.substr(start, end - start));
  }
  return lines;
}

// What `fn` writes to stderr, line by line, without the program's prefix.
template <typename Fn>
std::vector<std::string> logged(Fn fn) {
  testing::internal::CaptureStderr();
  fn();
  std::vector<std::string> lines = lines_of(testing::internal::GetCapturedStderr());
  for (std::string& l : lines) l = l.substr(l.find(": warning: ") + 11);
  return lines;
}

TEST(RateLimitedLog, ABurstThenOneNoteThenSilence) {
  log::RateLimited limit("guest errors", 3, 10s);
  const Clock::time_point t0{};
  const auto lines = logged([&] {
    for (int i = 1; i <= 10; ++i)
      limit.write_at(t0 + 1s, log::Level::warn, "dev", "error " + std::to_string(i));
  });
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "dev: error 1");
  EXPECT_EQ(lines[2], "dev: error 3");
  EXPECT_EQ(lines[3],
            "dev: further guest errors are not logged for now (one every 10 s gets through)");
  EXPECT_EQ(limit.left_out(), 7u);
}

TEST(RateLimitedLog, OneLinePerIntervalSaysHowManyWereLeftOut) {
  log::RateLimited limit("guest errors", 2, 10s);
  const Clock::time_point t0{};
  for (int i = 0; i < 5; ++i)
    limit.write_at(t0, log::Level::warn, "dev", "early");  // 2 logged, 3 left out
  auto lines = logged([&] {
    limit.write_at(t0 + 9s, log::Level::warn, "dev", "too soon");
    limit.write_at(t0 + 10s, log::Level::warn, "dev", "later");
    limit.write_at(t0 + 11s, log::Level::warn, "dev", "too soon again");
  });
  ASSERT_EQ(lines.size(), 2u) << "no second note within one flood";
  EXPECT_EQ(lines[0], "dev: guest errors not logged meanwhile: 4");
  EXPECT_EQ(lines[1], "dev: later");
  lines = logged([&] { limit.write_at(t0 + 25s, log::Level::warn, "dev", "next"); });
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "dev: guest errors not logged meanwhile: 1");
  EXPECT_EQ(lines[1], "dev: next");
}

TEST(RateLimitedLog, AQuietSpellBringsBackAWholeBurstAndANewNote) {
  log::RateLimited limit("request errors", 2, 1s);
  const Clock::time_point t0{};
  for (int i = 0; i < 4; ++i) limit.write_at(t0, log::Level::warn, "vda", "flood");
  const auto lines = logged([&] {
    for (int i = 0; i < 4; ++i) limit.write_at(t0 + 1h, log::Level::warn, "vda", "again");
  });
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "vda: request errors not logged meanwhile: 2");
  EXPECT_EQ(lines[1], "vda: again");
  EXPECT_EQ(lines[2], "vda: again");
  EXPECT_EQ(lines[3],
            "vda: further request errors are not logged for now (one every 1 s gets through)");
}

TEST(RateLimitedLog, DebugLinesCountWhenHidden) {
  log::RateLimited limit("port events", 2, 1h);
  const log::Level before = log::level();
  log::set_level(log::Level::info);
  auto lines = logged([&] {
    for (int i = 0; i < 3; ++i) limit.debug("hvc0", "opened in the guest");
  });
  EXPECT_TRUE(lines.empty());
  EXPECT_EQ(limit.left_out(), 1u);
  log::set_level(log::Level::debug);
  lines = logged([&] { limit.debug("hvc0", "closed in the guest"); });
  log::set_level(before);
  EXPECT_TRUE(lines.empty()) << "the burst was spent while hidden";
  EXPECT_EQ(limit.left_out(), 2u);
}

TEST(RateLimitedLog, ThreadsTogetherGetNoMoreThanTheBurst) {
  log::RateLimited limit("guest errors", 8, 1h);
  const auto lines = logged([&] {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 1000; ++i) limit.warn("dev", "error");
      });
    }
    for (auto& t : threads) t.join();
  });
  EXPECT_EQ(lines.size(), 9u) << "8 lines and the note";
  EXPECT_EQ(limit.left_out(), 4000u - 8u);
}

}  // namespace core_log_test
