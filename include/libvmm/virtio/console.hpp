// The virtIO console (virtIO 1.2 §5.3). Port 0 is the console (Linux: hvc0). Named ports are
// channels for programs rather than people (a guest agent's, a log's): with any, the device
// offers VIRTIO_CONSOLE_F_MULTIPORT and its control queues, and Linux makes each a character
// device, /dev/virtio-ports/NAME. Without them it has two queues and no MULTIPORT, as before.
// Each port has its own CharBackend: guest output from the port's transmitq goes to it; host
// input from it fills the port's receiveq buffers.
//
// Queues: port 0's receiveq and transmitq (0, 1), the control receiveq and transmitq (2, 3),
// then port N's pair at 2N + 2 and 2N + 3. The control protocol (§5.3.6.2): the driver says
// DEVICE_READY, the device adds every port (PORT_ADD), the driver answers PORT_READY for each,
// and the device then names it (PORT_NAME; port 0: CONSOLE_PORT) and says whether its host end
// is open (PORT_OPEN): a socket backend's is while a client is connected, and PORT_OPEN follows
// the client coming and going (CharBackend::connected()); other backends' are always open.
// Linux holds a program's writes to a port whose host end is closed, and gives its reads an end
// of file, so nothing the guest writes there is lost for want of a client.
//
// The console's size (VIRTIO_CONSOLE_F_SIZE) is offered when port 0's backend is on a terminal
// (CharBackend::terminal_size()): the guest's hvc0 gets its columns and rows, at DRIVER_OK and
// whenever the backend says the terminal was resized. Without MULTIPORT the size is in the
// config space and a config interrupt tells the driver; with it, a RESIZE control message for
// port 0 does (cols, then rows, as the spec and Linux since its 2025 fix read it).
//
// Guest output waits for the backend instead of a host thread waiting for it: a transmitq chain
// the backend takes only part of (its output queue is full: nobody reads) is kept, and no
// further chain is taken, until the backend's output listener says it has room again. The
// driver meanwhile waits for its buffers to come back, which is the flow control the guest
// knows. Nothing is lost and nothing is queued beyond the backend's limit. emerg_wr output that
// finds no room is dropped.
//
// Host input that finds no receive buffer waits in a bounded pending buffer, and the backend is
// paused while that buffer is full (as Uart16550 does); it is resumed once the driver adds
// buffers and the bytes have moved into them. Pending input belongs to the host, not to the
// device: a device reset keeps it for the next driver, like bytes typed before the driver loaded.
//
// Threads and locking (see virtio_device.hpp): the transport serializes the VirtioDevice calls;
// receive() runs on the event loop thread and reaches the queues through
// VirtioTransport::with_queues(). The console's own mutex is taken inside the transport's lock,
// never around it, and never around a backend call.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/core/log.hpp"
#include "libvmm/virtio/virtio_device.hpp"

namespace libvmm {

class EventLoop;
class InputFlowControl;

class VirtioConsole final : public VirtioDevice {
 public:
  // A port besides the console, found by the guest under its name.
  struct NamedPort {
    std::string name;
    std::shared_ptr<CharBackend> backend;
  };

  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kReceiveQueue = 0;          // receiveq, port 0: device to driver
  static constexpr uint16_t kTransmitQueue = 1;         // transmitq, port 0: driver to device
  static constexpr uint16_t kControlReceiveQueue = 2;   // MULTIPORT: device to driver
  static constexpr uint16_t kControlTransmitQueue = 3;  // MULTIPORT: driver to device
  static constexpr size_t kMaxNamedPorts = 8;
  static constexpr size_t kMaxPortName = 64;
  static constexpr uint32_t kTransmitPerNotify = 256;  // chains per notification, when it can yield
  // Bytes per notification, when it can yield: a chain may hold 4 GiB, a file backend takes
  // all of it in one write, and the quit key waits on the same loop.
  static constexpr size_t kTransmitBytesPerNotify = 1024 * 1024;
  // Receive buffers taken per pass, when the queue can be renotified: only buffers the device
  // cannot use leave host input waiting, and a guest refilling those must not hold the loop.
  static constexpr uint32_t kReceivePerPass = 128;
  static constexpr size_t kDefaultPendingLimit = 4096;
  // How far past the limit pending input may grow: the backend's read that reached the limit.
  static constexpr size_t kMaxBackendRead = 64 * 1024;

  // Input pauses once `pending_limit` bytes wait, and resumes when fewer than half of them do.
  // At most pending_limit + kMaxBackendRead bytes are kept: input beyond that (from a backend
  // that ignores pause_input()) is dropped with a warning, never queued without bound.
  // `ports` are ports 1, 2, ... in this order; at most kMaxNamedPorts, each name valid
  // (port_name_problem()) and unique (std::invalid_argument otherwise: callers check first).
  explicit VirtioConsole(std::shared_ptr<CharBackend> backend,
                         size_t pending_limit = kDefaultPendingLimit,
                         std::vector<NamedPort> ports = {});
  ~VirtioConsole() override;
  VirtioConsole(const VirtioConsole&) = delete;
  VirtioConsole& operator=(const VirtioConsole&) = delete;

  // Why `name` cannot name a port ("" when it can): 1 to kMaxPortName printable ASCII
  // characters, none of them a space, '/', ',' or '='.
  static std::string port_name_problem(std::string_view name);
  static uint16_t receive_queue(uint32_t port) { return port == 0 ? 0 : 2 * port + 2; }
  static uint16_t transmit_queue(uint32_t port) { return receive_queue(port) + 1; }
  // Ports, the console (port 0) included: the config space's max_nr_ports.
  uint32_t port_count() const { return static_cast<uint32_t>(ports_.size()); }

  // Starts host input: every port's backend delivers it to receive() on `loop`'s thread, and flow
  // control decided elsewhere is posted there. Without start() (tests), those calls are direct.
  // The backend and loop must stop delivering before this console is destroyed.
  void start(EventLoop& loop);

  // Host input for a port (its backend's sink). Must not be called from inside a call into the
  // device, nor from the backend's pause_input()/resume_input().
  void receive(std::span<const uint8_t> bytes) { receive(0, bytes); }
  void receive(uint32_t port, std::span<const uint8_t> bytes);

  // Host input waiting for receive buffers, and input dropped because a backend ignored pause.
  size_t pending_bytes(uint32_t port = 0) const;
  uint64_t dropped_bytes(uint32_t port = 0) const;

  // VirtioDevice.
  std::string name() const override { return "virtio-console"; }
  uint32_t device_id() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override;
  uint32_t config_size() const override;
  void read_config(uint32_t offset, std::span<uint8_t> data) override;
  // Writing emerg_wr outputs its first byte; it works at any time, even before the driver
  // negotiated features (spec §5.3.4). The rest of the config space is read-only.
  void write_config(uint32_t offset, std::span<const uint8_t> data) override;
  void activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index, Virtqueue& queue) override;
  void reset() override;
  void queue_reset(uint16_t index) override;
  void return_held(uint16_t index, Virtqueue& queue) override;

 private:
  // A transmitq chain the backend has not taken all of, and how far it got. Kept as guest
  // addresses, its host buffers found again at each try: a vhost-user front-end may replace
  // the memory table (same layout, new mappings) while it waits.
  struct HeldChain {
    DescriptorChain chain;
    size_t index = 0;   // the buffer being written
    size_t offset = 0;  // bytes of it already taken
  };

  struct Port {
    std::string name;  // "" for port 0, the console
    std::shared_ptr<CharBackend> backend;
    // Pauses the backend while `pending` is full; shared with the tasks posted to the loop.
    std::shared_ptr<InputFlowControl> input_flow;
    // Under mutex_.
    std::vector<uint8_t> pending;  // host input not yet in a guest buffer
    uint64_t dropped = 0;
    bool overflow_warned = false;
    // Transport lock only (queue_notify, with_queues, reset, queue_reset).
    std::optional<HeldChain> tx_held;
    // The backend's connected(), read outside every lock (on the loop thread, where it changes).
    std::atomic<bool> host_connected{true};
    // Under mutex_ (MULTIPORT): the driver added the port (port 0: it is the guest's console
    // now), and what PORT_OPEN last told it.
    bool added = false;  // PORT_ADD sent to this driver
    bool ready = false;
    bool told_open = false;
    // Under mutex_ (MULTIPORT, ports past 0): a program in the guest has the port open (its
    // PORT_OPEN). Until then host input waits: Linux discards what reaches a port nobody in
    // the guest has open.
    bool guest_open = false;
  };

  // The port whose receiveq or transmitq `queue` is; nullopt for the control queues.
  std::optional<uint32_t> port_of_queue(uint16_t queue) const;
  std::string port_label(uint32_t port) const;   // "virtio-console port NAME", for log lines
  std::string port_prefix(uint32_t port) const;  // "port NAME: " ("" for port 0), for guest_error
  void transmit(uint32_t port, Virtqueue& queue);
  // Transport lock held: offers `iov` from buffer `index`, byte `offset` on to the port's
  // backend, at most `budget` bytes, and advances the three by what it took.
  enum class Written { all, no_room, budget_spent };
  Written write_buffers(Port& port, const std::vector<iovec>& iov, size_t& index, size_t& offset,
                        size_t& budget);
  // transmit()'s budget ran out: true if the queue was renotified (transmit comes back later);
  // else the budget starts again.
  bool yield_transmit(uint16_t index, size_t& budget);
  // A port's backend has room again (its output listener, on the loop thread).
  void on_output_room(uint32_t port);
  // Under mutex_ and the transport's lock: moves a port's pending input into receive buffers.
  void fill_receive_buffers(uint32_t port, Virtqueue& queue);
  // Under mutex_: pauses a port's input at the limit, resumes it below half (the desired
  // state, not yet the backend's). True if that changed.
  bool update_input_pause(Port& port);

  // MULTIPORT. Transport lock held: the driver's control messages.
  void take_control_messages(Virtqueue& queue);
  // Under mutex_: what one message from the driver asks for.
  void handle_control(uint32_t id, uint16_t event, uint16_t value);
  // Under mutex_: a message for the driver, sent once it gives a control receive buffer.
  void queue_control(uint32_t id, uint16_t event, uint16_t value, std::string_view text = {});
  // Under mutex_ and the transport's lock: queued control messages into the driver's buffers.
  void send_control_messages(Virtqueue& queue);
  // Outside every lock: the queued messages go out now, through the loop (queue_notify()
  // cannot reach the control receiveq itself).
  void post_control_messages();

  // A port's backend says its host end opened or closed (on the loop thread).
  void on_connection(uint32_t port);
  // Under mutex_: the message for `id` of `event` still waiting for a control buffer, if any.
  std::vector<uint8_t>* waiting_control(uint32_t id, uint16_t event);
  // Under mutex_: PORT_OPEN for a port, replacing one still waiting for a buffer.
  void queue_port_open(uint32_t port, bool open);
  // Port 0's backend says its terminal may have a new size (on the loop thread).
  void on_resize();
  // Under mutex_: a RESIZE control message for port 0 with size_.
  void queue_resize();

  // A rate-limited warning about something the guest's driver did wrong.
  void guest_error(const std::string& message);

  const size_t pending_limit_;
  std::vector<std::unique_ptr<Port>> ports_;  // fixed after construction

  mutable std::mutex mutex_;
  EventLoop* loop_ = nullptr;
  VirtioTransport* transport_ = nullptr;  // between activate() and reset()
  bool multiport_ = false;                // the driver took MULTIPORT (activate() to reset())
  bool size_offered_ = false;       // port 0 is on a terminal: F_SIZE (fixed after construction)
  CharBackend::TerminalSize size_;  // the terminal's, as the guest is told it
  bool size_taken_ = false;         // the driver took F_SIZE (activate() to reset())
  std::deque<std::vector<uint8_t>> control_out_;

  log::RateLimited guest_errors_{"guest errors", 32};
  log::RateLimited port_events_{"ports opened and closed in the guest"};
};

// The console a `--console` value asks for ("stdio,port1=agent=socket:/run/a.sock"), checked
// and with every backend opened (a stdio one's Ctrl-A x runs `on_quit`); errors name `flag`.
// Throws UserError for what the value or the host refuses.
std::unique_ptr<VirtioConsole> open_console(std::string_view value, std::string_view flag,
                                            std::function<void()> on_quit);

}  // namespace libvmm
