#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "libvmm/backends/escape_filter.hpp"

namespace libvmm {
namespace backends_escape_filter_test {

using Command = EscapeFilter::Command;

// Feeds `input`, returns what reaches the guest, and appends commands to `commands`.
std::string run(EscapeFilter& filter, std::string_view input, std::vector<Command>* commands) {
  std::vector<uint8_t> to_guest;
  for (char c : input) {
    const Command command = filter.feed(static_cast<uint8_t>(c), to_guest);
    if (command != Command::none && commands != nullptr) commands->push_back(command);
  }
  return std::string(to_guest.begin(), to_guest.end());
}

TEST(EscapeFilterTest, PlainBytesPassThrough) {
  EscapeFilter filter;
  std::vector<Command> commands;
  EXPECT_EQ(run(filter, "ls -l\r\x03\x1b[A", &commands), "ls -l\r\x03\x1b[A");
  EXPECT_TRUE(commands.empty());
}

TEST(EscapeFilterTest, CtrlAXQuits) {
  EscapeFilter filter;
  std::vector<Command> commands;
  EXPECT_EQ(run(filter, "ab\x01x", &commands), "ab");
  EXPECT_EQ(commands, std::vector<Command>{Command::quit});
}

TEST(EscapeFilterTest, CtrlASAsksForShutdown) {
  EscapeFilter filter;
  std::vector<Command> commands;
  EXPECT_EQ(run(filter, "ab\x01sc\x01S", &commands), "abc\x01S");
  EXPECT_EQ(commands, std::vector<Command>{Command::shutdown});
  EXPECT_NE(EscapeFilter::help_text().find("C-a s"), std::string_view::npos);
}

TEST(EscapeFilterTest, CtrlACtrlASendsOneCtrlA) {
  EscapeFilter filter;
  std::vector<Command> commands;
  EXPECT_EQ(run(filter,
                "\x01\x01"
                "a\x01\x01\x01\x01",
                &commands),
            "\x01"
            "a\x01\x01");
  EXPECT_TRUE(commands.empty());
}

TEST(EscapeFilterTest, CtrlAHPrintsHelp) {
  EscapeFilter filter;
  std::vector<Command> commands;
  EXPECT_EQ(run(filter, "\x01h\x01?", &commands), "");
  EXPECT_EQ(commands, (std::vector<Command>{Command::help, Command::help}));
  EXPECT_NE(EscapeFilter::help_text().find("C-a x"), std::string_view::npos);
}

TEST(EscapeFilterTest, CtrlAOtherPassesBothBytes) {
  EscapeFilter filter;
  std::vector<Command> commands;
  EXPECT_EQ(run(filter,
                "\x01"
                "c\x01X\x01\r",
                &commands),
            "\x01"
            "c\x01X\x01\r");
  EXPECT_TRUE(commands.empty());
}

TEST(EscapeFilterTest, PrefixSpansReads) {
  EscapeFilter filter;
  std::vector<Command> commands;
  EXPECT_EQ(run(filter, "a\x01", &commands), "a");
  EXPECT_TRUE(filter.pending_prefix());
  EXPECT_EQ(run(filter, "x", &commands), "");
  EXPECT_FALSE(filter.pending_prefix());
  EXPECT_EQ(commands, std::vector<Command>{Command::quit});
}

}  // namespace backends_escape_filter_test
}  // namespace libvmm
