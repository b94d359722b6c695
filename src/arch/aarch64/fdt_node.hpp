// A device tree node held in memory while it is being described, and the two ways it gets
// into a flattened tree: serialized as a new blob, or inserted into an existing (user) blob.
// Keeping the description separate from libfdt lets the generated tree and the patched user
// tree share every node.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/arch/aarch64/image.hpp"

namespace libvmm::aarch64 {

struct FdtProperty {
  std::string name;
  std::vector<uint8_t> value;  // big endian cells / NUL-terminated strings, as in the blob
};

class FdtNode {
 public:
  explicit FdtNode(std::string name) : name_(std::move(name)) {}

  FdtNode& empty(std::string name);  // a flag property such as interrupt-controller
  FdtNode& u32(std::string name, uint32_t value) { return cells(std::move(name), {value}); }
  FdtNode& cells(std::string name, std::vector<uint32_t> values);
  FdtNode& u64(std::string name, uint64_t value);
  FdtNode& string(std::string name, std::string_view value) {
    return strings(std::move(name), {value});
  }
  FdtNode& strings(std::string name, std::initializer_list<std::string_view> values);
  // reg with #address-cells = #size-cells = 2.
  FdtNode& reg(std::initializer_list<GpaRange> ranges);
  FdtNode& child(FdtNode node);

  const std::string& name() const { return name_; }
  const std::vector<FdtProperty>& properties() const { return properties_; }
  const std::vector<FdtNode>& children() const { return children_; }

 private:
  std::string name_;
  std::vector<FdtProperty> properties_;
  std::vector<FdtNode> children_;
};

// "name@<hex address>", the unit-address naming convention.
std::string node_name(std::string_view name, uint64_t address);

// Serializes `root` (its name is ignored) into a new, packed blob.
std::vector<uint8_t> serialize_fdt(const FdtNode& root);

// A flattened tree opened read-write, growing as properties and nodes are added.
// Node offsets stay valid across growth, but adding or deleting nodes and properties moves the
// ones after them: look nodes up again (by path) after a change.
class FdtEditor {
 public:
  // Copies and validates `blob`; throws UserError "PATH: reason" if it is not a valid tree.
  // Every later libfdt failure is a UserError naming PATH too: it comes from the user's tree.
  FdtEditor(std::span<const uint8_t> blob, const std::string& path);

  const void* fdt() const { return buf_.data(); }
  int path_offset(const std::string& node_path) const;  // negative if absent

  // Adds `node` with its properties and children under `parent`, in their order.
  void add(int parent, const FdtNode& node);
  // Like add, but first removes a subnode of `parent` with the same name.
  void replace(int parent, const FdtNode& node);
  void set(int node, const FdtProperty& property);
  void remove_property(int node, const char* name);  // absent is fine
  void remove_node(int node);

  // The packed blob.
  std::vector<uint8_t> finish();

 private:
  template <typename Op>
  int grow_until_done(Op op);
  void* fdt_w() { return buf_.data(); }
  [[noreturn]] void fail(const std::string& what, int err) const;
  std::vector<uint8_t> buf_;
  std::string path_;
};

}  // namespace libvmm::aarch64
