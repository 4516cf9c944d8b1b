// The ring on the CPU (ring.hpp): the fused CPU kernel (kernel/attention.hpp)
// folds each visiting block into an fp32 state in host memory while an
// MpiTransport moves the next block, polled from inside the kernel. K/V
// travel with H_kv heads in their storage type.
//
// One CpuRing per job: it keeps its two block buffers and its state across
// runs, growing them when a chunk needs more; its first buffer is the home
// block the job reads K and V into, and the state's acc becomes o in place,
// so a chunk costs no K/V copy and no separate o buffer.
//
// Includes: mpi.h (MPI_Comm).
#pragma once

#include <mpi.h>

#include <optional>

#include "comm/mpi_transport.hpp"
#include "core/aligned_buffer.hpp"
#include "kernel/state.hpp"
#include "ring/ring.hpp"

namespace ringattn {

class CpuRing final : public Ring {
 public:
  // Collective over comm: the ring's transport works on a duplicate of it.
  explicit CpuRing(MPI_Comm comm);

  KvBlockRef home_block(const RingLayout& layout) override;
  // opt.threads: the kernel's threads; opt.cpu: its tile shape and vector path;
  // opt.poll: poll the hop from inside the kernel.
  RingStats run(const RingLayout& layout, const void* q, float* lse,
                const RingOptions& opt) override;
  const float* output() const override { return state_.acc.data(); }
  // layout.gradients must be set (home_block() made room for them).
  RingStats run_backward(const RingLayout& layout, const void* q, const GradInputs& in,
                         const RingOptions& opt) override;
  const float* grad_q() const override { return dq_.data(); }
  const float* grad_kv() const override { return own_grads_; }
  // Its fp32 state, sized by home_block(): a stopped run's to save, a saved
  // one restored here before a run with opt.first_step.
  AttnState* resumable_state() override { return &state_; }

 private:
  MpiTransport transport_;
  AlignedBuffer<char> blocks_[2];  // the largest block each: K then V (KvBlock)
  AttnState state_;                // (batch, heads_q, local q rows, head_dim) fp32; acc becomes o
  std::optional<RingLayout> prepared_;  // the layout home_block() sized the ring for
  // The backward's: the query side and dQ's sums, one step's dK and dV
  // (the largest block's), dq, and where the own block's gradients ended.
  GradState grad_;
  AlignedBuffer<float> part_;
  AlignedBuffer<float> dq_;
  const float* own_grads_ = nullptr;
};

}  // namespace ringattn
