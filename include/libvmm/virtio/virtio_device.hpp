// What a virtIO device type (console, block, net, ...) implements, and what it gets back from
// the transport that connects it to the guest's driver.
//
// Threads and locking: the transport holds one lock per device. Every call into the device
// (config access, activate, queue_notify, reset) is made with that lock held, from a vCPU
// thread (register access, QueueNotify exits) or the event loop thread (a notify ioeventfd),
// so a device never sees two of them at once. Queues are only touched under that lock:
// inside queue_notify(), or, from any other thread (host input arriving on the event loop,
// a backend's completion), inside VirtioTransport::with_queues().
//
// A device may do its host I/O on its own thread (core/io_thread.hpp): queue_notify() then only
// wakes that thread, which takes chains and returns them inside with_queues() and does the I/O
// between, without the lock. Before the transport changes what such a thread depends on (a
// Status write, which may reset the device or activate it; QueueReady, which may take a queue
// down; its own destruction), it calls pause_io() without its lock, then makes the change under
// the lock, then resume_io(): the device's thread is never mid-round across a reset. Such a
// thread may also wait on a queue's notify eventfd itself (watch_queue_notify()).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "libvmm/virtio/virtqueue.hpp"

namespace libvmm {

// The mask of feature bit `n` (virtIO 1.2 §6: VIRTIO_F_*, and each device type's bits).
constexpr uint64_t feature_bit(unsigned n) {
  return 1ull << n;
}

// A device-type feature a driver may accept only together with at least one of `needs_any`
// (virtIO 1.2 lists these per device type, e.g. §5.1.3.1: "VIRTIO_NET_F_MQ Requires
// VIRTIO_NET_F_CTRL_VQ").
struct FeatureRequirement {
  unsigned feature;
  uint64_t needs_any;  // feature_bit()s
};

class VirtioTransport {
 public:
  // Lock held (queue_notify or with_queues): after push()ing to queue `index`, raises a
  // used-buffer interrupt unless the driver asked not to have one.
  virtual void signal_used(uint16_t index) = 0;
  // Any thread: the device changed its config space (or needs the driver's attention).
  virtual void signal_config_change() = 0;
  // Any thread except from inside a call into the device (the lock is not recursive): runs
  // `fn` with the lock held if the device is live (DRIVER_OK, no reset pending), and returns
  // whether it ran.
  virtual bool with_queues(const std::function<void(std::span<Virtqueue>)>& fn) = 0;
  // Lock held: asks for queue_notify(index) to be called again soon, after other pending host
  // work, so a device can stop draining a busy queue and stay fair to the rest. False when
  // the transport cannot arrange that; the device then goes on draining.
  virtual bool renotify(uint16_t index) {
    static_cast<void>(index);
    return false;
  }
  // Any thread except from inside a call into the device: the device cannot go on (the
  // process serving its queues went away); sets DEVICE_NEEDS_RESET and logs `why`.
  virtual void device_failed(const std::string& why) { static_cast<void>(why); }

 protected:
  ~VirtioTransport() = default;  // not owned through this interface
};

class VirtioDevice;

// A device whose queues something else serves (vhost-user, vhost-net): the driver's
// notifications go from KVM's ioeventfd straight to the server, and its interrupts straight
// into a KVM irqfd (virtio-mmio: the device's line; virtio-pci: the queue's MSI-X vector's, or a
// relay through the event loop where there is none). The transport never pops these queues; it
// hands their layout over at DRIVER_OK.
struct QueueEventfds {
  int kick = -1;  // KVM signals it when the driver notifies the queue (an ioeventfd)
  int call = -1;  // signalling it raises the device's interrupt (a KVM irqfd)
};
class ExternalQueues {
 public:
  // Before the guest runs: one pair per queue, owned by the machine for the VM's lifetime.
  virtual void set_queue_eventfds(std::vector<QueueEventfds> fds) = 0;
  // The feature bits the server of the queues has; of the transport features a transport
  // offers (VERSION_1, RING_INDIRECT_DESC, RING_EVENT_IDX: offered_features()), only those.
  virtual uint64_t transport_features() const = 0;
  // Lock held, at DRIVER_OK in place of activate(): hands the ready queues to their server.
  // False with `why` when that failed; the transport then sets DEVICE_NEEDS_RESET.
  virtual bool start_queues(VirtioTransport& transport, uint64_t features,
                            std::span<const Virtqueue> queues, std::string& why) = 0;

 protected:
  ~ExternalQueues() = default;
};

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  virtual std::string name() const = 0;    // for log lines: "virtio-blk", "virtio-console"
  virtual uint32_t device_id() const = 0;  // VIRTIO_ID_* from <linux/virtio_ids.h>
  // Device-type feature bits. The transport owns the reserved range (bits 28..40): it clears
  // it and offers VERSION_1, RING_INDIRECT_DESC and RING_EVENT_IDX itself.
  virtual uint64_t device_features() const = 0;
  // What its feature bits require of each other: a transport offers a feature only with one of
  // those it needs, and refuses FEATURES_OK to a driver that accepted it without them, so the
  // device never runs with a set its type's specification rules out.
  virtual std::span<const FeatureRequirement> feature_requirements() const { return {}; }
  // One entry per queue: its QueueNumMax (a power of two, at most Virtqueue::kMaxSize).
  // Chains are limited to the queue size (spec §2.7.5), indirect or not: size the queues
  // for the longest request the device advertises (e.g. virtio-blk's seg_max + 2).
  virtual std::vector<uint16_t> queue_max_sizes() const = 0;

  // Device-specific configuration space (at most 256 bytes on MMIO). The transport has
  // checked that [offset, offset + data.size()) lies within config_size().
  virtual uint32_t config_size() const = 0;
  virtual void read_config(uint32_t offset, std::span<uint8_t> data) = 0;
  virtual void write_config(uint32_t offset, std::span<const uint8_t> data) {
    static_cast<void>(offset);
    static_cast<void>(data);
  }

  // Any thread but the device's own: looks at what backs the device again (a disk image's
  // size, which the host may have changed) and updates the config space to match. True when
  // it changed; the caller then tells the driver (VirtioTransport::signal_config_change()).
  virtual bool rescan() { return false; }

  // The driver set DRIVER_OK. `features` is what it accepted. The device keeps `transport`
  // until reset() and may start host I/O that later feeds queues through with_queues().
  virtual void activate(VirtioTransport& transport, uint64_t features) = 0;
  // The driver notified queue `index` (which is ready) of new buffers.
  virtual void queue_notify(uint16_t index, Virtqueue& queue) = 0;
  // The driver reset the device, or never activated it: drop the transport and every chain in
  // flight (the queues are reset right after, so late push()es are refused).
  virtual void reset() = 0;
  // The driver took queue `index` down (QueueReady = 0) while the device runs: forget every
  // chain of that queue the device holds, since its head indices mean nothing in the ring the
  // driver sets up next. The queue is reset right after.
  virtual void queue_reset(uint16_t index) { static_cast<void>(index); }
  // Transport lock held. Gives back every chain of queue `index` the device holds (taken, not
  // yet returned: sound waiting to play, console output waiting for room, receive buffers
  // collected for a frame), completed as far as it got, and signals the driver. A vhost-user
  // back-end calls it when the front-end stops the ring (GET_VRING_BASE: QEMU's stop, a
  // migration): the base it answers is past every chain taken, so one held then dropped would
  // never come back to the driver.
  virtual void return_held(uint16_t index, Virtqueue& queue) {
    static_cast<void>(index);
    static_cast<void>(queue);
  }
  // Transport lock held. Only a transport whose front-end enables queues one by one calls it
  // (a vhost-user back-end: SET_VRING_ENABLE, from a front-end that serves a network device's
  // control queue itself): queue `index` is served from now on, or no longer (before
  // queue_reset()). A network device takes the pairs it uses from it.
  virtual void queue_enabled(uint16_t index, bool enabled) {
    static_cast<void>(index);
    static_cast<void>(enabled);
  }

  // Called without the transport's lock (see above): a device with its own I/O thread waits
  // for the round in flight to end (its chains returned to the driver, or dropped if the
  // device was reset meanwhile) and starts no new round until the matching resume_io().
  // Calls nest. A transport going away pauses without resuming.
  virtual void pause_io() {}
  virtual void resume_io() {}

  // Before the guest runs, for each queue whose notifications the machine routes to an eventfd
  // (a KVM ioeventfd): a device with its own I/O thread may wait on it there (it keeps a dup of
  // `eventfd`), so a notification wakes that thread straight from KVM. True if it does; the
  // machine then leaves the eventfd off the event loop. The thread serves the queue only while
  // the transport is live (with_queues()), as it would after queue_notify().
  virtual bool watch_queue_notify(uint16_t index, int eventfd) {
    static_cast<void>(index);
    static_cast<void>(eventfd);
    return false;
  }

  // Non-null for a device whose queues another process serves (see ExternalQueues).
  virtual ExternalQueues* external_queues() { return nullptr; }
};

}  // namespace libvmm
