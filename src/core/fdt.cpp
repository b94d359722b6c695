#include "libvmm/core/fdt.hpp"

#include <fmt/format.h>
#include <libfdt.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "libvmm/core/error.hpp"
#include "libvmm/core/guest_memory.hpp"  // KiB

namespace libvmm {
namespace {

void append_be32(std::vector<uint8_t>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

[[noreturn]] void libfdt_failed(const char* what, int err) {
  throw std::runtime_error(fmt::format("device tree: {} failed: {}", what, fdt_strerror(err)));
}

int checked_size(size_t size) {
  if (size > static_cast<size_t>(INT32_MAX)) throw std::length_error("device tree too big");
  return static_cast<int>(size);
}

// Debian 12's libfdt 1.6.1 adds a property's length to an int offset unchecked (fixed upstream
// in 1.7.0): a length near 2^32 wraps the walk back onto the same tag and fdt_check_full loops
// forever (found by dtb_patch_fuzzer). Walk the structure block first, as libfdt does: offsets
// within the block, aligned within it (the block itself may start at any offset: 1.6.1 does not
// refuse that). Returns the file offset of a property longer than what is left of the block.
// Anything else malformed is libfdt's to judge.
std::optional<uint64_t> overlong_property(const void* header) {
  const auto* fdt = static_cast<const uint8_t*>(header);
  const uint64_t base = fdt_off_dt_struct(header);  // fdt_check_header: within totalsize
  const uint64_t left = fdt_totalsize(header) - base;
  const uint64_t end =
      fdt_version(header) >= 17 ? std::min<uint64_t>(fdt_size_dt_struct(header), left) : left;
  const auto byte = [fdt, base](uint64_t offset) { return fdt[base + offset]; };
  const auto be32 = [&byte](uint64_t offset) {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) value = value << 8 | byte(offset + i);
    return value;
  };
  const auto aligned = [](uint64_t offset) { return (offset + 3) & ~uint64_t{3}; };
  uint64_t at = 0;
  while (at + 4 <= end) {
    const uint64_t tag_at = at;
    const uint32_t tag = be32(at);
    at += 4;
    if (tag == FDT_BEGIN_NODE) {
      while (at < end && byte(at) != 0) ++at;
      at = aligned(at + 1);
    } else if (tag == FDT_PROP) {
      if (at + 8 > end) return std::nullopt;
      const uint32_t length = be32(at);
      at += 8;  // the length and the name's offset
      if (length > end - at) return base + tag_at;
      at = aligned(at + length);
    } else if (tag != FDT_END_NODE && tag != FDT_NOP) {
      return std::nullopt;  // FDT_END, or a tag libfdt refuses
    }
  }
  return std::nullopt;
}

}  // namespace

FdtNode& FdtNode::empty(std::string name) {
  properties_.push_back({std::move(name), {}});
  return *this;
}

FdtNode& FdtNode::cells(std::string name, std::vector<uint32_t> values) {
  FdtProperty property{std::move(name), {}};
  for (uint32_t value : values) append_be32(property.value, value);
  properties_.push_back(std::move(property));
  return *this;
}

FdtNode& FdtNode::u64(std::string name, uint64_t value) {
  return cells(std::move(name), {static_cast<uint32_t>(value >> 32), static_cast<uint32_t>(value)});
}

FdtNode& FdtNode::strings(std::string name, std::initializer_list<std::string_view> values) {
  FdtProperty property{std::move(name), {}};
  for (std::string_view value : values) {
    property.value.insert(property.value.end(), value.begin(), value.end());
    property.value.push_back(0);
  }
  properties_.push_back(std::move(property));
  return *this;
}

FdtNode& FdtNode::reg(std::initializer_list<FdtReg> ranges) {
  std::vector<uint32_t> values;
  for (const FdtReg& range : ranges) {
    for (uint64_t v : {range.address, range.size}) {
      values.push_back(static_cast<uint32_t>(v >> 32));
      values.push_back(static_cast<uint32_t>(v));
    }
  }
  return cells("reg", std::move(values));
}

FdtNode& FdtNode::child(FdtNode node) {
  children_.push_back(std::move(node));
  return *this;
}

FdtNode* FdtNode::find_child(std::string_view name) {
  for (FdtNode& c : children_) {
    if (c.name() == name) return &c;
  }
  return nullptr;
}

std::string node_name(std::string_view name, uint64_t address) {
  return fmt::format("{}@{:x}", name, address);
}

namespace {

// Sequential-write emission of a node and its subtree; returns a libfdt error or 0.
int emit(void* fdt, const FdtNode& node, bool is_root) {
  int err = fdt_begin_node(fdt, is_root ? "" : node.name().c_str());
  for (const FdtProperty& p : node.properties()) {
    if (err != 0) return err;
    err = fdt_property(fdt, p.name.c_str(), p.value.data(), checked_size(p.value.size()));
  }
  for (const FdtNode& child : node.children()) {
    if (err != 0) return err;
    err = emit(fdt, child, false);
  }
  return err != 0 ? err : fdt_end_node(fdt);
}

}  // namespace

std::vector<uint8_t> serialize_fdt(const FdtNode& root) {
  // Start from a size that fits our trees, double on FDT_ERR_NOSPACE.
  for (size_t size = 16 * KiB;; size *= 2) {
    std::vector<uint8_t> buf(size);
    void* fdt = buf.data();
    int err = fdt_create(fdt, checked_size(size));
    if (err == 0) err = fdt_finish_reservemap(fdt);
    if (err == 0) err = emit(fdt, root, true);
    if (err == 0) err = fdt_finish(fdt);
    if (err == -FDT_ERR_NOSPACE) continue;
    if (err != 0) libfdt_failed("building the tree", err);
    buf.resize(fdt_totalsize(fdt));
    return buf;
  }
}

FdtNode& FdtWriter::node(std::string_view name) {
  if (FdtNode* existing = root_.find_child(name)) return *existing;
  root_.child(FdtNode(std::string(name)));
  return *root_.find_child(name);
}

uint32_t FdtWriter::phandle(std::string_view label) {
  if (auto it = phandles_.find(label); it != phandles_.end()) return it->second;
  const auto number = static_cast<uint32_t>(phandles_.size() + 1);
  phandles_.emplace(std::string(label), number);
  return number;
}

std::vector<uint32_t> FdtWriter::interrupt_map_parent(uint32_t number, FdtTrigger trigger,
                                                      const std::string& what) {
  if (interrupts_ == nullptr || interrupts_->phandle_label().empty()) {
    throw std::logic_error("device tree: " + what + " maps interrupts, but no controller can");
  }
  std::vector<uint32_t> cells{phandle(interrupts_->phandle_label())};
  cells.resize(1 + interrupts_->address_cells(), 0);
  const std::vector<uint32_t> specifier = interrupts(number, trigger, what);
  cells.insert(cells.end(), specifier.begin(), specifier.end());
  return cells;
}

std::vector<uint32_t> FdtWriter::interrupts(uint32_t number, FdtTrigger trigger,
                                            const std::string& what) {
  if (interrupts_ == nullptr) {
    throw std::logic_error("device tree: " + what + " has an interrupt, but no controller");
  }
  std::vector<uint32_t> cells = interrupts_->interrupt_cells(number, trigger, what);
  if (auto [it, fresh] = interrupt_owners_.emplace(number, what); !fresh) {
    throw UserError(fmt::format("{}: {} {} is already used by {}", what, interrupts_->number_name(),
                                number, it->second));
  }
  return cells;
}

void FdtWriter::claim_address(uint64_t base, const std::string& what) {
  if (auto [it, fresh] = address_owners_.emplace(base, what); !fresh) {
    throw UserError(fmt::format("{}: address {:#x} is already used by {}", what, base, it->second));
  }
}

FdtEditor::FdtEditor(std::span<const uint8_t> blob, const std::string& path) : path_(path) {
  // libfdt loads header fields byte-wise, but through a `const fdt_header*` member access,
  // which needs the header's alignment: check an aligned copy of the user's bytes, which may
  // lie anywhere (found by dtb_patch_fuzzer: UBSan "misaligned address").
  const std::vector<uint8_t> copy(blob.begin(), blob.end());
  const void* user = copy.data();
  if (blob.size() < sizeof(fdt_header) || fdt_magic(user) != FDT_MAGIC) {
    throw UserError(fmt::format("{}: not a device tree blob (no FDT magic d00dfeed)", path));
  }
  int err = fdt_check_header(user);
  // Version 16 (2007) names nodes by their leaf name; earlier versions by full path. Debian 12's
  // libfdt 1.6.1 reads a NULL name in fdt_check_full for an old-version root without a '/'
  // (fixed upstream in 1.7.0; found by dtb_patch_fuzzer), and kernels expect 16 or later.
  if (err == 0 && fdt_version(user) < 16)
    throw UserError(fmt::format("{}: device tree version {} is too old (16 or later is needed)",
                                path, fdt_version(user)));
  if (err == 0 && fdt_totalsize(user) > blob.size()) err = -FDT_ERR_TRUNCATED;
  if (err == 0) {
    if (auto at = overlong_property(user))
      throw UserError(fmt::format(
          "{}: invalid device tree: the property at offset {:#x} is longer than its block", path,
          *at));
    err = fdt_check_full(user, blob.size());
  }
  if (err != 0)
    throw UserError(fmt::format("{}: invalid device tree: {}", path, fdt_strerror(err)));
  buf_.resize(fdt_totalsize(user) + 16 * KiB);
  err = fdt_open_into(user, fdt_w(), checked_size(buf_.size()));
  if (err != 0)
    throw UserError(fmt::format("{}: invalid device tree: {}", path, fdt_strerror(err)));
}

void FdtEditor::fail(const std::string& what, int err) const {
  // The tree passed fdt_check_full, so what libfdt still refuses is about its content.
  throw UserError(
      fmt::format("{}: cannot patch the device tree: {}: {}", path_, what, fdt_strerror(err)));
}

template <typename Op>
int FdtEditor::grow_until_done(Op op) {
  for (;;) {
    const int result = op(fdt_w());
    if (result != -FDT_ERR_NOSPACE) return result;
    std::vector<uint8_t> bigger(buf_.size() * 2);
    const int err = fdt_open_into(fdt_w(), bigger.data(), checked_size(bigger.size()));
    if (err != 0) libfdt_failed("growing the tree", err);
    buf_ = std::move(bigger);
  }
}

int FdtEditor::path_offset(const std::string& node_path) const {
  return fdt_path_offset(fdt(), node_path.c_str());
}

std::optional<uint32_t> FdtEditor::u32(int node, const char* name) const {
  int len = 0;
  const auto* cell = static_cast<const fdt32_t*>(fdt_getprop(fdt(), node, name, &len));
  if (cell == nullptr || len != sizeof(fdt32_t)) return std::nullopt;
  return fdt32_to_cpu(*cell);
}

std::optional<std::string_view> FdtEditor::string(int node, const char* name) const {
  int len = 0;
  const auto* text = static_cast<const char*>(fdt_getprop(fdt(), node, name, &len));
  if (text == nullptr || len < 0) return std::nullopt;
  return std::string_view(text, strnlen(text, static_cast<size_t>(len)));
}

std::optional<uint32_t> FdtEditor::enabled_cpus() const {
  const int cpus = path_offset("/cpus");
  if (cpus < 0) return std::nullopt;
  uint32_t listed = 0;
  int child = 0;
  fdt_for_each_subnode(child, fdt(), cpus) {
    if (string(child, "device_type") != "cpu") continue;
    const std::string_view state = string(child, "status").value_or("");
    if (state.empty() || state == "okay" || state == "ok") ++listed;
  }
  return listed;
}

void FdtEditor::set(int node, const FdtProperty& p) {
  const int err = grow_until_done([&](void* fdt) {
    return fdt_setprop(fdt, node, p.name.c_str(), p.value.data(), checked_size(p.value.size()));
  });
  if (err != 0) fail(fmt::format("setting {}", p.name), err);
}

void FdtEditor::replace(int parent, const FdtNode& node) {
  const int existing = fdt_subnode_offset(fdt(), parent, node.name().c_str());
  if (existing >= 0) remove_node(existing);
  add(parent, node);
}

void FdtEditor::add(int parent, const FdtNode& node) {
  const int offset =
      grow_until_done([&](void* fdt) { return fdt_add_subnode(fdt, parent, node.name().c_str()); });
  if (offset < 0) fail(fmt::format("adding node {}", node.name()), offset);
  // libfdt inserts properties and subnodes first in their parent: add them in reverse to keep
  // the described order. The new node's offset stays valid while its own content grows.
  const auto& properties = node.properties();
  for (auto p = properties.rbegin(); p != properties.rend(); ++p) set(offset, *p);
  const auto& children = node.children();
  for (auto child = children.rbegin(); child != children.rend(); ++child) add(offset, *child);
}

void FdtEditor::remove_property(int node, const char* name) {
  const int err = fdt_delprop(fdt_w(), node, name);
  if (err != 0 && err != -FDT_ERR_NOTFOUND) fail(fmt::format("deleting {}", name), err);
}

void FdtEditor::remove_node(int node) {
  const int err = fdt_del_node(fdt_w(), node);
  if (err != 0) fail("deleting a node", err);
}

std::vector<uint8_t> FdtEditor::finish() {
  const int err = fdt_pack(fdt_w());
  if (err != 0) fail("packing the tree", err);
  buf_.resize(fdt_totalsize(fdt()));
  return std::move(buf_);
}

}  // namespace libvmm

namespace libvmm {

std::vector<uint8_t> apply_fdt_overlay(std::span<const uint8_t> base, const std::string& base_what,
                                       std::span<const uint8_t> overlay,
                                       const std::string& overlay_what) {
  // Both are checked (and the base made writable) by FdtEditor; libfdt's overlay code then
  // works on copies, since it damages the overlay and, on failure, the base.
  FdtEditor checked_base(base, base_what);
  FdtEditor checked_overlay(overlay, overlay_what);
  const std::vector<uint8_t> base_copy = checked_base.finish();
  const std::vector<uint8_t> overlay_copy = checked_overlay.finish();
  size_t room = base_copy.size() + overlay_copy.size() + 16 * KiB;
  for (;;) {
    std::vector<uint8_t> out(room);
    std::vector<uint8_t> ovl = overlay_copy;
    int err = fdt_open_into(base_copy.data(), out.data(), checked_size(out.size()));
    if (err == 0) err = fdt_overlay_apply(out.data(), ovl.data());
    if (err == -FDT_ERR_NOSPACE && room < 64 * MiB) {
      room *= 2;
      continue;
    }
    if (err != 0) {
      throw UserError(fmt::format(
          "{}: cannot apply the overlay to {}: {}{}", overlay_what, base_what, fdt_strerror(err),
          err == -FDT_ERR_NOTFOUND || err == -FDT_ERR_BADOVERLAY
              ? " (is it a /plugin/ compiled with dtc -@? a label it refers to (&name) must be in "
                "the base tree's __symbols__; target-path fragments (&{/path}) need none)"
              : ""));
    }
    err = fdt_pack(out.data());
    if (err != 0) libfdt_failed("packing the tree", err);
    const void* packed = out.data();  // libfdt reads the header byte-wise: any alignment
    out.resize(fdt_totalsize(packed));
    return out;
  }
}

}  // namespace libvmm
