#pragma once
// Linux's boot-protocol structures (boot_params, setup_header, boot_e820_entry) are packed, so a
// test copies a field out before comparing it: EXPECT_EQ takes its arguments by reference, and a
// reference to a misaligned field is undefined behaviour (UBSan: "reference binding to
// misaligned address").

namespace libvmm::test {

template <typename T>
constexpr T packed(T field) {
  return field;
}

}  // namespace libvmm::test
