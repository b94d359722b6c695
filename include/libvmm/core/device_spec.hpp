// A device as a user asked for it, before anything is created: its kind and its attributes,
// the same whether they came from a `.system` element (<virtio_block path="d.img"
// readonly="true"/>), a flag (--disk d.img,readonly) or code. Device kinds read and check
// specs (virtio/device_kind.hpp); callers add where the spec came from to each problem.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace libvmm {

struct DeviceSpec {
  std::string kind;  // the registered kind, named like its .system element: "virtio_block"
  std::vector<std::pair<std::string, std::string>> attributes;  // as written, in order
  // Where it was written, for messages: "file:line: <virtio_block>", "--disk d.img,readonly",
  // or "" for a spec built in code.
  std::string where;
  // Set when a flag's value could not be split into attributes: why (reported first).
  std::string malformed;

  std::optional<std::string_view> get(std::string_view name) const;
  std::string value_or(std::string_view name, std::string_view fallback) const;
  // "true" or "false" (absent: false); nullopt for anything else.
  std::optional<bool> boolean(std::string_view name) const;
  // `message` prefixed with where, as users see it: "--disk d.img,bogus: unknown option ...".
  std::string located(std::string_view message) const;
};

// A host file or device a VM uses, and what it does with it: what a sandbox (vmm --jail) must
// provide, and how. Device kinds list theirs (VirtioDeviceKind::host_paths()).
struct HostPath {
  enum class Use {
    read,        // an existing file, opened read-only (a kernel, a read-only disk image)
    read_write,  // an existing file, opened read-write (a disk image)
    create,      // a file opened for writing, created if missing (file: output, region file)
    fifo,        // a named pipe, created if missing
    socket,      // a Unix socket the VMM creates (listens or binds) at the path
    device,      // a character device node (/dev/kvm, /dev/net/tun)
    pty,         // a new pseudo-terminal (no path: /dev/ptmx)
  };
  std::filesystem::path path;
  Use use = Use::read;
  std::string tap;  // device: the TAP interface opened through the node, if any
};
std::string_view to_string(HostPath::Use use);

// Splits a flag's value into attributes: "d.img,readonly,serial=ID" with positional "path"
// gives path=d.img, readonly=true, serial=ID. Only the first item may be bare-positional; other
// bare items are boolean attributes set to "true". A doubled comma is a literal comma in an item
// ("alsa:hw:0,,0" with positional "backend" gives backend=alsa:hw:0,0). Returns the problem
// (empty item, attribute given twice) in `error`, leaving the result unspecified.
std::vector<std::pair<std::string, std::string>> split_flag_value(std::string_view value,
                                                                  std::string_view positional,
                                                                  std::string& error);

// What the host's file system says about the files a description names. Validation asks this
// instead of the file system directly, so a fuzzer or a test can stand in for the host.
class HostFiles {
 public:
  virtual ~HostFiles() = default;
  // Empty when `path` is a readable regular file or block device; otherwise why not
  // ("No such file or directory", "not a regular file", "Permission denied").
  virtual std::string check_readable(const std::filesystem::path& path) const;
  // A name for the file's identity (device and inode), equal for two paths of one file;
  // nullopt when it cannot be examined.
  virtual std::optional<std::string> identity(const std::filesystem::path& path) const;

  static const HostFiles& real();  // the host's own file system
  // Every named file exists and is its own file: for parsing a spec without the host
  // (parse_disk_spec) and for fuzzing.
  static const HostFiles& assume_present();
};

}  // namespace libvmm
