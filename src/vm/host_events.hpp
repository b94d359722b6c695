// A host program's event source for a guest interrupt (`<irq fifo=...>` or `socket=...` in a
// .system file): what it wrote since the last wake-up is taken, and the line pulses once.
// Internal to the library.
#pragma once

namespace libvmm {

// Reads of one wake-up, 4 KiB each, at most: a writer that never stops (`yes > doorbell`) must
// not hold the event loop, whose fd is level-triggered and brings it back after the rest.
inline constexpr int kHostEventReadsPerWakeup = 16;

// Reads and discards what non-blocking `fd` holds, up to kHostEventReadsPerWakeup reads.
// Whether anything was read (the writer raised the interrupt).
bool take_host_events(int fd);

}  // namespace libvmm
