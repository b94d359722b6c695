// Reading whole files given by the user, with errors that name the flag and the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace libvmm {

class SigbusGuard;

// Throws UserError "FLAG PATH: reason" when the file cannot be read.
std::vector<uint8_t> read_file(const std::filesystem::path& path, std::string_view flag);

// A user's file mapped read-only: for large inputs such as kernels, whose bytes are copied once
// into guest RAM. Unlike read_file() it allocates no buffer of the file's size and reads no part
// of the file that is never looked at (a vmlinux's symbol table). Should the file shrink while
// mapped, the lost pages read as zeros instead of raising SIGBUS, and check_intact() says so.
class MappedFile {
 public:
  // Throws UserError "FLAG PATH: reason" when the file cannot be opened or mapped.
  static MappedFile open(const std::filesystem::path& path, std::string_view flag);
  // open(), or no bytes when no path is given (an optional input such as --initrd).
  static MappedFile open_if_given(const std::filesystem::path& path, std::string_view flag);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&&) = delete;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const uint8_t> bytes() const { return {base_, size_}; }
  // Throws UserError "FLAG PATH: file shrank while being read" when it did since open().
  void check_intact() const;

 private:
  MappedFile(std::string label, const uint8_t* base, size_t size);

  std::string label_;  // "FLAG PATH"
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::unique_ptr<SigbusGuard> guard_;  // destroyed before the mapping goes
};

}  // namespace libvmm
