// The attention forward for sm90a: TMA loads from a producer warpgroup, wgmma in two
// consumer warpgroups, one CTA per block of 128 queries of one (batch, head), looping over
// tiles of 128 keys with the online softmax of forward_steps.cuh (the sm80 kernel,
// forward_kernel.cuh, runs the same steps on mma.sync).
//
//   - The producer warpgroup gives back most of its registers (setmaxnreg) and one of its
//     threads issues every load: Q once, then K(n) and V(n) for each key tile, last tile
//     first, into a ring of kStages buffers (cutlass::PipelineTmaAsync: a full barrier the
//     TMA's bytes complete, an empty one the consumers release). TMA fills rows past L or
//     S with zeros, as the sm80 kernel's predicated copies do.
//   - The consumers take the registers given back. S = Q K(n)^T is one wgmma batch with
//     both operands read from 128-byte-swizzled shared memory; K(n)'s buffer is released
//     as soon as it completes, so that the producer refills it during the softmax. O += P V(n)
//     takes P from S's accumulator rounded in registers, V(n) transposed from shared memory.
//   - Within a warpgroup the tiles are pipelined by one, as FA3's intra-warpgroup overlap:
//     S(n) and then O += P(n+1) V(n+1) are issued together, and the softmax of S(n) runs
//     while the second is on the tensor cores (except where it would spill, with a mask
//     or dropout above head dim 64: Traits::overlaps_softmax; there the tiles go one
//     batch at a time).
//   - The two consumer warpgroups take turns issuing their wgmma batches (FA3's
//     ping-pong, with named barriers), so that one's softmax runs under the other's
//     matmuls.
//   - Key tiles are visited from the last one the block sees down to 0, so only the first
//     few need the elementwise mask; tiles wholly above the causal diagonal are not loaded.
//
// Compiled for sm_90a only: on other targets the kernel body is empty, and forward.cu
// launches it only on a device of compute capability 9.0.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <utility>

#include "attention/forward_sm90_tiles.cuh"  // first: cute/tensor.hpp before the TMA headers

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/pipeline/pipeline.hpp>

#include "attention/addressing.h"
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

// acc (+)= A B over the k-blocks of A and B as one wgmma batch of the warpgroup, issued
// and committed without waiting for it: the caller waits (warpgroup_wait<N>: at most N
// batches still in flight, completed in the order committed), then fences acc (and an A
// in registers) before touching them. kZeroInit starts acc from 0 instead of its
// contents. An A operand in registers (kAInRegisters; else a tensor of shared-memory
// descriptors) is fenced too, so that the compiler keeps its registers in place.
template <bool kZeroInit, bool kAInRegisters, class Mma, class FragA, class FragB, class Acc>
__device__ __forceinline__ void warpgroup_gemm_issue(Mma& mma, FragA& a, FragB const& b, Acc& acc) {
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
}

// The same batch, waited for before return.
template <bool kZeroInit, bool kAInRegisters, class Mma, class FragA, class FragB, class Acc>
__device__ __forceinline__ void warpgroup_gemm(Mma& mma, FragA& a, FragB const& b, Acc& acc) {
  warpgroup_gemm_issue<kZeroInit, kAInRegisters>(mma, a, b, acc);
  warpgroup_wait<0>();
  warpgroup_fence_operand(acc);
  if constexpr (kAInRegisters) warpgroup_fence_operand(a);
}

// Q, K or V of every (batch, head) as TMA sees it: (rows, head dim, heads, batch), the rows
// at least 1 (a TMA descriptor has no empty dimension; an empty K/V is never loaded), the
// strides tma_strides gives (forward.cu sends here only what tma_describable takes).
template <int kHeadDim, typename Element>
auto tma_view(const void* ptr, int64_t rows, int64_t heads, int64_t batch, const HeadStrides& given) {
  const HeadStrides strides = tma_strides(given, rows, heads, batch, kHeadDim);
  return make_tensor(make_gmem_ptr(static_cast<const Element*>(ptr)),
                     make_shape(static_cast<int>(rows > 0 ? rows : 1), Int<kHeadDim>{}, static_cast<int>(heads),
                                static_cast<int>(batch)),
                     make_stride(strides.row, _1{}, strides.head, strides.batch));
}

template <class Traits>
struct ForwardSm90Tma {
  using Element = typename Traits::Element;
  static auto q(const AttentionForwardParams& p) {
    return make_tma_copy(SM90_TMA_LOAD{}, tma_view<Traits::kHeadDim, Element>(p.q, p.len_q, p.heads_q, p.batch, p.q_strides),
                         typename Traits::SmemLayoutQ{});
  }
  static auto k(const AttentionForwardParams& p) {
    return make_tma_copy(SM90_TMA_LOAD{},
                         tma_view<Traits::kHeadDim, Element>(p.k, p.len_kv, p.heads_kv, p.batch, p.k_strides),
                         typename Traits::SmemLayoutKVStage{});
  }
  static auto v(const AttentionForwardParams& p) {
    return make_tma_copy(SM90_TMA_LOAD{},
                         tma_view<Traits::kHeadDim, Element>(p.v, p.len_kv, p.heads_kv, p.batch, p.v_strides),
                         typename Traits::SmemLayoutKVStage{});
  }
  using Q = decltype(q(std::declval<AttentionForwardParams>()));
  using K = decltype(k(std::declval<AttentionForwardParams>()));
  using V = decltype(v(std::declval<AttentionForwardParams>()));
};

template <class Traits>
struct ForwardSm90Args {
  AttentionForwardParams params;
  typename ForwardSm90Tma<Traits>::Q tma_q;
  typename ForwardSm90Tma<Traits>::K tma_k;
  typename ForwardSm90Tma<Traits>::V tma_v;
  int len_q, len_kv, causal_offset, group;  // checked and narrowed by the launcher, as the sm80 kernel's
};

template <class Traits>
struct ForwardSm90Smem {
  using Element = typename Traits::Element;
  using Pipeline = cutlass::PipelineTmaAsync<Traits::kStages>;
  alignas(1024) cute::array_aligned<Element, cosize_v<typename Traits::SmemLayoutQ>> q;
  alignas(1024) cute::array_aligned<Element, cosize_v<typename Traits::SmemLayoutKV>> k;
  alignas(1024) cute::array_aligned<Element, cosize_v<typename Traits::SmemLayoutKV>> v;
  alignas(16) cutlass::arch::ClusterTransactionBarrier q_full;
  typename Pipeline::SharedStorage k_pipeline;
  typename Pipeline::SharedStorage v_pipeline;
};

// The first of the two named barriers (cutlass::arch::NamedBarrier ids, past those CUTLASS
// reserves) the consumer warpgroups take turns at.
constexpr uint32_t kTurn = 0;

// grid (ceil(L / kBlockM) * splits, Hq, B), as the sm80 kernel. kGeneral: the kernel for
// calls with an attn_mask or dropout; without (the usual causal or full attention) the
// launcher runs the one that compiles neither in, whose registers leave room to overlap
// the softmax at every head dim (Traits::overlaps_softmax).
template <class Traits, bool kGeneral>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    attention_forward_sm90_kernel(const __grid_constant__ ForwardSm90Args<Traits> args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Element = typename Traits::Element;
  using Smem = ForwardSm90Smem<Traits>;
  using Pipeline = typename Smem::Pipeline;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;

  extern __shared__ __align__(1024) unsigned char smem_bytes[];
  Smem& smem = *reinterpret_cast<Smem*>(smem_bytes);

  const AttentionForwardParams& params = args.params;
  const int len_q = args.len_q, len_kv = args.len_kv, causal_offset = args.causal_offset;
  const int splits = static_cast<int>(params.splits);
  const int m_block = blockIdx.x / splits;
  const int split = blockIdx.x % splits;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int kv_head = head / args.group;
  const int m0 = m_block * kBlockM;
  const bool causal = params.causal;
  const bool producer = threadIdx.x < 128;

  const TileRange tiles =
      split_tiles(key_tiles(m_block, kBlockM, kBlockN, len_q, len_kv, causal, causal_offset), split, splits);

  Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});
  Tensor sVt = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutVt{});

  typename Pipeline::Params pipeline_params;
  pipeline_params.transaction_bytes = Traits::kKVTileBytes;
  pipeline_params.role = producer ? Pipeline::ThreadCategory::Producer : Pipeline::ThreadCategory::Consumer;
  pipeline_params.is_leader = threadIdx.x == 0;
  pipeline_params.num_consumers = Traits::kConsumerThreads;
  Pipeline k_pipeline(smem.k_pipeline, pipeline_params, Shape<_1, _1, _1>{});
  Pipeline v_pipeline(smem.v_pipeline, pipeline_params, Shape<_1, _1, _1>{});
  if (threadIdx.x == 0) smem.q_full.init(1);
  cutlass::arch::fence_barrier_init();
  __syncthreads();  // every barrier initialised before any thread waits on one

  if (producer) {
    cutlass::arch::warpgroup_reg_dealloc<24>();
    if (threadIdx.x != 0 || tiles.end <= tiles.begin) return;
    Tensor mQ = args.tma_q.get_tma_tensor(make_shape(max(len_q, 1), Int<kHeadDim>{}, int(params.heads_q), int(params.batch)));
    Tensor mK = args.tma_k.get_tma_tensor(make_shape(max(len_kv, 1), Int<kHeadDim>{}, int(params.heads_kv), int(params.batch)));
    Tensor mV = args.tma_v.get_tma_tensor(make_shape(max(len_kv, 1), Int<kHeadDim>{}, int(params.heads_kv), int(params.batch)));
    Tensor gQ = local_tile(mQ(_, _, head, batch), Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));
    Tensor gK = local_tile(mK(_, _, kv_head, batch), Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
    Tensor gV = local_tile(mV(_, _, kv_head, batch), Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));
    auto [tQgQ, tQsQ] = tma_partition(args.tma_q, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sQ), group_modes<0, 2>(gQ));
    auto [tKgK, tKsK] = tma_partition(args.tma_k, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sK), group_modes<0, 2>(gK));
    auto [tVgV, tVsV] = tma_partition(args.tma_v, Int<0>{}, Layout<_1>{}, group_modes<0, 2>(sV), group_modes<0, 2>(gV));

    smem.q_full.arrive_and_expect_tx(Traits::kQBytes);
    copy(args.tma_q.with(reinterpret_cast<typename cutlass::arch::ClusterTransactionBarrier::ValueType&>(smem.q_full)),
         tQgQ, tQsQ);
    auto state = cutlass::make_producer_start_state<Pipeline>();
    for (int n = tiles.end - 1; n >= tiles.begin; --n) {
      k_pipeline.producer_acquire(state);
      copy(args.tma_k.with(*k_pipeline.producer_get_barrier(state)), tKgK(_, n), tKsK(_, state.index()));
      v_pipeline.producer_acquire(state);
      copy(args.tma_v.with(*v_pipeline.producer_get_barrier(state)), tVgV(_, n), tVsV(_, state.index()));
      ++state;
    }
    return;
  }

  cutlass::arch::warpgroup_reg_alloc<240>();
  const int tid = threadIdx.x - 128;  // among the consumers
  Element* o_ptr = static_cast<Element*>(params.out) + batch * params.out_strides.batch +
                   head * params.out_strides.head;
  float* lse_ptr = params.lse + batch * params.lse_batch_stride + head * params.lse_head_stride;
  const MaskView mask = kGeneral ? mask_view(params.mask, batch, head) : MaskView{};

  typename Traits::TiledMmaS mma_s;
  typename Traits::TiledMmaO mma_o;
  auto thr_s = mma_s.get_thread_slice(tid);
  auto thr_o = mma_o.get_thread_slice(tid);
  Tensor tSrQ = thr_s.partition_fragment_A(sQ);   // smem descriptors (MMA, MMA_M, MMA_E)
  Tensor tSrK = thr_s.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_E, stage)
  Tensor tOrVt = thr_o.partition_fragment_B(sVt);  // (MMA, MMA_E, MMA_N, stage)
  Tensor acc_o = partition_fragment_C(mma_o, Shape<Int<kBlockM>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_E)

  // Each accumulator value's (row, col) in its tile: the masks' and the stores' positions.
  Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), wgmma_accumulator_rows_cols(tScS.layout()));
  Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tOcO_rc = make_tensor(tOcO.data(), wgmma_accumulator_rows_cols(tOcO.layout()));
  Tensor acc_o_rc = make_tensor(acc_o.data(), wgmma_accumulator_rows_cols(acc_o.layout()));

  const float scale_log2 = params.scale * 1.4426950408889634f;  // scores in base 2
  const bool dropout = kGeneral && params.dropout_p > 0.0f;
  const int32_t dropout_stream_id = dropout_stream(params.seed, int64_t(batch) * params.heads_q + head);

  // A block that sees no key loads nothing and writes its zeros and -inf below.
  using Rows = RowStatistics<decltype(size<0>(acc_o_rc))::value>;
  Rows rows;  // of the rows this thread holds
  clear(acc_o);
  const auto s_accumulator = [&] { return partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{}); };
  // S of tile n (in acc) to probabilities, O's rescale factors out.
  const auto softmax_of = [&](auto& acc, int n, float (&rescale)[Rows::kCount]) {
    const int n0 = n * kBlockN;
    Tensor s = make_tensor(acc.data(), wgmma_accumulator_rows_cols(acc.layout()));  // (rows, cols)
    scale_and_mask_scores(s, tScS_rc, scale_log2, mask, m0, n0, kBlockN, len_q, len_kv, causal, causal_offset);
    online_softmax_scores(s, rows, rescale);
    if (dropout) drop_probabilities(s, tScS_rc, m0, n0, len_kv, dropout_stream_id, params.dropout_p);
  };
  if (tiles.end > tiles.begin) smem.q_full.wait(0);
  cutlass::PipelineState<Traits::kStages> state;  // the stage of the tile whose P V is next

  // The two consumer warpgroups take turns issuing a tile's wgmma batches (FA3's
  // ping-pong): one's softmax then runs while the other's matmuls hold the tensor cores.
  // Named barrier kTurn + w is warpgroup w's turn: it syncs there (128 threads) and the
  // other warpgroup arrives there (128) when it hands the turn over. The second warpgroup
  // hands the first its first turn; each takes as many turns as the other (they walk the
  // same tiles), and the first takes one more at the end, so that every arrival is
  // matched by a sync before the CTA exits.
  const int warpgroup = tid / 128;  // among the consumers
  const auto take_turn = [&] { cutlass::arch::NamedBarrier::sync(Traits::kConsumerThreads, kTurn + warpgroup); };
  const auto pass_turn = [&] {
    cutlass::arch::NamedBarrier::arrive(Traits::kConsumerThreads, kTurn + 1 - warpgroup);
  };
  if (warpgroup == 1) pass_turn();

  if constexpr (Traits::overlaps_softmax(kGeneral)) {
    // The key tiles software-pipelined by one: while the tensor cores run S(n) = Q K(n)^T
    // and then O += P(n+1) V(n+1), the threads wait for S(n) alone (the older batch) and
    // compute its softmax meanwhile; O is rescaled to the new row max, and P(n) written
    // over P(n+1), only once that O += P V has completed. The first tile's S runs alone,
    // the last tile's P V after the loop. Each tile's S accumulator is a fresh one, so
    // that none of the last tile's is kept alive across the loop (the wgmma reads its
    // accumulator registers even when it zero-initialises them).
    Tensor p = make_fragment_like<Element>(s_accumulator());  // P of the tile whose P V is next
    Tensor tOrP = make_tensor(p.data(), wgmma_accumulator_as_a_operand(p.layout()));  // (MMA, MMA_M, keys / 16)
    const auto round_into_p = [&](auto const& acc) {
      CUTE_UNROLL
      for (int i = 0; i < size(acc); ++i) p(i) = static_cast<Element>(acc(i));
    };
    if (tiles.end > tiles.begin) {
      float rescale[Rows::kCount];
      Tensor acc_s = s_accumulator();
      k_pipeline.consumer_wait(state);
      warpgroup_gemm</*kZeroInit=*/true, /*kAInRegisters=*/false>(mma_s, tSrQ, tSrK(_, _, _, state.index()), acc_s);
      k_pipeline.consumer_release(state);
      softmax_of(acc_s, tiles.end - 1, rescale);  // O is 0: nothing to rescale
      round_into_p(acc_s);
    }
    CUTE_NO_UNROLL
    for (int n = tiles.end - 2; n >= tiles.begin; --n) {
      cutlass::PipelineState<Traits::kStages> next = state;
      ++next;  // tile n's stage
      float rescale[Rows::kCount];
      Tensor acc_s = s_accumulator();
      k_pipeline.consumer_wait(next);
      take_turn();
      warpgroup_gemm_issue</*kZeroInit=*/true, /*kAInRegisters=*/false>(mma_s, tSrQ, tSrK(_, _, _, next.index()),
                                                                        acc_s);
      v_pipeline.consumer_wait(state);
      warpgroup_gemm_issue</*kZeroInit=*/false, /*kAInRegisters=*/true>(mma_o, tOrP, tOrVt(_, _, _, state.index()),
                                                                        acc_o);
      pass_turn();
      warpgroup_wait<1>();  // S(n) done; P(n+1) V(n+1) may still run
      warpgroup_fence_operand(acc_s);
      k_pipeline.consumer_release(next);
      softmax_of(acc_s, n, rescale);
      warpgroup_wait<0>();  // P(n+1) V(n+1) done: O and p are free
      warpgroup_fence_operand(acc_o);
      warpgroup_fence_operand(tOrP);
      v_pipeline.consumer_release(state);
      rescale_rows(acc_o_rc, rescale);
      round_into_p(acc_s);
      state = next;
    }
    if (tiles.end > tiles.begin) {
      v_pipeline.consumer_wait(state);
      warpgroup_gemm</*kZeroInit=*/false, /*kAInRegisters=*/true>(mma_o, tOrP, tOrVt(_, _, _, state.index()), acc_o);
      v_pipeline.consumer_release(state);
    }
  } else {
    // One batch at a time: S(n), its softmax, O rescaled, O += P(n) V(n).
    CUTE_NO_UNROLL
    for (int n = tiles.end - 1; n >= tiles.begin; --n) {
      float rescale[Rows::kCount];
      Tensor acc_s = s_accumulator();
      k_pipeline.consumer_wait(state);
      take_turn();
      warpgroup_gemm_issue</*kZeroInit=*/true, /*kAInRegisters=*/false>(mma_s, tSrQ, tSrK(_, _, _, state.index()),
                                                                        acc_s);
      pass_turn();
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_s);
      k_pipeline.consumer_release(state);
      softmax_of(acc_s, n, rescale);
      rescale_rows(acc_o_rc, rescale);
      Tensor p = rounded<Element>(acc_s);
      Tensor tOrP = make_tensor(p.data(), wgmma_accumulator_as_a_operand(p.layout()));  // (MMA, MMA_M, keys / 16)
      v_pipeline.consumer_wait(state);
      warpgroup_gemm</*kZeroInit=*/false, /*kAInRegisters=*/true>(mma_o, tOrP, tOrVt(_, _, _, state.index()), acc_o);
      v_pipeline.consumer_release(state);
      ++state;
    }
  }

  if (warpgroup == 0) take_turn();  // the second warpgroup's last hand-over

  write_output_rows<Element, kHeadDim>(acc_o_rc, tOcO_rc, rows, params, o_ptr, lse_ptr, m0, len_q, batch, head,
                                      split);
#endif
}

// The host side of one instance: the TMA descriptors of Q, K and V (built per launch from
// the params' pointers and strides), the opt-in to its shared memory, the launch.
template <int kHeadDim, typename Element>
Status launch_attention_forward_sm90(const AttentionForwardParams& params, cudaStream_t stream) {
  using Traits = ForwardSm90Traits<kHeadDim, Element>;
  using Tma = ForwardSm90Tma<Traits>;
  const bool general = params.mask.kind != MaskKind::none || params.dropout_p > 0.0f;
  const auto kernel =
      general ? &attention_forward_sm90_kernel<Traits, true> : &attention_forward_sm90_kernel<Traits, false>;
  constexpr int smem_bytes = int(sizeof(ForwardSm90Smem<Traits>));
  const cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (error != cudaSuccess) return Status::from_cuda(error);
  const ForwardSm90Args<Traits> args{params,
                                     Tma::q(params),
                                     Tma::k(params),
                                     Tma::v(params),
                                     static_cast<int>(params.len_q),
                                     static_cast<int>(params.len_kv),
                                     static_cast<int>(clamp_causal_offset(params.causal_offset, params.len_q,
                                                                          params.len_kv)),
                                     static_cast<int>(params.heads_q / params.heads_kv)};
  const dim3 grid(static_cast<unsigned>((params.len_q + Traits::kBlockM - 1) / Traits::kBlockM * params.splits),
                  static_cast<unsigned>(params.heads_q), static_cast<unsigned>(params.batch));
  kernel<<<grid, Traits::kThreads, smem_bytes, stream>>>(args);
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
  instance.smem_bytes = int(sizeof(ForwardSm90Smem<Traits>));
  instance.launcher = &launch_attention_forward_sm90<kHeadDim, Element>;
  return instance;
}

}  // namespace attention
}  // namespace seqops
