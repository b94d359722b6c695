#include "libvmm/core/device_spec.hpp"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace libvmm {

std::optional<std::string_view> DeviceSpec::get(std::string_view name) const {
  for (const auto& [key, value] : attributes) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::string DeviceSpec::value_or(std::string_view name, std::string_view fallback) const {
  return std::string(get(name).value_or(fallback));
}

std::optional<bool> DeviceSpec::boolean(std::string_view name) const {
  const auto v = get(name);
  if (!v || *v == "false") return false;
  if (*v == "true") return true;
  return std::nullopt;
}

std::string DeviceSpec::located(std::string_view message) const {
  return where.empty() ? std::string(message) : fmt::format("{}: {}", where, message);
}

std::vector<std::pair<std::string, std::string>> split_flag_value(std::string_view value,
                                                                  std::string_view positional,
                                                                  std::string& error) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t start = 0;
  for (bool first = true; start <= value.size(); first = false) {
    // The item ends at the first single comma; ",," inside it is one literal comma.
    std::string item;
    size_t pos = start;
    while (pos < value.size()) {
      if (value[pos] == ',') {
        if (pos + 1 < value.size() && value[pos + 1] == ',') {
          item.push_back(',');
          pos += 2;
          continue;
        }
        break;
      }
      item.push_back(value[pos++]);
    }
    start = pos + 1;  // past the separating comma, or past the end
    if (item.empty()) {
      if (value.empty() && positional.empty()) break;  // a flag given without a value
      if (first && !positional.empty()) continue;      // no value: the kind says what is missing
      error = "empty option between commas";
      return out;
    }
    size_t eq = item.find('=');
    // The first item is the positional value unless it starts with an option's name: a path
    // may hold '=' ("/srv/vm=1.img").
    const auto is_name_char = [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    };
    if (first && !positional.empty() && eq != std::string::npos &&
        (eq == 0 || !std::all_of(item.begin(), item.begin() + static_cast<std::ptrdiff_t>(eq),
                                 is_name_char))) {
      eq = std::string::npos;
    }
    std::string key, val;
    if (eq != std::string::npos) {
      key = item.substr(0, eq);
      val = item.substr(eq + 1);
    } else if (first && !positional.empty()) {
      key = positional;
      val = item;
    } else {
      key = item;
      val = "true";
    }
    for (const auto& [k, v] : out) {
      if (k == key) {
        error = fmt::format("option '{}' given twice", key);
        return out;
      }
    }
    out.emplace_back(std::move(key), std::move(val));
  }
  return out;
}

std::string HostFiles::check_readable(const std::filesystem::path& path) const {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::strerror(errno);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file";
  }
  if (::access(path.c_str(), R_OK) != 0) return std::strerror(errno);
  return "";
}

std::optional<std::string> HostFiles::identity(const std::filesystem::path& path) const {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return fmt::format("{}:{}", st.st_dev, st.st_ino);
}

namespace {

class PresentFiles final : public HostFiles {
 public:
  std::string check_readable(const std::filesystem::path& path) const override {
    return path.empty() ? "No such file or directory" : "";
  }
  std::optional<std::string> identity(const std::filesystem::path& path) const override {
    return path.string();
  }
};

}  // namespace

const HostFiles& HostFiles::assume_present() {
  static const PresentFiles files;
  return files;
}

const HostFiles& HostFiles::real() {
  static const HostFiles files;
  return files;
}

std::string_view to_string(HostPath::Use use) {
  switch (use) {
    case HostPath::Use::read:
      return "read-only";
    case HostPath::Use::read_write:
      return "read-write";
    case HostPath::Use::create:
      return "written";
    case HostPath::Use::fifo:
      return "fifo";
    case HostPath::Use::socket:
      return "socket";
    case HostPath::Use::device:
      return "device";
    case HostPath::Use::pty:
      return "pty";
  }
  return "?";
}

}  // namespace libvmm
