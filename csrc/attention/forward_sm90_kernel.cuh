// The attention forward for sm90a on wgmma: one CTA of two warpgroups per block of 128
// queries of one (batch, head), looping over tiles of 128 keys with the online softmax of
// forward_steps.cuh, as the sm80 kernel (forward_kernel.cuh) does with mma.sync.
//
//   - S = Q K(n)^T: one wgmma batch per tile, both operands read by the tensor cores
//     from 128-byte-swizzled shared memory (no ldmatrix, no operand registers).
//   - O += P V(n): P is S's accumulator rounded to the input dtype and reinterpreted in
//     registers as the wgmma A operand; V is read transposed from shared memory.
//   - Loads are 16-byte cp.async, V(n) in flight during S's wgmma and K(n-1) during the
//     softmax and P V, one buffer each; each thread fences its landed copies into the
//     async proxy (which wgmma reads through) before the barrier that publishes them.
//   - Key tiles are visited from the last one the block sees down to 0, so only the first
//     few need the elementwise mask; tiles wholly above the causal diagonal are skipped.
//
// Not yet here (the next steps of the FA3 recipe): TMA loads issued by a producer warp,
// a multi-stage pipeline of K/V tiles with mbarriers, and the softmax of one tile
// overlapped with the wgmma of the next. Compiled for sm_90a only: on other targets the
// kernel body is empty, and the launcher runs it only on a device of compute capability 9.0.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>

#include "attention/forward_sm90_tiles.cuh"
#include "attention/forward_steps.cuh"
#include "attention/launchers.h"
#include "attention/mask.cuh"
#include "attention/params.h"
#include "attention/schedule.h"
#include "attention/tiles.cuh"
#include "common/status.h"

#include <cutlass/arch/barrier.h>

namespace seqops {
namespace attention {

using namespace cute;

// acc (+)= A B over the k-blocks of A and B as one wgmma batch of the warpgroup, waited
// for before return. kZeroInit starts acc from 0 instead of its contents. An A operand in
// registers (kAInRegisters; else a tensor of shared-memory descriptors) is fenced too, so
// that the compiler keeps its registers in place while the wgmma reads them.
template <bool kZeroInit, bool kAInRegisters, class Mma, class FragA, class FragB, class Acc>
__device__ __forceinline__ void warpgroup_gemm(Mma& mma, FragA& a, FragB const& b, Acc& acc) {
  if constexpr (kAInRegisters) warpgroup_fence_operand(a);
  warpgroup_fence_operand(acc);
  warpgroup_arrive();
  if constexpr (kZeroInit) mma.accumulate_ = GMMA::ScaleOut::Zero;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(a); ++k) {
    cute::gemm(mma, a(_, _, k), b(_, _, k), acc);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_wait<0>();
  warpgroup_fence_operand(acc);
  if constexpr (kAInRegisters) warpgroup_fence_operand(a);
}

// grid (ceil(L / kBlockM) * splits, Hq, B), as the sm80 kernel; the same arguments.
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    attention_forward_sm90_kernel(const AttentionForwardParams params, int len_q, int len_kv, int causal_offset,
                                  int group) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;

  extern __shared__ __align__(1024) unsigned char smem[];

  const int splits = static_cast<int>(params.splits);
  const int m_block = blockIdx.x / splits;
  const int split = blockIdx.x % splits;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int kv_head = head / group;
  const int tid = threadIdx.x;
  const int m0 = m_block * kBlockM;
  const bool causal = params.causal;

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
  Tensor sK = make_tensor(sQ.data() + cosize(typename Traits::SmemLayoutQ{}), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(sK.data() + cosize(typename Traits::SmemLayoutKV{}), typename Traits::SmemLayoutKV{});
  Tensor sVt = make_tensor(sV.data(), typename Traits::SmemLayoutVt{});

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

  typename Traits::TiledMmaS mma_s;
  typename Traits::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(tid);
  auto thr_o = mma_o.get_thread_slice(tid);
  Tensor tSrQ = thr_s.partition_fragment_A(sQ);   // smem descriptors (MMA, MMA_M, MMA_E)
  Tensor tSrK = thr_s.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_E)
  Tensor tOrVt = thr_o.partition_fragment_B(sVt);  // (MMA, MMA_E, MMA_N)
  Tensor acc_o = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_E)

  // Each accumulator value's (row, col) in its tile: the masks' and the stores' positions.
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), wgmma_accumulator_rows_cols(tScS.layout()));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tOcO_rc = make_tensor(tOcO.data(), wgmma_accumulator_rows_cols(tOcO.layout()));
  Tensor acc_o_rc = make_tensor(acc_o.data(), wgmma_accumulator_rows_cols(acc_o.layout()));

  constexpr int kRows = decltype(size<0>(acc_o_rc))::value;  // rows this thread holds
  float row_max[kRows];  // running max of the base-2 scores, -inf until a key is seen
  float row_sum[kRows];  // this thread's share of the running denominator
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
  }
  clear(acc_o);

  const float scale_log2 = params.scale * 1.4426950408889634f;  // scores in base 2
  const bool dropout = params.dropout_p > 0.0f;
  const int32_t dropout_stream_id = dropout_stream(params.seed, int64_t(batch) * params.heads_q + head);

  // Copies of this thread landed, made visible to the async proxy wgmma reads through,
  // then published to the CTA (and every thread is past its last wgmma on what the next
  // copies overwrite).
  const auto land_copies = [] {
    cp_async_wait<0>();
    cutlass::arch::fence_view_async_shared();
    __syncthreads();
  };

  if (tiles.end > tiles.begin) {
    copy_rows_or_zero(gmem_copy, tQgQ, tQsQ, tQcQ, len_q - m0);
    copy_rows_or_zero(gmem_copy, tKgK(_, _, _, tiles.end - 1), tKsK, tKVcKV, len_kv - (tiles.end - 1) * kBlockN);
    cp_async_fence();
  }

  CUTE_NO_UNROLL
  for (int n = tiles.end - 1; n >= tiles.begin; --n) {
    const int n0 = n * kBlockN;
    Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)

    land_copies();  // K(n) (and Q); every thread is done reading V(n+1)
    copy_rows_or_zero(gmem_copy, tVgV(_, _, _, n), tVsV, tKVcKV, len_kv - n0);
    cp_async_fence();

    warpgroup_gemm</*kZeroInit=*/true, /*kAInRegisters=*/false>(mma_s, tSrQ, tSrK, acc_s);

    Tensor s = make_tensor(acc_s.data(), wgmma_accumulator_rows_cols(acc_s.layout()));  // (rows, cols)
    scale_and_mask_scores(s, tScS_rc, scale_log2, mask, m0, n0, kBlockN, len_q, len_kv, causal, causal_offset);

    land_copies();  // V(n); every thread is done reading K(n)
    if (n > tiles.begin) {
      copy_rows_or_zero(gmem_copy, tKgK(_, _, _, n - 1), tKsK, tKVcKV, len_kv - (n - 1) * kBlockN);
      cp_async_fence();
    }

    online_softmax_step(s, acc_o_rc, row_max, row_sum);
    if (dropout) drop_probabilities(s, tScS_rc, m0, n0, len_kv, dropout_stream_id, params.dropout_p);
    Tensor p = rounded<Element>(acc_s);
    Tensor tOrP = make_tensor(p.data(), wgmma_accumulator_as_a_operand(p.layout()));  // (MMA, MMA_M, keys / 16)
    warpgroup_gemm</*kZeroInit=*/false, /*kAInRegisters=*/true>(mma_o, tOrP, tOrVt, acc_o);
  }

  write_output_rows<Element, kHeadDim>(acc_o_rc, tOcO_rc, row_max, row_sum, params, o_ptr, lse_ptr, m0, len_q, batch,
                                      head, split);
#endif
}

template <int kHeadDim, typename Element>
Status launch_attention_forward_sm90(const AttentionForwardParams& params, cudaStream_t stream) {
  using Traits = ForwardSm90Traits<kHeadDim, Element>;
  const auto kernel = &attention_forward_sm90_kernel<Traits>;
  constexpr int smem_bytes = Traits::kSmemBytes;
  const cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (error != cudaSuccess) return Status::from_cuda(error);
  const int len_q = static_cast<int>(params.len_q);
  const int len_kv = static_cast<int>(params.len_kv);
  const int64_t offset = clamp_causal_offset(params.causal_offset, params.len_q, params.len_kv);
  const dim3 grid(static_cast<unsigned>((len_q + Traits::kBlockM - 1) / Traits::kBlockM * params.splits),
                  static_cast<unsigned>(params.heads_q), static_cast<unsigned>(params.batch));
  kernel<<<grid, Traits::kThreads, smem_bytes, stream>>>(params, len_q, len_kv, static_cast<int>(offset),
                                                         static_cast<int>(params.heads_q / params.heads_kv));
  return Status::from_cuda(cudaGetLastError());
}

// The table entry (launchers.h) of one instance: run only on devices of compute capability 9.0.
template <int kHeadDim, typename Element>
AttentionForwardInstance forward_sm90_instance(DType dtype) {
  using Traits = ForwardSm90Traits<kHeadDim, Element>;
  AttentionForwardInstance instance;
  instance.head_dim = kHeadDim;
  instance.dtype = dtype;
  instance.arch = 90;
  instance.block_m = Traits::kBlockM;
  instance.block_n = Traits::kBlockN;
  instance.threads = Traits::kThreads;
  instance.smem_bytes = Traits::kSmemBytes;
  instance.launcher = &launch_attention_forward_sm90<kHeadDim, Element>;
  return instance;
}

}  // namespace attention
}  // namespace seqops
