// Flattened device trees (devicetree.org), architecture-neutral: AArch64 boots with one, RISC-V
// will. A tree is described in memory (FdtNode) and then written as a new blob or inserted into
// a user's blob (FdtEditor); libfdt does the bytes. The pieces of a machine describe themselves
// into an FdtWriter (FdtNodeSource): the interrupt controller its node, the UART its node, each
// virtio-mmio transport its node; the machine adds memory, cpus and /chosen.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace libvmm {

struct FdtProperty {
  std::string name;
  std::vector<uint8_t> value;  // big endian cells / NUL-terminated strings, as in the blob
};

// One `reg` entry.
struct FdtReg {
  uint64_t address = 0;
  uint64_t size = 0;
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
  FdtNode& reg(std::initializer_list<FdtReg> ranges);
  FdtNode& child(FdtNode node);

  const std::string& name() const { return name_; }
  const std::vector<FdtProperty>& properties() const { return properties_; }
  const std::vector<FdtNode>& children() const { return children_; }
  // The child called `name`, or null.
  FdtNode* find_child(std::string_view name);

 private:
  std::string name_;
  std::vector<FdtProperty> properties_;
  std::vector<FdtNode> children_;
};

// "name@<hex address>", the unit-address naming convention.
std::string node_name(std::string_view name, uint64_t address);

// Serializes `root` (its name is ignored) into a new, packed blob.
std::vector<uint8_t> serialize_fdt(const FdtNode& root);

// How a device's interrupt triggers, for its `interrupts` specifier.
enum class FdtTrigger : uint8_t { edge_rising, level_high };

// The interrupt controller's binding: how a device node names one of its interrupts.
class FdtInterruptBinding {
 public:
  virtual ~FdtInterruptBinding() = default;
  // The `interrupts` cells for interrupt `number` (numbered as the VM numbers it: AArch64 GIC
  // INTIDs). Throws UserError naming `what` when a device cannot have that interrupt.
  virtual std::vector<uint32_t> interrupt_cells(uint32_t number, FdtTrigger trigger,
                                                std::string_view what) const = 0;
  // What the controller's numbers are called in messages ("INTID").
  virtual std::string_view number_name() const { return "interrupt"; }
  // The controller's phandle label (FdtWriter::phandle) and its #address-cells: what an
  // interrupt-map entry (a PCI host bridge's) names as its parent. Empty: no interrupt-map can
  // point at it.
  virtual std::string_view phandle_label() const { return {}; }
  virtual uint32_t address_cells() const { return 0; }
};

// A device tree being described: the root node, the phandles nodes refer to each other by, and
// the interrupts and addresses devices claimed (two devices on one interrupt or address is a
// mistake in the description, refused with a UserError naming both).
class FdtWriter {
 public:
  // `interrupts` (may be null when no device has an interrupt) must outlive the writer.
  explicit FdtWriter(const FdtInterruptBinding* interrupts) : interrupts_(interrupts) {}

  FdtNode& root() { return root_; }
  const FdtNode& root() const { return root_; }
  // The root's child `name` ("chosen"), added last under the root if absent.
  FdtNode& node(std::string_view name);
  // Adds `node` last under the root.
  void add(FdtNode node) { root_.child(std::move(node)); }
  // The phandle called `label`, allocated (1, 2, ...) on first use.
  uint32_t phandle(std::string_view label);
  // The `interrupts` cells for a device's interrupt `number`, claimed for `what`.
  std::vector<uint32_t> interrupts(uint32_t number, FdtTrigger trigger, const std::string& what);
  // The parent half of an interrupt-map entry for interrupt `number`: the controller's phandle,
  // its unit address (zeros) and the specifier; claimed for `what` like interrupts().
  std::vector<uint32_t> interrupt_map_parent(uint32_t number, FdtTrigger trigger,
                                             const std::string& what);
  // Claims the MMIO address `base` for `what`.
  void claim_address(uint64_t base, const std::string& what);

  std::vector<uint8_t> blob() const { return serialize_fdt(root_); }

 private:
  const FdtInterruptBinding* interrupts_;
  FdtNode root_{""};
  std::map<std::string, uint32_t, std::less<>> phandles_;
  std::map<uint32_t, std::string> interrupt_owners_;
  std::map<uint64_t, std::string> address_owners_;
};

// A piece of a machine that describes itself in the device tree (a device, its transport, the
// interrupt controller).
class FdtNodeSource {
 public:
  virtual ~FdtNodeSource() = default;
  virtual void describe_fdt(FdtWriter& fdt) const = 0;
};

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
  // A property of `node` read as one 32-bit cell, or as a string (up to its first NUL);
  // nullopt when it is absent (or, for u32, not 4 bytes long).
  std::optional<uint32_t> u32(int node, const char* name) const;
  std::optional<std::string_view> string(int node, const char* name) const;
  // The CPUs under /cpus (device_type "cpu") a guest brings up: status absent, "okay" or "ok"
  // (a "disabled" or "fail" CPU is not one). nullopt without /cpus.
  std::optional<uint32_t> enabled_cpus() const;

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

// Applies the device-tree overlay `overlay` (dtc -@ of a /plugin/ source) to `base` with
// libfdt's fdt_overlay_apply and returns the packed result. Throws UserError naming
// `overlay_what` when the overlay is not a valid tree or does not apply to `base_what`.
std::vector<uint8_t> apply_fdt_overlay(std::span<const uint8_t> base, const std::string& base_what,
                                       std::span<const uint8_t> overlay,
                                       const std::string& overlay_what);

}  // namespace libvmm
