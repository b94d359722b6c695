// InputFlowControl: the pause/resume hysteresis, and that the backend hears only changes from
// what it was last told, in the current state, however late a posted apply() runs.
#include <gtest/gtest.h>

#include <memory>

#include "libvmm/backends/input_flow_control.hpp"
#include "unit/support/fake_char_backend.hpp"
#include "unit/support/loop_thread.hpp"

namespace libvmm {
namespace backends_input_flow_test {

using test::FakeCharBackend;
using test::LoopThread;

class InputFlowControlTest : public testing::Test {
 protected:
  std::shared_ptr<FakeCharBackend> backend = std::make_shared<FakeCharBackend>();
  std::shared_ptr<InputFlowControl> flow = InputFlowControl::create(backend, 8);
};

TEST_F(InputFlowControlTest, PausesAtTheLimitAndResumesBelowHalf) {
  EXPECT_FALSE(flow->update(7));
  EXPECT_FALSE(flow->wants_paused());
  EXPECT_TRUE(flow->update(8));
  EXPECT_TRUE(flow->wants_paused());
  EXPECT_FALSE(flow->update(100)) << "already paused";
  EXPECT_FALSE(flow->update(4)) << "half the limit still waits: stays paused";
  EXPECT_TRUE(flow->wants_paused());
  EXPECT_TRUE(flow->update(3));
  EXPECT_FALSE(flow->wants_paused());
  EXPECT_FALSE(flow->update(7)) << "below the limit: stays resumed";
}

TEST_F(InputFlowControlTest, ZeroLimitCountsAsOne) {
  auto strict = InputFlowControl::create(backend, 0);
  EXPECT_FALSE(strict->update(0));
  EXPECT_TRUE(strict->update(1));
  EXPECT_TRUE(strict->update(0));
}

TEST_F(InputFlowControlTest, UpdateAloneDoesNotTouchTheBackend) {
  flow->update(8);
  EXPECT_EQ(backend->pauses, 0);
  flow->apply();
  EXPECT_EQ(backend->pauses, 1);
  EXPECT_TRUE(backend->paused);
}

TEST_F(InputFlowControlTest, ApplyTellsTheBackendOnlyChanges) {
  flow->apply();
  EXPECT_EQ(backend->pauses + backend->resumes, 0) << "never paused: nothing to resume";
  flow->update(8);
  flow->apply();
  flow->apply();
  EXPECT_EQ(backend->pauses, 1);
  flow->update(0);
  flow->apply();
  flow->apply();
  EXPECT_EQ(backend->resumes, 1);
  EXPECT_FALSE(backend->paused);
  EXPECT_EQ(backend->repeated, 0);
}

TEST_F(InputFlowControlTest, ApplyUsesTheCurrentWishNotTheOneThatAskedForIt) {
  // A resume decided, then a pause decided before the resume's apply() ran: the stale apply()
  // sees the newer pause and the backend is never resumed.
  flow->update(8);
  flow->apply();
  flow->update(0);
  flow->update(8);
  flow->apply();
  EXPECT_EQ(backend->pauses, 1);
  EXPECT_EQ(backend->resumes, 0);
  EXPECT_TRUE(backend->paused);
}

TEST_F(InputFlowControlTest, RequestWithoutALoopAppliesAtOnce) {
  flow->update(8);
  flow->request_apply(nullptr);
  EXPECT_TRUE(backend->paused);
}

TEST_F(InputFlowControlTest, RequestWithALoopAppliesOnTheLoopThread) {
  LoopThread io;
  flow->update(8);
  io.call([&] { flow->request_apply(&io.loop); });  // posted behind this call, not run inside it
  io.call([] {});
  EXPECT_EQ(backend->pauses, 1);
  // On the loop thread, so the posted apply() cannot run before the second update().
  io.call([&] {
    flow->update(0);
    flow->request_apply(&io.loop);
    flow->update(8);  // newer than the request: the posted apply() finds nothing to change
  });
  io.call([] {});
  EXPECT_EQ(backend->pauses, 1);
  EXPECT_EQ(backend->resumes, 0);
}

TEST_F(InputFlowControlTest, APostedRequestKeepsTheBackendAlive) {
  LoopThread io;
  std::weak_ptr<FakeCharBackend> weak = backend;
  io.call([&] {
    flow->update(8);
    flow->request_apply(&io.loop);
    flow.reset();  // the device is gone before its request runs
    backend.reset();
    EXPECT_FALSE(weak.expired()) << "the posted task holds the flow control and its backend";
  });
  io.call([] {});  // the posted task runs on a backend that is still there (ASan would tell)
}

}  // namespace backends_input_flow_test
}  // namespace libvmm
