// Opens a character backend from its command-line spec (the value of --serial, --console, ...).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/core/device_spec.hpp"

namespace libvmm {

// Specs:
//   stdio        stdin/stdout; on a terminal, raw mode and Ctrl-A escapes (Ctrl-A x: on_quit)
//   file:PATH    output to PATH, created or truncated; no input
//   socket:PATH  a Unix stream socket listening at PATH, one client at a time
//   pty          a new pseudo-terminal; its /dev/pts/N path is logged
//   none         output discarded; no input
// Throws UserError naming `flag_name` (e.g. "--serial") for an unknown spec, a file or socket
// that cannot be opened, or stdin already taken by another stdio backend.
// New kinds are added to the table in open_char_backend.cpp; callers and the error messages
// follow from it.
// Checks a spec's form without opening anything: empty if open_char_backend() would know it,
// else why not ("unknown backend 'x' (expected ...)").
std::string check_char_backend_spec(std::string_view spec);

// The host file a spec opens, and how (file:PATH creates PATH, socket:PATH listens there, pty
// opens /dev/ptmx); nullopt for stdio, none and specs check_char_backend_spec() refuses.
std::optional<HostPath> char_backend_host_path(std::string_view spec);

// `on_quit` is what the stdio backend's Ctrl-A x does, `on_shutdown` its Ctrl-A s.
std::unique_ptr<CharBackend> open_char_backend(std::string_view spec, std::string_view flag_name,
                                               std::function<void()> on_quit,
                                               std::function<void()> on_shutdown = {});

}  // namespace libvmm
