#include "libvmm/virtio/console.hpp"

#include <endian.h>
#include <fmt/format.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <set>
#include <stdexcept>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/backends/input_flow_control.hpp"
#include "libvmm/core/event_loop.hpp"
#include "libvmm/core/log.hpp"

namespace libvmm {
namespace {

constexpr uint32_t kConfigSize = sizeof(virtio_console_config);
constexpr uint32_t kEmergWrOffset = offsetof(virtio_console_config, emerg_wr);
constexpr uint64_t kMultiport = 1ull << VIRTIO_CONSOLE_F_MULTIPORT;
constexpr uint64_t kSize = 1ull << VIRTIO_CONSOLE_F_SIZE;
// Control messages waiting for the driver's buffers, at most: what one DEVICE_READY and a
// PORT_READY per port ask for (three per port), with room for a driver that repeats itself.
// A driver that asks for more than that loses the excess, not the host's memory.
constexpr size_t kControlBacklogPerPort = 6;
constexpr uint32_t kControlPerNotify = 256;  // driver messages per notification, as transmitq

static_assert(kConfigSize == 12 && kEmergWrOffset == 8, "virtIO 1.2 §5.3.4 layout");

void put_le(std::array<uint8_t, kConfigSize>& bytes, size_t offset, uint32_t value, size_t size) {
  for (size_t i = 0; i < size; ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

}  // namespace

VirtioConsole::VirtioConsole(std::shared_ptr<CharBackend> backend, size_t pending_limit,
                             std::vector<NamedPort> ports)
    : pending_limit_(std::max<size_t>(pending_limit, 1)) {
  if (ports.size() > kMaxNamedPorts) {
    throw std::invalid_argument(
        fmt::format("{} named ports; at most {}", ports.size(), kMaxNamedPorts));
  }
  std::set<std::string, std::less<>> names;
  for (const NamedPort& port : ports) {
    if (std::string why = port_name_problem(port.name); !why.empty()) {
      throw std::invalid_argument(why);
    }
    if (!names.insert(port.name).second) {
      throw std::invalid_argument(fmt::format("port name '{}' given twice", port.name));
    }
  }
  ports.insert(ports.begin(), NamedPort{"", std::move(backend)});
  for (uint32_t i = 0; i < ports.size(); ++i) {
    auto port = std::make_unique<Port>();
    port->name = std::move(ports[i].name);
    port->backend = std::move(ports[i].backend);
    port->input_flow = InputFlowControl::create(port->backend, pending_limit_);
    port->backend->set_output_listener([this, i] { on_output_room(i); });
    port->backend->set_connection_listener([this, i] { on_connection(i); });
    port->host_connected = port->backend->connected();
    ports_.push_back(std::move(port));
  }
  if (const auto size = ports_[0]->backend->terminal_size()) {
    size_offered_ = true;
    size_ = *size;
    ports_[0]->backend->set_resize_listener([this] { on_resize(); });
  }
}

VirtioConsole::~VirtioConsole() {
  for (const auto& port : ports_) {
    port->backend->set_output_listener(nullptr);
    port->backend->set_connection_listener(nullptr);
  }
  if (size_offered_) ports_[0]->backend->set_resize_listener(nullptr);
}

std::string VirtioConsole::port_name_problem(std::string_view name) {
  if (name.empty()) return "a port needs a name";
  if (name.size() > kMaxPortName) {
    return fmt::format("port name '{}' is longer than {} characters", name, kMaxPortName);
  }
  for (char c : name) {
    if (c <= ' ' || c > '~' || c == '/' || c == ',' || c == '=') {
      return fmt::format("port name '{}': only printable ASCII without spaces, '/', ',' or '='",
                         name);
    }
  }
  return {};
}

std::optional<uint32_t> VirtioConsole::port_of_queue(uint16_t queue) const {
  if (queue == kReceiveQueue || queue == kTransmitQueue) return 0;
  if (queue < 4) return std::nullopt;
  const uint32_t port = queue / 2u - 1u;
  return port < ports_.size() ? std::optional(port) : std::nullopt;
}

std::string VirtioConsole::port_label(uint32_t port) const {
  if (port == 0) return name();
  return fmt::format("{} port {}", name(), ports_[port]->name);
}

std::string VirtioConsole::port_prefix(uint32_t port) const {
  return port == 0 ? std::string() : fmt::format("port {}: ", ports_[port]->name);
}

void VirtioConsole::on_output_room(uint32_t port) {
  VirtioTransport* transport = nullptr;
  {
    std::lock_guard lock(mutex_);
    transport = transport_;
  }
  // The transport's lock first, as in receive(); the held chain goes on, then the queue.
  if (transport == nullptr) return;
  transport->with_queues([this, port](std::span<Virtqueue> queues) {
    if (ports_[port]->tx_held) transmit(port, queues[transmit_queue(port)]);
  });
}

void VirtioConsole::start(EventLoop& loop) {
  {
    std::lock_guard lock(mutex_);
    loop_ = &loop;
  }
  for (uint32_t i = 0; i < ports_.size(); ++i) {
    ports_[i]->backend->start(loop,
                              [this, i](std::span<const uint8_t> bytes) { receive(i, bytes); });
  }
}

size_t VirtioConsole::pending_bytes(uint32_t port) const {
  std::lock_guard lock(mutex_);
  return ports_.at(port)->pending.size();
}

uint64_t VirtioConsole::dropped_bytes(uint32_t port) const {
  std::lock_guard lock(mutex_);
  return ports_.at(port)->dropped;
}

uint32_t VirtioConsole::device_id() const {
  return VIRTIO_ID_CONSOLE;
}

uint64_t VirtioConsole::device_features() const {
  return (1ull << VIRTIO_CONSOLE_F_EMERG_WRITE) | (ports_.size() > 1 ? kMultiport : 0) |
         (size_offered_ ? kSize : 0);
}

std::vector<uint16_t> VirtioConsole::queue_max_sizes() const {
  // Without named ports, port 0's two queues only: no control queues nobody would use.
  const size_t queues = ports_.size() > 1 ? 2 * ports_.size() + 2 : 2;
  return std::vector<uint16_t>(queues, kQueueSize);
}

void VirtioConsole::guest_error(const std::string& message) {
  guest_errors_.warn(name(), message);
}

// ---------------------------------------------------------------------------------------------
// Config space: cols and rows (0 without a terminal), max_nr_ports (port 0 counted).

uint32_t VirtioConsole::config_size() const {
  return kConfigSize;
}

void VirtioConsole::read_config(uint32_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, kConfigSize> config{};
  {
    std::lock_guard lock(mutex_);
    put_le(config, offsetof(virtio_console_config, cols), size_.cols, 2);
    put_le(config, offsetof(virtio_console_config, rows), size_.rows, 2);
  }
  put_le(config, offsetof(virtio_console_config, max_nr_ports), port_count(), 4);
  // emerg_wr is write-only and reads as 0. The transport checked the range.
  std::memcpy(data.data(), config.data() + offset, data.size());
}

void VirtioConsole::write_config(uint32_t offset, std::span<const uint8_t> data) {
  if (offset == kEmergWrOffset && !data.empty()) {
    // The character is the low byte of the 32-bit field. An emergency write does not wait:
    // without room in the backend it is dropped.
    static_cast<void>(ports_[0]->backend->write(data.first(1)));
    return;
  }
  guest_error(fmt::format("{}-byte write at config offset {:#x}, which is read-only; ignored",
                          data.size(), offset));
}

// ---------------------------------------------------------------------------------------------
// Driver lifecycle and queues

void VirtioConsole::activate(VirtioTransport& transport, uint64_t features) {
  EventLoop* loop = nullptr;
  bool tell_size = false;
  {
    std::lock_guard lock(mutex_);
    transport_ = &transport;
    multiport_ = (features & kMultiport) != 0;
    size_taken_ = (features & kSize) != 0;
    // Linux reads the size only when told it changed: without MULTIPORT, a config interrupt
    // now; with it, a RESIZE once port 0 is its console (handle_control).
    tell_size = size_taken_ && !multiport_ && size_ != CharBackend::TerminalSize{};
    for (const auto& port : ports_) {
      if (!port->pending.empty()) loop = loop_;
    }
  }
  if (tell_size) transport.signal_config_change();
  // Every DRIVER_OK of the guest's says it again: rate-limited with its other errors.
  if (ports_.size() > 1 && (features & kMultiport) == 0) {
    guest_error("the driver did not take MULTIPORT; only port 0 (the console) works");
  }
  // Input that waited for a driver: its receive buffers may already be there, but the queues
  // are out of reach inside this call. Without a loop, the next notify or input delivers it.
  if (loop != nullptr) {
    loop->post([this] {
      for (uint32_t i = 0; i < ports_.size(); ++i) receive(i, {});
    });
  }
}

void VirtioConsole::reset() {
  // The queues are reset next: the held chains' heads mean nothing any more.
  for (const auto& port : ports_) port->tx_held.reset();
  std::lock_guard lock(mutex_);
  transport_ = nullptr;  // pending input stays: it is the host's, for the next driver
  multiport_ = false;
  size_taken_ = false;
  for (const auto& port : ports_) {
    port->added = false;
    port->ready = false;
    port->guest_open = false;
  }
  control_out_.clear();  // the next driver starts again with DEVICE_READY
}

void VirtioConsole::queue_reset(uint16_t index) {
  const auto port = port_of_queue(index);
  if (port && index == transmit_queue(*port)) ports_[*port]->tx_held.reset();
}

void VirtioConsole::return_held(uint16_t index, Virtqueue& queue) {
  // Output still waiting for the backend's room: given back, the rest of it lost.
  const auto port = port_of_queue(index);
  if (!port || index != transmit_queue(*port) || !ports_[*port]->tx_held) return;
  const uint16_t head = ports_[*port]->tx_held->chain.head();
  ports_[*port]->tx_held.reset();
  if (queue.push(head, 0) && transport_ != nullptr) transport_->signal_used(index);
}

void VirtioConsole::queue_notify(uint16_t index, Virtqueue& queue) {
  if (index == kControlTransmitQueue) {
    take_control_messages(queue);
    return post_control_messages();
  }
  if (index == kControlReceiveQueue) {
    std::lock_guard lock(mutex_);
    return send_control_messages(queue);
  }
  const auto port = port_of_queue(index);
  if (!port) return;  // the transport only notifies queues that exist
  if (index == transmit_queue(*port)) return transmit(*port, queue);
  Port& p = *ports_[*port];
  EventLoop* loop = nullptr;
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    fill_receive_buffers(*port, queue);
    changed = update_input_pause(p);
    loop = loop_;
  }
  // Flow control runs on the loop thread; without a loop (tests) the call is direct.
  if (changed) p.input_flow->request_apply(loop);
}

VirtioConsole::Written VirtioConsole::write_buffers(Port& port, const std::vector<iovec>& iov,
                                                    size_t& index, size_t& offset, size_t& budget) {
  while (index < iov.size()) {
    if (budget == 0) return Written::budget_spent;
    const iovec& v = iov[index];
    std::span<const uint8_t> rest =
        std::span(static_cast<const uint8_t*>(v.iov_base), v.iov_len).subspan(offset);
    rest = rest.first(std::min(rest.size(), budget));
    const size_t taken = port.backend->write(rest);
    offset += taken;
    budget -= taken;
    if (taken < rest.size()) return Written::no_room;  // the output listener calls us again
    if (offset < v.iov_len) continue;                  // the budget's end
    ++index;
    offset = 0;
  }
  return Written::all;
}

bool VirtioConsole::yield_transmit(uint16_t index, size_t& budget) {
  if (transport_ != nullptr && transport_->renotify(index)) return true;
  budget = kTransmitBytesPerNotify;  // nowhere to yield to: go on
  return false;
}

// Every readable byte goes to the backend; the chain returns with nothing written. A chain the
// backend cannot take all of is held, and the queue waits behind it; so is one the byte budget
// cut, until the renotified queue comes back.
void VirtioConsole::transmit(uint32_t port, Virtqueue& queue) {
  Port& p = *ports_[port];
  const uint16_t index = transmit_queue(port);
  std::vector<iovec> iov;
  bool used = false;
  uint32_t taken = 0;
  size_t budget = kTransmitBytesPerNotify;
  const auto write_chain = [&](size_t& buffer, size_t& offset) {
    Written w = write_buffers(p, iov, buffer, offset, budget);
    while (w == Written::budget_spent && !yield_transmit(index, budget)) {
      w = write_buffers(p, iov, buffer, offset, budget);
    }
    return w == Written::all;
  };
  bool blocked = false;
  if (p.tx_held) {
    const uint16_t head = p.tx_held->chain.head();
    const bool gone = !p.tx_held->chain.iovecs(false, iov);
    if (gone) {
      guest_error(fmt::format("{}transmitq buffer {} is no longer in guest RAM; dropped",
                              port_prefix(port), head));
    }
    if (gone || write_chain(p.tx_held->index, p.tx_held->offset)) {
      queue.push(head, 0);
      p.tx_held.reset();
      used = true;
    } else {
      blocked = true;
    }
  }
  while (!blocked) {
    // A guest that keeps the queue full yields to the event loop's other work now and then:
    // after so many chains, or so many bytes.
    if ((taken == kTransmitPerNotify || budget == 0) && yield_transmit(index, budget)) break;
    auto chain = queue.pop();
    if (!chain) break;
    ++taken;
    iov.clear();
    if (chain->writable_bytes() != 0) {
      guest_error(fmt::format("{}transmitq buffer {} has device-writable descriptors; dropped",
                              port_prefix(port), chain->head()));
    } else if (!chain->iovecs(false, iov)) {
      guest_error(fmt::format("{}transmitq buffer {} is not in guest RAM; dropped",
                              port_prefix(port), chain->head()));
    } else {
      size_t buffer = 0;
      size_t offset = 0;
      if (!write_chain(buffer, offset)) {
        p.tx_held = HeldChain{std::move(*chain), buffer, offset};
        break;  // held until the backend has room or the queue comes back
      }
    }
    queue.push(chain->head(), 0);
    used = true;
  }
  // transport_ is stable here: activate() and reset() run under the same transport lock.
  if (used && transport_ != nullptr) transport_->signal_used(index);
}

void VirtioConsole::fill_receive_buffers(uint32_t port, Virtqueue& queue) {
  if (!queue.ready()) return;
  // A named port's input waits for a program in the guest to open it (it would be discarded).
  if (multiport_ && port != 0 && !ports_[port]->guest_open) return;
  std::vector<uint8_t>& pending = ports_[port]->pending;
  bool used = false;
  uint32_t taken = 0;
  while (!pending.empty()) {
    // The rest on a later pass (the queue's eventfd), after the loop's other work.
    if (taken == kReceivePerPass && transport_ != nullptr &&
        transport_->renotify(receive_queue(port))) {
      break;
    }
    auto chain = queue.pop();
    if (!chain) break;  // no buffers, or the driver broke the queue (the transport reports it)
    uint32_t written = 0;
    if (chain->readable_bytes() != 0 || chain->writable_bytes() == 0) {
      guest_error(fmt::format(
          "{}receiveq buffer {} has device-readable descriptors or no room; returned unused",
          port_prefix(port), chain->head()));
    } else {
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(pending.size(), chain->writable_bytes()));
      if (chain->write_at(0, std::span(pending.data(), n))) {
        pending.erase(pending.begin(), pending.begin() + static_cast<ptrdiff_t>(n));
        written = static_cast<uint32_t>(n);
      } else {
        guest_error(fmt::format("{}receiveq buffer {} cannot be written; returned unused",
                                port_prefix(port), chain->head()));
      }
    }
    queue.push(chain->head(), written);
    used = true;
    ++taken;
  }
  if (used && transport_ != nullptr) transport_->signal_used(receive_queue(port));
}

// ---------------------------------------------------------------------------------------------
// MULTIPORT's control queues (§5.3.6.2)

void VirtioConsole::take_control_messages(Virtqueue& queue) {
  bool used = false;
  uint32_t taken = 0;
  while (true) {
    if (taken == kControlPerNotify && transport_ != nullptr &&
        transport_->renotify(kControlTransmitQueue)) {
      break;
    }
    auto chain = queue.pop();
    if (!chain) break;
    ++taken;
    virtio_console_control message{};
    std::array<uint8_t, sizeof(message)> raw{};
    if (chain->writable_bytes() != 0 || chain->readable_bytes() < sizeof(message) ||
        !chain->read_at(0, raw)) {
      guest_error(fmt::format(
          "control message in buffer {} is not {} device-readable bytes in guest RAM; ignored",
          chain->head(), sizeof(message)));
    } else {
      std::memcpy(&message, raw.data(), sizeof(message));
      std::lock_guard lock(mutex_);
      if (multiport_) {
        handle_control(le32toh(message.id), le16toh(message.event), le16toh(message.value));
      } else {
        guest_error("a control message from a driver that did not take MULTIPORT; ignored");
      }
    }
    queue.push(chain->head(), 0);
    used = true;
  }
  if (used && transport_ != nullptr) transport_->signal_used(kControlTransmitQueue);
}

void VirtioConsole::handle_control(uint32_t id, uint16_t event, uint16_t value) {
  switch (event) {
    case VIRTIO_CONSOLE_DEVICE_READY:
      if (value != 1) {
        guest_error("the driver could not set up its ports");
        return;
      }
      // Each port once per driver (a second DEVICE_READY adds none again).
      for (uint32_t port = 0; port < ports_.size(); ++port) {
        if (ports_[port]->added) continue;
        ports_[port]->added = true;
        queue_control(port, VIRTIO_CONSOLE_PORT_ADD, 0);
      }
      return;
    case VIRTIO_CONSOLE_PORT_READY:
      if (id >= ports_.size()) break;
      if (!ports_[id]->added) {
        guest_error(fmt::format("PORT_READY for port {}, which was not added yet; ignored", id));
        return;
      }
      if (value != 1) {
        guest_error(fmt::format("the driver could not add port {}", id));
        return;
      }
      ports_[id]->ready = true;
      if (id == 0) {
        queue_control(id, VIRTIO_CONSOLE_CONSOLE_PORT, 1);
        if (size_taken_ && size_ != CharBackend::TerminalSize{}) queue_resize();
      } else {
        queue_control(id, VIRTIO_CONSOLE_PORT_NAME, 0, ports_[id]->name);
      }
      queue_port_open(id, ports_[id]->host_connected.load());
      return;
    case VIRTIO_CONSOLE_PORT_OPEN:
      if (id >= ports_.size()) break;
      // A program in the guest opened or closed the port: input waiting for it goes now (the
      // receive queue is out of reach here: through the loop, or the next notify or input).
      // As often as the guest likes: rate-limited like its errors.
      port_events_.debug(port_label(id), value ? "opened in the guest" : "closed in the guest");
      ports_[id]->guest_open = value != 0;
      if (value != 0 && !ports_[id]->pending.empty() && loop_ != nullptr) {
        loop_->post([this, id] { receive(id, {}); });
      }
      return;
    default:
      guest_error(
          fmt::format("control event {} (port {}) is not one a driver sends; ignored", event, id));
      return;
  }
  guest_error(
      fmt::format("control event {} names port {}, which does not exist; ignored", event, id));
}

void VirtioConsole::queue_control(uint32_t id, uint16_t event, uint16_t value,
                                  std::string_view text) {
  if (control_out_.size() >= kControlBacklogPerPort * ports_.size()) {
    guest_error("the driver asks for more control messages than it takes; dropping one");
    return;
  }
  virtio_console_control header{htole32(id), htole16(event), htole16(value)};
  std::vector<uint8_t> message(sizeof(header));
  std::memcpy(message.data(), &header, sizeof(header));
  message.insert(message.end(), text.begin(), text.end());
  control_out_.push_back(std::move(message));
}

std::vector<uint8_t>* VirtioConsole::waiting_control(uint32_t id, uint16_t event) {
  for (std::vector<uint8_t>& queued : control_out_) {
    virtio_console_control header{};
    std::memcpy(&header, queued.data(), sizeof(header));
    if (le32toh(header.id) == id && le16toh(header.event) == event) return &queued;
  }
  return nullptr;
}

void VirtioConsole::queue_port_open(uint32_t port, bool open) {
  ports_[port]->told_open = open;
  // A client that came and went before the driver took the last PORT_OPEN: only now counts.
  if (std::vector<uint8_t>* waiting = waiting_control(port, VIRTIO_CONSOLE_PORT_OPEN)) {
    const uint16_t value = htole16(open ? 1 : 0);
    std::memcpy(waiting->data() + offsetof(virtio_console_control, value), &value, sizeof value);
    return;
  }
  queue_control(port, VIRTIO_CONSOLE_PORT_OPEN, open ? 1 : 0);
}

void VirtioConsole::queue_resize() {
  // struct virtio_console_resize (§5.3.6.2): le16 cols, le16 rows.
  const std::array<uint8_t, 4> size{
      static_cast<uint8_t>(size_.cols & 0xff), static_cast<uint8_t>(size_.cols >> 8),
      static_cast<uint8_t>(size_.rows & 0xff), static_cast<uint8_t>(size_.rows >> 8)};
  // A terminal resized again before the driver took the last size: only the newest counts.
  if (std::vector<uint8_t>* waiting = waiting_control(0, VIRTIO_CONSOLE_RESIZE)) {
    std::copy(size.begin(), size.end(), waiting->begin() + sizeof(virtio_console_control));
    return;
  }
  queue_control(0, VIRTIO_CONSOLE_RESIZE, 0,
                std::string_view(reinterpret_cast<const char*>(size.data()), size.size()));
}

void VirtioConsole::send_control_messages(Virtqueue& queue) {
  if (!queue.ready()) return;
  bool used = false;
  while (!control_out_.empty()) {
    auto chain = queue.pop();
    if (!chain) break;  // the driver's next buffers bring the rest
    const std::vector<uint8_t>& message = control_out_.front();
    uint32_t written = 0;
    if (chain->readable_bytes() != 0 || chain->writable_bytes() < message.size()) {
      guest_error(fmt::format(
          "control receiveq buffer {} is device-readable or shorter than {} bytes; a message "
          "is lost",
          chain->head(), message.size()));
    } else if (chain->write_at(0, message)) {
      written = static_cast<uint32_t>(message.size());
    } else {
      guest_error(fmt::format("control receiveq buffer {} cannot be written; a message is lost",
                              chain->head()));
    }
    control_out_.pop_front();
    queue.push(chain->head(), written);
    used = true;
  }
  if (used && transport_ != nullptr) transport_->signal_used(kControlReceiveQueue);
}

void VirtioConsole::post_control_messages() {
  EventLoop* loop = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (control_out_.empty()) return;
    loop = loop_;
  }
  // Without a loop (tests), they go out when the driver next notifies the control receiveq.
  if (loop == nullptr) return;
  loop->post([this] {
    VirtioTransport* transport = nullptr;
    {
      std::lock_guard lock(mutex_);
      transport = transport_;
    }
    if (transport == nullptr) return;
    transport->with_queues([this](std::span<Virtqueue> queues) {
      std::lock_guard lock(mutex_);
      if (transport_ != nullptr) send_control_messages(queues[kControlReceiveQueue]);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The host end of a port opening and closing (MULTIPORT's PORT_OPEN)

void VirtioConsole::on_connection(uint32_t port) {
  Port& p = *ports_[port];
  const bool open = p.backend->connected();  // outside our lock, as every backend call
  p.host_connected = open;
  {
    std::lock_guard lock(mutex_);
    if (!multiport_ || transport_ == nullptr || !p.ready || open == p.told_open) return;
    log::debug("{}: host end {}", port_label(port), open ? "open" : "closed");
    queue_port_open(port, open);
  }
  post_control_messages();
}

// ---------------------------------------------------------------------------------------------
// The terminal's size (F_SIZE)

void VirtioConsole::on_resize() {
  const CharBackend::TerminalSize size =
      ports_[0]->backend->terminal_size().value_or(CharBackend::TerminalSize{});
  VirtioTransport* tell = nullptr;
  bool post = false;
  {
    std::lock_guard lock(mutex_);
    if (size == size_) return;
    size_ = size;
    log::debug("{}: the terminal is {}x{} now", name(), size.cols, size.rows);
    if (transport_ == nullptr || !size_taken_) return;  // the next driver reads it at DRIVER_OK
    if (!multiport_) {
      tell = transport_;
    } else if (ports_[0]->ready) {
      queue_resize();
      post = true;
    }
  }
  if (tell != nullptr) tell->signal_config_change();
  if (post) post_control_messages();
}

// ---------------------------------------------------------------------------------------------
// Host input

void VirtioConsole::receive(uint32_t port, std::span<const uint8_t> bytes) {
  Port& p = *ports_.at(port);
  VirtioTransport* transport = nullptr;
  {
    std::lock_guard lock(mutex_);
    const size_t cap = pending_limit_ + kMaxBackendRead;
    const size_t take = std::min(bytes.size(), cap - std::min(cap, p.pending.size()));
    p.pending.insert(p.pending.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(take));
    if (take < bytes.size()) {
      p.dropped += bytes.size() - take;
      if (!p.overflow_warned) {
        p.overflow_warned = true;
        log::warn("{}: {} keeps sending input while paused; dropping what does not fit",
                  port_label(port), p.backend->describe());
      }
    }
    if (!p.pending.empty()) transport = transport_;
  }
  // The transport's lock comes first, then ours: take it from outside, never inside, mutex_.
  if (transport != nullptr) {
    transport->with_queues([this, port](std::span<Virtqueue> queues) {
      std::lock_guard lock(mutex_);
      if (transport_ != nullptr) fill_receive_buffers(port, queues[receive_queue(port)]);
    });
  }
  {
    std::lock_guard lock(mutex_);
    update_input_pause(p);
  }
  p.input_flow->apply();  // we are on the loop thread (or a test's), where flow control runs
}

bool VirtioConsole::update_input_pause(Port& port) {
  if (!port.input_flow->update(port.pending.size())) return false;
  // Warn again after the next pause.
  if (!port.input_flow->wants_paused()) port.overflow_warned = false;
  return true;
}

}  // namespace libvmm
