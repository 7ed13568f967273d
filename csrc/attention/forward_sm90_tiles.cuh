// The tile types of the sm90a attention forward (forward_sm90_kernel.cuh), apart from the
// kernel so that a host-only program can check their layouts (tests/test_cuda_attention_host.py
// compiles tests/cuda_programs/sm90_forward_layouts.cu and runs it on the CPU).
//
// Three warpgroups per CTA: the first loads (one thread issues the TMA copies of Q once and
// of K and V tile by tile into a ring of kStages buffers), the other two compute, each on
// 64 of the 128 query rows. S = Q K^T is a wgmma with both operands in shared memory,
// O += P V one with P from registers (the accumulator of S rounded to the input dtype, no
// trip through shared memory) and V read transposed from shared memory. Tiles are
// 128 x 128 at head dims 64 and 128, in the 128-byte-swizzled K-major layout that both
// TMA writes and wgmma reads.
#pragma once

#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

namespace seqops {
namespace attention {

using namespace cute;

template <int kHeadDim_, typename Element_>
struct ForwardSm90Traits {
  using Element = Element_;  // cutlass::half_t or cutlass::bfloat16_t
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;  // queries per CTA, 64 per consumer warpgroup
  static constexpr int kBlockN = kHeadDim_ <= 128 ? 128 : 64;  // keys per tile (64 at head dim 256: registers)
  static constexpr int kStages = 2;    // K and V tiles in flight
  // Whether the softmax of one key tile runs while the tensor cores compute the last
  // tile's P V, which keeps S, P and O live at once: where that fits the 240 registers
  // setmaxnreg gives a consumer. ptxas (nvcc 13, sm_90a), with the warpgroups' turns:
  // no spill in the kernel for calls without attn_mask and dropout (kGeneral false) at
  // any head dim, nor in the general one at head dim 64 (S 64, P 32, O 32 registers a
  // thread); in the general one 48 bytes at 128 (S 64, P 32, O 64) and 52 at 256 (S 32,
  // P 16, O 128), where the mask's and dropout's code sits beside them.
  static constexpr bool overlaps_softmax(bool general) { return !general || kHeadDim_ == 64; }
  static constexpr int kConsumerWarpgroups = kBlockM / 64;
  static constexpr int kConsumerThreads = kConsumerWarpgroups * 128;
  static constexpr int kThreads = kConsumerThreads + 128;  // and the producer warpgroup, first
  static_assert(kHeadDim % 64 == 0, "shared-memory rows are 64 elements (128 bytes) wide");

  using Warpgroups = Layout<Shape<Int<kConsumerWarpgroups>, _1, _1>>;
  // S (M = queries, N = keys, K = head dim): Q and K both K-major in smem.
  using TiledMmaS = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<Int<kBlockM>, Int<kBlockN>, Int<kHeadDim>>>(),
      Warpgroups{}));
  // O (M = queries, N = head dim, K = keys): P from registers, V^T MN-major in smem.
  using TiledMmaO = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<Int<kBlockM>, Int<kHeadDim>, Int<kBlockN>>,
                           GMMA::Major::K, GMMA::Major::MN>(),
      Warpgroups{}));

  using SmemAtom = GMMA::Layout_K_SW128_Atom<Element>;  // 8 rows of 64 elements, 128-byte swizzle
  using SmemLayoutQ = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  using SmemLayoutKV = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kBlockN>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutKVStage = decltype(take<0, 2>(SmemLayoutKV{}));  // one buffer: what a TMA copy fills
  // V [keys, head dim, stage] seen as [head dim, keys, stage]: the B operand of O += P V.
  using SmemLayoutVt = decltype(composition(
      SmemLayoutKV{},
      make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockN>, Int<kStages>>{}, Step<_2, _1, _3>{})));

  static constexpr uint32_t kQBytes = kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kKVTileBytes = kBlockN * kHeadDim * sizeof(Element);
};

// A wgmma accumulator ((2 cols, 2 rows, N / 8 column groups), MMA_M, MMA_N) viewed as
// (rows, cols): a thread holds rows r and r + 8 of its warp's 16, columns 2q, 2q + 1 of
// every group of 8 (q = its lane in the quad), as mma.sync's accumulator does.
template <class AccLayout>
__host__ __device__ constexpr auto wgmma_accumulator_rows_cols(AccLayout layout) {
  static_assert(decltype(rank<0>(layout))::value == 3 && decltype(rank(layout))::value == 3);
  static_assert(decltype(size<0, 0>(layout))::value == 2 && decltype(size<0, 1>(layout))::value == 2);
  return make_layout(make_layout(get<0, 1>(layout), get<1>(layout)),
                     make_layout(get<0, 0>(layout), get<0, 2>(layout), get<2>(layout)));
}

// The same accumulator (of S) as the register A operand of O += P V, whose k-blocks of 16
// keys take ((2 cols, 2 rows, 2 column groups), MMA_M, keys / 16): two neighbouring
// column groups of the accumulator make one k-block.
template <class AccLayout>
__host__ __device__ constexpr auto wgmma_accumulator_as_a_operand(AccLayout layout) {
  static_assert(decltype(rank<0>(layout))::value == 3 && decltype(rank(layout))::value == 3);
  auto groups = logical_divide(coalesce(get<0, 2>(layout)), Layout<_2>{});  // (2, N / 16)
  return make_layout(make_layout(get<0, 0>(layout), get<0, 1>(layout), get<0>(groups)), get<1>(layout),
                     coalesce(make_layout(get<1>(groups), get<2>(layout))));
}

}  // namespace attention
}  // namespace seqops
