// Reading whole files given by the user, with errors that name the flag and the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

namespace libvmm {

// Throws UserError "FLAG PATH: reason" when the file cannot be read.
std::vector<uint8_t> read_file(const std::filesystem::path& path, std::string_view flag);

}  // namespace libvmm
