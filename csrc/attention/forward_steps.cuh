// The steps of the attention forward that do not depend on the tensor-core instruction
// behind them: masking a tile of scores, the online-softmax update, dropout and writing
// the normalised rows. Both forwards (forward_kernel.cuh, mma.sync on sm80; and
// forward_sm90_kernel.cuh, wgmma on sm90a) call them on their accumulators seen as
// (rows, cols) tensors, with an identity tensor partitioned the same way giving each
// value's (row, col) in its tile.
//
// Both accumulators put a row's values on the 4 threads of a quad (lanes 4q .. 4q + 3),
// so a row's max and sum are quad reductions; the rows a thread holds are the same in
// the score tile S and in the output tile O.
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "attention/dropout.h"
#include "attention/mask.cuh"
#include "attention/params.h"
#include "attention/schedule.h"
#include "attention/tiles.cuh"

namespace seqops {
namespace attention {

using namespace cute;

// Scores to base 2 (scale * log2 e folded in), then the masks: after the scale, so that a
// negative or zero scale cannot turn the -inf around. An attn_mask applies to every tile,
// the causal and length masks to the tiles tile_needs_mask says cross them.
template <class Scores, class Coords>
__device__ __forceinline__ void scale_and_mask_scores(Scores& s, Coords const& coords, float scale_log2,
                                                      MaskView const& mask, int m0, int n0, int block_n,
                                                      int len_q, int len_kv, bool causal, int causal_offset) {
  CUTE_UNROLL
  for (int i = 0; i < size(s); ++i) s(i) *= scale_log2;
  if (!mask.present() && !tile_needs_mask(m0, n0, block_n, len_kv, causal, causal_offset)) return;
  CUTE_UNROLL
  for (int r = 0; r < size<0>(s); ++r) {
    const int row = m0 + get<0>(coords(r, 0));
    const int visible = causal ? min(len_kv, row + causal_offset + 1) : len_kv;  // keys j < visible
    CUTE_UNROLL
    for (int c = 0; c < size<1>(s); ++c) {
      const int col = n0 + get<1>(coords(r, c));
      if (col >= visible) {
        s(r, c) = -INFINITY;
      } else if (mask.present() && row < len_q) {
        s(r, c) += mask.bias_log2(row, col);
      }
    }
  }
}

// The online softmax's running statistics of the kRows rows a thread holds, in base 2.
template <int kRows>
struct RowStatistics {
  static constexpr int kCount = kRows;
  float max[kRows];  // running max of the scores, -inf until a key is seen
  float sum[kRows];  // this thread's share of the running denominator

  __device__ __forceinline__ RowStatistics() {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      max[r] = -INFINITY;
      sum[r] = 0.0f;
    }
  }
};

// Online softmax over one more tile, its scores alone: each row's running max takes the
// tile's, the row's sum is rescaled to it, and the scores become probabilities
// exp2(s - max) added to the sum (this thread's share of the row). rescale[r] gets what row
// r of O must be multiplied by (rescale_rows), which a kernel whose O += P V of the last
// tile is still in flight applies once that has completed.
template <class Scores, int kRows>
__device__ __forceinline__ void online_softmax_scores(Scores& s, RowStatistics<kRows>& rows, float (&rescale)[kRows]) {
  CUTE_UNROLL
  for (int r = 0; r < size<0>(s); ++r) {
    float m = rows.max[r];
    CUTE_UNROLL
    for (int c = 0; c < size<1>(s); ++c) m = fmaxf(m, s(r, c));
    m = quad_max(m);
    // A row that has seen no key yet keeps max -inf: subtract 0 instead, so that
    // exp2(-inf - -inf) never makes a NaN; its probabilities are exp2(-inf) = 0.
    const float base = m == -INFINITY ? 0.0f : m;
    rescale[r] = exp2f(rows.max[r] - base);  // 0 while the old max is -inf
    rows.max[r] = m;
    float sum = rows.sum[r] * rescale[r];
    CUTE_UNROLL
    for (int c = 0; c < size<1>(s); ++c) {
      const float p = exp2f(s(r, c) - base);
      s(r, c) = p;
      sum += p;
    }
    rows.sum[r] = sum;
  }
}

template <class Out, int kRows>
__device__ __forceinline__ void rescale_rows(Out& o, const float (&rescale)[kRows]) {
  CUTE_UNROLL
  for (int r = 0; r < size<0>(o); ++r) {
    CUTE_UNROLL
    for (int c = 0; c < size<1>(o); ++c) o(r, c) *= rescale[r];
  }
}

// Both at once, for a kernel whose O is not being written meanwhile.
template <class Scores, class Out, int kRows>
__device__ __forceinline__ void online_softmax_step(Scores& s, Out& o, RowStatistics<kRows>& rows) {
  float rescale[kRows];
  online_softmax_scores(s, rows, rescale);
  rescale_rows(o, rescale);
}

// Dropout after the denominator took every probability: out = dropout(P) V / sum, the
// keep decision of (row, col) drawn from the counter row * len_kv + col of the stream
// (the Triton backend's numbering, so that both drop the same entries for one seed).
template <class Probabilities, class Coords>
__device__ __forceinline__ void drop_probabilities(Probabilities& p, Coords const& coords, int m0, int n0,
                                                   int len_kv, int32_t stream_id, float dropout_p) {
  const float keep_scale = 1.0f / (1.0f - dropout_p);
  CUTE_UNROLL
  for (int r = 0; r < size<0>(p); ++r) {
    const int64_t counter_row = int64_t(m0 + get<0>(coords(r, 0))) * len_kv;
    CUTE_UNROLL
    for (int c = 0; c < size<1>(p); ++c) {
      const bool keep = dropout_uniform(stream_id, counter_row + n0 + get<1>(coords(r, c))) >= dropout_p;
      p(r, c) = keep ? p(r, c) * keep_scale : 0.0f;
    }
  }
}

// Normalises O's rows and writes them with their logsumexp, for the rows below L: one
// thread of each quad writes a row's lse; column pairs (adjacent in both accumulators)
// go as one 4-byte store (rows start 16-byte aligned, see the launcher checks). A split
// of split-KV writes its fp32 partials instead, for forward.cu's combine kernel.
template <typename Element, int kHeadDim, class Out, class Coords, int kRows>
__device__ __forceinline__ void write_output_rows(Out const& o, Coords const& coords, RowStatistics<kRows> const& rows,
                                                  AttentionForwardParams const& params, Element* o_ptr,
                                                  float* lse_ptr, int m0, int len_q, int batch, int head, int split) {
  float const* row_max = rows.max;
  float const* row_sum = rows.sum;
  using Pair = ElementPair<Element>;
  const int64_t partial_rows = ((int64_t(split) * params.batch + batch) * params.heads_q + head) * len_q;
  CUTE_UNROLL
  for (int r = 0; r < size<0>(o); ++r) {
    const float sum = quad_sum(row_sum[r]);
    const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;  // a row that saw no key writes 0
    const int row = m0 + get<0>(coords(r, 0));
    if (row >= len_q) continue;
    const float row_lse = sum > 0.0f ? row_max[r] * 0.6931471805599453f + logf(sum) : -INFINITY;
    const bool writes_lse = get<1>(coords(r, 0)) == 0;  // the quad's thread of column 0
    if (params.splits > 1) {
      if (writes_lse) params.partial_lse[partial_rows + row] = row_lse;
      float* out_row = params.partial_out + (partial_rows + row) * kHeadDim;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(o); c += 2) {
        *reinterpret_cast<float2*>(out_row + get<1>(coords(r, c))) =
            make_float2(o(r, c) * inverse, o(r, c + 1) * inverse);
      }
      continue;
    }
    if (writes_lse) lse_ptr[row] = row_lse;
    Element* out_row = o_ptr + row * params.out_strides.row;
    CUTE_UNROLL
    for (int c = 0; c < size<1>(o); c += 2) {
      const Pair pair{static_cast<Element>(o(r, c) * inverse), static_cast<Element>(o(r, c + 1) * inverse)};
      *reinterpret_cast<Pair*>(out_row + get<1>(coords(r, c))) = pair;
    }
  }
}

}  // namespace attention
}  // namespace seqops
