#include "libvmm/backends/open_char_backend.hpp"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <string>

#include "libvmm/backends/file_backend.hpp"
#include "libvmm/backends/null_backend.hpp"
#include "libvmm/backends/pty_backend.hpp"
#include "libvmm/backends/socket_backend.hpp"
#include "libvmm/backends/stdio_backend.hpp"
#include "libvmm/core/error.hpp"

namespace libvmm {
namespace {

struct OpenRequest {
  std::string_view argument;  // after "kind:", for kinds that take one
  std::string_view flag_name;
  const std::function<void()>& on_quit;
  const std::function<void()>& on_shutdown;
};

struct BackendKind {
  std::string_view name;
  std::string_view argument;  // empty: the spec is the bare name; else "name:ARGUMENT"
  std::unique_ptr<CharBackend> (*open)(const OpenRequest& request);
};

constexpr std::array kKinds = {
    BackendKind{"stdio", "",
                [](const OpenRequest& r) -> std::unique_ptr<CharBackend> {
                  auto backend = std::make_unique<StdioBackend>(r.on_quit);
                  backend->set_on_shutdown(r.on_shutdown);
                  return backend;
                }},
    BackendKind{"file", "PATH",
                [](const OpenRequest& r) -> std::unique_ptr<CharBackend> {
                  return std::make_unique<FileBackend>(std::string(r.argument));
                }},
    BackendKind{"socket", "PATH",
                [](const OpenRequest& r) -> std::unique_ptr<CharBackend> {
                  return std::make_unique<SocketBackend>(std::string(r.argument));
                }},
    BackendKind{"pty", "",
                [](const OpenRequest& r) -> std::unique_ptr<CharBackend> {
                  return std::make_unique<PtyBackend>(r.flag_name);
                }},
    BackendKind{"none", "",
                [](const OpenRequest&) -> std::unique_ptr<CharBackend> {
                  return std::make_unique<NullBackend>();
                }},
};

std::string usage(const BackendKind& kind) {
  return kind.argument.empty() ? std::string(kind.name)
                               : fmt::format("{}:{}", kind.name, kind.argument);
}

// "stdio, file:PATH, socket:PATH, pty or none"
std::string expected_specs() {
  std::string list;
  for (size_t i = 0; i < kKinds.size(); ++i) {
    if (i > 0) list += i + 1 == kKinds.size() ? " or " : ", ";
    list += usage(kKinds[i]);
  }
  return list;
}

// The kind a spec names and its argument; nullptr with `why` set when it names none.
const BackendKind* find_kind(std::string_view spec, std::string_view& argument, std::string& why) {
  const size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  for (const BackendKind& kind : kKinds) {
    if (kind.name != name) continue;
    const bool takes_argument = !kind.argument.empty();
    const bool has_argument = colon != std::string_view::npos;
    if (has_argument && !takes_argument) break;  // "stdio:..." is nothing we know
    argument = has_argument ? spec.substr(colon + 1) : std::string_view();
    if (takes_argument && argument.empty()) {
      why = fmt::format("backend '{}' needs a {} ({})", spec, kind.argument, usage(kind));
      return nullptr;
    }
    return &kind;
  }
  why = fmt::format("unknown backend '{}' (expected {})", spec, expected_specs());
  return nullptr;
}

}  // namespace

std::string check_char_backend_spec(std::string_view spec) {
  std::string_view argument;
  std::string why;
  find_kind(spec, argument, why);
  return why;
}

std::optional<HostPath> char_backend_host_path(std::string_view spec) {
  std::string_view argument;
  std::string why;
  const BackendKind* kind = find_kind(spec, argument, why);
  if (kind == nullptr) return std::nullopt;
  if (kind->name == "file") return HostPath{std::string(argument), HostPath::Use::create, {}};
  if (kind->name == "socket") return HostPath{std::string(argument), HostPath::Use::socket, {}};
  if (kind->name == "pty") return HostPath{"/dev/ptmx", HostPath::Use::pty, {}};
  return std::nullopt;
}

std::unique_ptr<CharBackend> open_char_backend(std::string_view spec, std::string_view flag_name,
                                               std::function<void()> on_quit,
                                               std::function<void()> on_shutdown) {
  std::string_view argument;
  std::string why;
  const BackendKind* kind = find_kind(spec, argument, why);
  if (kind == nullptr) throw UserError(fmt::format("{}: {}", flag_name, why));
  try {
    return kind->open(OpenRequest{argument, flag_name, on_quit, on_shutdown});
  } catch (const SystemError& e) {
    throw UserError(
        fmt::format("{} {}: cannot open: {}", flag_name, spec, std::strerror(e.code())));
  } catch (const UserError& e) {
    throw UserError(fmt::format("{} {}: {}", flag_name, spec, e.what()));
  }
}

}  // namespace libvmm
