#include "libvmm/backends/input_flow_control.hpp"

#include <algorithm>

#include "libvmm/backends/char_backend.hpp"
#include "libvmm/core/event_loop.hpp"

namespace libvmm {

std::shared_ptr<InputFlowControl> InputFlowControl::create(std::shared_ptr<CharBackend> backend,
                                                           size_t limit) {
  // Not make_shared: the constructor is private, so that every instance is shared.
  return std::shared_ptr<InputFlowControl>(new InputFlowControl(std::move(backend), limit));
}

InputFlowControl::InputFlowControl(std::shared_ptr<CharBackend> backend, size_t limit)
    : backend_(std::move(backend)), limit_(std::max<size_t>(limit, 1)) {}

bool InputFlowControl::update(size_t waiting) {
  const bool was_paused = wanted_paused_.load();
  bool paused = was_paused;
  if (waiting >= limit_) {
    paused = true;
  } else if (waiting * 2 < limit_) {
    paused = false;
  }
  if (paused == was_paused) return false;
  wanted_paused_.store(paused);
  return true;
}

void InputFlowControl::apply() {
  // Resuming may hand the device what the backend held meanwhile (a paused terminal keeps
  // reading for the escape keys), and the device's receive() calls apply() again from inside
  // resume_input(): that call returns at once, and this one applies the wish it left.
  if (applying_thread_.load() == std::this_thread::get_id()) return;
  std::lock_guard lock(apply_mutex_);
  applying_thread_.store(std::this_thread::get_id());
  // Each pass changes what the backend was told; a pause delivers nothing, so this ends.
  for (bool paused = wanted_paused_.load(); paused != backend_paused_;
       paused = wanted_paused_.load()) {
    backend_paused_ = paused;
    if (paused) {
      backend_->pause_input();
    } else {
      backend_->resume_input();
    }
  }
  applying_thread_.store(std::thread::id());
}

void InputFlowControl::request_apply(EventLoop* loop) {
  if (loop != nullptr) {
    // The task applies whatever is wanted when it runs, which may be newer than this request.
    loop->post([self = shared_from_this()] { self->apply(); });
  } else {
    apply();
  }
}

}  // namespace libvmm
