// The attention forward in CuTe for sm80 (and for sm90 where its wgmma kernel,
// forward_sm90_kernel.cuh, is not built or not chosen: split-KV launches): one CTA of 8
// warps per block of 128 queries of one (batch, head), looping over key tiles with an
// online softmax in registers, as flash-attention 2 does.
//
//   - Q, K and V tiles go gmem -> smem with 16-byte cp.async into a swizzled layout (rows
//     of 64 elements, Swizzle<3,3,3>), so that the ldmatrix reads after are free of bank
//     conflicts. Rows past L or S are zero-filled (a zero V row times a zero probability is
//     0; garbage could be NaN).
//   - The next tile's loads overlap the math: V(n) is in flight while S = Q K(n)^T runs,
//     K(n-1) while the softmax and O += P V(n) run. One smem buffer each for Q, K and V.
//   - S and O accumulate in fp32 (mma.sync 16x8x16). The softmax works in base 2 with
//     the scale folded in (scores * scale * log2 e), so exp2 is one instruction; P is
//     rounded to the input dtype in registers and fed back as the A operand of P V.
//   - Key tiles are visited from the last one this query block sees down to 0, so only
//     the first few (the tail of S and the tiles crossing the causal diagonal) need the
//     elementwise mask; tiles wholly above the diagonal are never loaded.
// Everything here is compiled only through csrc/attention/instances/*.cu (one head dim and
// dtype each), which register their launcher in the table of forward.cu.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>

#include "attention/forward_steps.cuh"
#include "attention/launchers.h"
#include "attention/mask.cuh"
#include "attention/params.h"
#include "attention/schedule.h"
#include "attention/tiles.cuh"
#include "common/status.h"

namespace seqops {
namespace attention {

using namespace cute;

template <int kHeadDim_, typename Element_>
struct ForwardTraits : TileTypes<kHeadDim_, Element_, 8> {
  // 8 warps, each owning a 16-row slice of the query block, so that a thread's share of O
  // (64 fp32 at head dim 128) and of S (32) fit in 255 registers. With 4 warps (two slices
  // each) head dim 128 spills, and head dim 64 sat at 255 registers until the mask's reads
  // pushed it over.
  using Base = TileTypes<kHeadDim_, Element_, 8>;
  static constexpr int kBlockM = 128;  // queries per CTA
  static constexpr int kBlockN = kHeadDim_ <= 128 ? 64 : 32;  // keys per tile (32 at head dim 256: registers)

  using SmemLayoutQ = typename Base::template SmemRows<kBlockM>;
  using SmemLayoutKV = typename Base::template SmemRows<kBlockN>;
  // V seen as [head dim, keys]: the B operand of O += P V, read with transposing ldmatrix.
  using SmemLayoutVt = typename Base::template SmemRowsTransposed<kBlockN>;
  using SmemLayoutVtShape = typename Base::template SmemRowsTransposedShape<kBlockN>;

  static constexpr int kSmemBytes =
      int(cosize(SmemLayoutQ{}) + 2 * cosize(SmemLayoutKV{})) * int(sizeof(typename Base::Element));
};

// grid (ceil(L / kBlockM) * splits, Hq, B). len_q, len_kv, causal_offset and group (Hq / Hkv) come
// checked and narrowed to int by the launcher (positions stay below 2**30, the offset is
// clamped to [-L, S]); pointers and strides are offset in int64.
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    attention_forward_kernel(const AttentionForwardParams params, int len_q, int len_kv, int causal_offset,
                             int group) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;

  extern __shared__ __align__(128) unsigned char smem[];

  const int splits = static_cast<int>(params.splits);
  const int m_block = blockIdx.x / splits;
  const int split = blockIdx.x % splits;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int kv_head = head / group;
  const int tid = threadIdx.x;
  const int m0 = m_block * kBlockM;
  const bool causal = params.causal;

  // The key tiles holding every key a query of this block sees (this split's share of them).
  const TileRange tiles =
      split_tiles(key_tiles(m_block, kBlockM, kBlockN, len_q, len_kv, causal, causal_offset), split, splits);

  const Element* q_ptr = static_cast<const Element*>(params.q) + batch * params.q_strides.batch +
                         head * params.q_strides.head;
  const Element* k_ptr = static_cast<const Element*>(params.k) + batch * params.k_strides.batch +
                         kv_head * params.k_strides.head;
  const Element* v_ptr = static_cast<const Element*>(params.v) + batch * params.v_strides.batch +
                         kv_head * params.v_strides.head;
  Element* o_ptr = static_cast<Element*>(params.out) + batch * params.out_strides.batch +
                   head * params.out_strides.head;
  float* lse_ptr = params.lse + batch * params.lse_batch_stride + head * params.lse_head_stride;
  const MaskView mask = mask_view(params.mask, batch, head);

  const auto row_major = [](auto ptr, int rows, int64_t row_stride) {
    return make_tensor(make_gmem_ptr(ptr), make_shape(rows, Int<kHeadDim>{}), make_stride(row_stride, _1{}));
  };
  Tensor gQ = local_tile(row_major(q_ptr, len_q, params.q_strides.row), Shape<Int<kBlockM>, Int<kHeadDim>>{},
                         make_coord(m_block, 0));                                   // (M, E)
  Tensor gK = local_tile(row_major(k_ptr, len_kv, params.k_strides.row), Shape<Int<kBlockN>, Int<kHeadDim>>{},
                         make_coord(_, 0));                                         // (N, E, tiles)
  Tensor gV = local_tile(row_major(v_ptr, len_kv, params.v_strides.row), Shape<Int<kBlockN>, Int<kHeadDim>>{},
                         make_coord(_, 0));                                         // (N, E, tiles)

  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutKV{});
  Tensor sVt = make_tensor(sV.data(), typename Traits::SmemLayoutVt{});
  Tensor sVtShape = make_tensor(sV.data(), typename Traits::SmemLayoutVtShape{});

  // gmem -> smem, with identity tensors giving each copied row's position for predicates.
  typename Traits::GmemTiledCopy gmem_copy;
  auto gmem_thr = gmem_copy.get_thread_slice(tid);
  Tensor tQgQ = gmem_thr.partition_S(gQ);
  Tensor tQsQ = gmem_thr.partition_D(sQ);
  Tensor tKgK = gmem_thr.partition_S(gK);  // (CPY, CPY_N, CPY_E, tiles)
  Tensor tKsK = gmem_thr.partition_D(sK);
  Tensor tVgV = gmem_thr.partition_S(gV);
  Tensor tVsV = gmem_thr.partition_D(sV);
  Tensor tQcQ = gmem_thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tKVcKV = gmem_thr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);         // (MMA, MMA_M, MMA_E)
  Tensor tSrK = thr_mma.partition_fragment_B(sK);         // (MMA, MMA_N, MMA_E)
  Tensor tOrVt = thr_mma.partition_fragment_B(sVtShape);  // (MMA, MMA_E, MMA_N)
  Tensor acc_o = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_E)

  auto smem_copy_q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma);
  auto smem_thr_q = smem_copy_q.get_thread_slice(tid);
  Tensor tSsQ = smem_thr_q.partition_S(sQ);
  auto smem_copy_k = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma);
  auto smem_thr_k = smem_copy_k.get_thread_slice(tid);
  Tensor tSsK = smem_thr_k.partition_S(sK);
  auto smem_copy_v = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma);
  auto smem_thr_v = smem_copy_v.get_thread_slice(tid);
  Tensor tOsVt = smem_thr_v.partition_S(sVt);

  // Each accumulator value's (row, col) in its tile: the masks' and the stores' positions.
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), accumulator_rows_cols(tScS.layout()));
  Tensor tOcO = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tOcO_rc = make_tensor(tOcO.data(), accumulator_rows_cols(tOcO.layout()));
  Tensor acc_o_rc = make_tensor(acc_o.data(), accumulator_rows_cols(acc_o.layout()));

  RowStatistics<decltype(size<0>(acc_o_rc))::value> rows;  // of the rows this thread holds
  clear(acc_o);

  const float scale_log2 = params.scale * 1.4426950408889634f;  // scores in base 2
  const bool dropout = params.dropout_p > 0.0f;
  const int32_t dropout_stream_id = dropout_stream(params.seed, int64_t(batch) * params.heads_q + head);

  // A block that sees no key (S = 0, or a causal offset below -m0 - kBlockM + 1) loads
  // nothing and writes its zeros and -inf below; no copy is left in flight at exit.
  if (tiles.end > tiles.begin) {
    copy_rows_or_zero(gmem_copy, tQgQ, tQsQ, tQcQ, len_q - m0);
    copy_rows_or_zero(gmem_copy, tKgK(_, _, _, tiles.end - 1), tKsK, tKVcKV, len_kv - (tiles.end - 1) * kBlockN);
    cp_async_fence();
  }

  CUTE_NO_UNROLL
  for (int n = tiles.end - 1; n >= tiles.begin; --n) {
    const int n0 = n * kBlockN;
    Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
    clear(acc_s);

    cp_async_wait<0>();
    __syncthreads();  // K(n) (and Q) landed for all; every thread is done reading V(n+1)
    copy_rows_or_zero(gmem_copy, tVgV(_, _, _, n), tVsV, tKVcKV, len_kv - n0);
    cp_async_fence();

    gemm_smem_smem(acc_s, tSrQ, tSrK, tSsQ, tSsK, mma, smem_copy_q, smem_thr_q, smem_copy_k, smem_thr_k);

    Tensor s = make_tensor(acc_s.data(), accumulator_rows_cols(acc_s.layout()));  // (rows, cols)
    scale_and_mask_scores(s, tScS_rc, scale_log2, mask, m0, n0, kBlockN, len_q, len_kv, causal, causal_offset);

    cp_async_wait<0>();
    __syncthreads();  // V(n) landed for all; every thread is done reading K(n)
    if (n > tiles.begin) {
      copy_rows_or_zero(gmem_copy, tKgK(_, _, _, n - 1), tKsK, tKVcKV, len_kv - (n - 1) * kBlockN);
      cp_async_fence();
    }

    online_softmax_step(s, acc_o_rc, rows);
    if (dropout) drop_probabilities(s, tScS_rc, m0, n0, len_kv, dropout_stream_id, params.dropout_p);
    Tensor p = rounded<Element>(acc_s);
    Tensor tOrP = make_tensor(p.data(), accumulator_as_a_operand(p.layout()));  // (MMA, MMA_M, MMA_N / 2)
    gemm_regs_smem(acc_o, tOrP, tOrVt, tOsVt, mma, smem_copy_v, smem_thr_v);
  }

  write_output_rows<Element, kHeadDim>(acc_o_rc, tOcO_rc, rows, params, o_ptr, lse_ptr, m0, len_q, batch, head,
                                      split);
}

// The host side of one instance: launch geometry, the opt-in to more than 48 KiB of smem,
// the launch. The params are checked by check_attention_forward (forward.cu) before.
template <int kHeadDim, typename Element>
Status launch_attention_forward(const AttentionForwardParams& params, cudaStream_t stream) {
  using Traits = ForwardTraits<kHeadDim, Element>;
  const auto kernel = &attention_forward_kernel<Traits>;
  constexpr int smem_bytes = Traits::kSmemBytes;
  if (smem_bytes > 48 * 1024) {
    const cudaError_t error =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    if (error != cudaSuccess) return Status::from_cuda(error);
  }
  const int len_q = static_cast<int>(params.len_q);
  const int len_kv = static_cast<int>(params.len_kv);
  const int64_t offset = clamp_causal_offset(params.causal_offset, params.len_q, params.len_kv);
  const dim3 grid(static_cast<unsigned>((len_q + Traits::kBlockM - 1) / Traits::kBlockM * params.splits),
                  static_cast<unsigned>(params.heads_q), static_cast<unsigned>(params.batch));
  kernel<<<grid, Traits::kThreads, smem_bytes, stream>>>(params, len_q, len_kv, static_cast<int>(offset),
                                                         static_cast<int>(params.heads_q / params.heads_kv));
  return Status::from_cuda(cudaGetLastError());
}

// The table entry (launchers.h) of one instance.
template <int kHeadDim, typename Element>
AttentionForwardInstance forward_instance(DType dtype) {
  using Traits = ForwardTraits<kHeadDim, Element>;
  AttentionForwardInstance instance;
  instance.head_dim = kHeadDim;
  instance.dtype = dtype;
  instance.block_m = Traits::kBlockM;
  instance.block_n = Traits::kBlockN;
  instance.threads = Traits::kThreads;
  instance.smem_bytes = Traits::kSmemBytes;
  instance.launcher = &launch_attention_forward<kHeadDim, Element>;
  return instance;
}

}  // namespace attention
}  // namespace seqops
