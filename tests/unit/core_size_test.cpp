#include <gtest/gtest.h>

#include "libvmm/core/size.hpp"

using libvmm::format_size;
using libvmm::parse_number;
using libvmm::parse_size;

TEST(ParseSize, AcceptsTheFormsUsersWrite) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("256M"), 256ull << 20);
  EXPECT_EQ(parse_size("256MiB"), 256ull << 20);
  EXPECT_EQ(parse_size("2g"), 2ull << 30);
  EXPECT_EQ(parse_size("0x10_000_000"), 0x10000000u);
  EXPECT_EQ(parse_size("1_000"), 1000u);
  EXPECT_EQ(parse_size("0x1000"), 0x1000u);
}

TEST(ParseSize, RejectsGarbageAndOverflow) {
  EXPECT_FALSE(parse_size(""));
  EXPECT_FALSE(parse_size("M"));
  EXPECT_FALSE(parse_size("12Q"));
  EXPECT_FALSE(parse_size("-1"));
  EXPECT_FALSE(parse_size("0x"));
  EXPECT_FALSE(parse_size("_1"));
  // '_' only between two digits.
  EXPECT_FALSE(parse_size("1_"));
  EXPECT_FALSE(parse_size("1__0"));
  EXPECT_FALSE(parse_size("0x1_"));
  EXPECT_FALSE(parse_size("1_M"));
  EXPECT_FALSE(parse_size("99999999999999999999"));
  EXPECT_FALSE(parse_size("17000000000T"));
  EXPECT_FALSE(parse_size("1.5G"));
}

TEST(ParseNumber, TakesDigitsWithoutASuffix) {
  EXPECT_EQ(parse_number("5"), 5u);
  EXPECT_EQ(parse_number("0x1b"), 0x1bu);
  EXPECT_EQ(parse_number("1_000"), 1000u);
  // A size suffix is not part of a count: "5b" read as 5 bytes would hide a typo.
  EXPECT_FALSE(parse_number("5b"));
  EXPECT_FALSE(parse_number("1__0"));
  EXPECT_FALSE(parse_number("1_"));
  EXPECT_FALSE(parse_number("2M"));
  EXPECT_FALSE(parse_number(""));
  EXPECT_FALSE(parse_number("0x"));
  EXPECT_FALSE(parse_number("-1"));
  EXPECT_FALSE(parse_number("99999999999999999999"));
}

TEST(FormatSize, ReadableUnits) {
  EXPECT_EQ(format_size(512), "512 bytes");
  EXPECT_EQ(format_size(256ull << 20), "256 MiB");
  EXPECT_EQ(format_size(3ull << 29), "1.5 GiB");
}
