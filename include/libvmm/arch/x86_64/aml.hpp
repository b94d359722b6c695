// An ACPI Machine Language (AML) writer: the byte encodings of ACPI 6.5 chapter 20 ("ACPI Machine
// Language Specification") and of the resource descriptors of section 6.4, for building the DSDT
// (and any other definition block) from nodes.
//
// Every function returns the encoded bytes of one term; terms nest by passing their bytes to
// the enclosing term (a Device's body is a list of terms):
//
//   using namespace libvmm::x86::aml;
//   Bytes dev = device("VR00", {name("_HID", string("LNRO0005")),
//                               name("_UID", integer(0)),
//                               name("_CRS", resource_template({
//                                   memory32_fixed(0xd0000000, 0x200, true),
//                                   extended_interrupt({5}, {.edge = true})}))});
//   Bytes dsdt_body = scope("\\_SB_", {dev});
//
// Names are written as ASL writes them: "_HID", "PCI0", a path "\\_SB_.PCI0" ('\\' for the
// root, '^' for each parent); segments shorter than four characters are padded with '_'.
// Invalid input (a bad name character, a value that does not fit its field, more than 255
// package elements) is a programming error in libvmm and throws std::invalid_argument.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace libvmm::x86::aml {

using Bytes = std::vector<uint8_t>;

// --- Encodings ----------------------------------------------------------------------------

// PkgLength (§20.2.4) for a package whose contents after the PkgLength are `body_length`
// bytes: the encoded length counts itself, in 1 to 4 bytes. Up to 2^28 - 1 bytes in all.
Bytes pkg_length(size_t body_length);
// NameString (§20.2.2): "" is the NullName; "\\" alone is the root.
Bytes name_string(std::string_view path);

// --- Data objects -------------------------------------------------------------------------

// The shortest encoding: ZeroOp, OneOp, then Byte/Word/DWord/QWord constants.
Bytes integer(uint64_t value);
// A DWordConst whatever the value (as iasl writes EISAID and 32-bit fields).
Bytes dword(uint32_t value);
// A String (ASCII 0x01..0x7F).
Bytes string(std::string_view text);
// EISAID("PNP0A08"): three upper-case letters and four hex digits, compressed to a DWordConst.
Bytes eisa_id(std::string_view id);
uint32_t eisa_id_value(std::string_view id);
// Buffer { bytes }.
Bytes buffer(const Bytes& contents);
// ToUUID("33DB4D5B-1FF7-401C-9657-7441C03DD766"): the 16-byte buffer (first three fields
// little-endian, as ASL's ToUUID).
Bytes uuid(std::string_view text);
// Package { elements }: each element an encoded data object or name_string(); at most 255.
Bytes package(const std::vector<Bytes>& elements);

// --- Named objects and scopes ----------------------------------------------------------------

// Name (NAME, value).
Bytes name(std::string_view name, const Bytes& value);
// Scope (PATH) { terms }.
Bytes scope(std::string_view path, const std::vector<Bytes>& terms);
// Device (NAME) { terms }.
Bytes device(std::string_view name, const std::vector<Bytes>& terms);
// Method (NAME, arg_count, Serialized|NotSerialized) { terms }.
Bytes method(std::string_view name, uint8_t arg_count, bool serialized,
             const std::vector<Bytes>& terms);

// --- Statements and expressions (enough for _STA, _OSC-style methods and event handlers) ----

Bytes return_value(const Bytes& value);                                  // Return (value)
Bytes notify(std::string_view object, const Bytes& value);               // Notify (OBJECT, value)
Bytes local(uint8_t n);                                                  // Local0..Local7
Bytes arg(uint8_t n);                                                    // Arg0..Arg6
Bytes store(const Bytes& source, const Bytes& target);                   // Store (source, target)
Bytes if_then(const Bytes& predicate, const std::vector<Bytes>& terms);  // If (p) { terms }
Bytes else_then(const std::vector<Bytes>& terms);                        // Else { terms }
Bytes l_equal(const Bytes& a, const Bytes& b);                           // LEqual (a, b)
Bytes l_not(const Bytes& a);                                             // LNot (a)
Bytes and_op(const Bytes& a, const Bytes& b, const Bytes& target = {});  // And (a, b, target)
Bytes or_op(const Bytes& a, const Bytes& b, const Bytes& target = {});   // Or (a, b, target)
// CreateDWordField (source buffer, byte index, NAME).
Bytes create_dword_field(const Bytes& source, const Bytes& byte_index, std::string_view name);

// --- Resource templates (§6.4) ----------------------------------------------------------------

// ResourceTemplate () { descriptors }: a Buffer of the descriptors and an End Tag.
Bytes resource_template(const std::vector<Bytes>& descriptors);

// IO (Decode16, min, max, alignment, length): an I/O port range descriptor.
Bytes io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);
// Memory32Fixed (ReadWrite|ReadOnly, base, length).
Bytes memory32_fixed(uint32_t base, uint32_t length, bool read_write = true);

struct InterruptFlags {
  bool consumer = true;     // ResourceConsumer (a device's own interrupt)
  bool edge = false;        // Edge, else Level
  bool active_low = false;  // ActiveLow, else ActiveHigh
  bool shared = false;      // Shared, else Exclusive
  bool wake_capable = false;
};
// Interrupt (consumer, Level|Edge, ActiveHigh|ActiveLow, Exclusive|Shared) { numbers }.
Bytes extended_interrupt(const std::vector<uint32_t>& interrupts, InterruptFlags flags);

// The address space descriptors (WordSpace, DWordSpace, QWordSpace and their Memory, IO and
// BusNumber forms).
enum class AddressSpaceType : uint8_t { memory = 0, io = 1, bus_number = 2 };
enum class Cacheability : uint8_t {
  non_cacheable = 0,
  cacheable = 1,
  write_combining = 2,
  prefetchable = 3
};
struct AddressSpace {
  AddressSpaceType type = AddressSpaceType::memory;
  bool producer = true;      // ResourceProducer (a bridge's window), else ResourceConsumer
  bool min_fixed = true;     // MinFixed
  bool max_fixed = true;     // MaxFixed
  bool subtractive = false;  // SubDecode, else PosDecode
  uint8_t type_flags = 0;    // the type-specific flags byte (memory_flags(), io_flags())
  uint64_t granularity = 0;
  uint64_t min = 0;
  uint64_t max = 0;
  uint64_t translation = 0;
  uint64_t length = 0;
};
uint8_t memory_flags(bool read_write, Cacheability cacheability);
uint8_t io_flags();  // EntireRange, TypeStatic
// Encoded with 16-, 32- or 64-bit fields; a value that does not fit throws.
Bytes word_address(const AddressSpace& space);
Bytes dword_address(const AddressSpace& space);
Bytes qword_address(const AddressSpace& space);

// The common forms of a host bridge's windows (producer, MinFixed, MaxFixed, PosDecode,
// length = max - min + 1):
// WordBusNumber (..., 0, min, max, 0, length)
Bytes word_bus_number(uint16_t min, uint16_t max);
// WordIO (..., EntireRange, 0, min, max, 0, length)
Bytes word_io(uint16_t min, uint16_t max);
// DWordMemory (..., Cacheable|Prefetchable, ReadWrite, 0, min, max, 0, length)
Bytes dword_memory(uint32_t min, uint32_t max, Cacheability cacheability);
// QWordMemory (..., Cacheable|Prefetchable, ReadWrite, 0, min, max, 0, length)
Bytes qword_memory(uint64_t min, uint64_t max, Cacheability cacheability);

}  // namespace libvmm::x86::aml
