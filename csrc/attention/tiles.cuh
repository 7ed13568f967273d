// What the CuTe attention kernels (forward_kernel.cuh, backward_kernel.cuh) share: the
// tile types of one (head dim, dtype, warp count), and the register-level helpers: an mma
// accumulator seen as rows x columns or fed back as an A operand, its column pairs stored
// as one word, row-predicated gmem -> smem copies, the two smem-operand gemm loops, and
// the quad reductions.
//
// The mma is sm80's 16x8x16 (fp16/bf16 in, fp32 accumulate), warps stacked along M, so
// that a warp owns 16 whole rows of every accumulator: a row's values never leave its quad,
// and an accumulator of one gemm is the A operand of the next with no trip through smem.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include <type_traits>

namespace seqops {
namespace attention {

using namespace cute;

template <int kHeadDim_, typename Element_, int kWarps_>
struct TileTypes {
  using Element = Element_;  // cutlass::half_t or cutlass::bfloat16_t
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = kWarps * 32;
  static_assert(kHeadDim % 64 == 0, "smem rows are 64 elements wide");

  using MmaOp = std::conditional_t<std::is_same_v<Element, cutlass::half_t>, SM80_16x8x16_F32F16F16F32_TN,
                                   SM80_16x8x16_F32BF16BF16F32_TN>;
  // Warps stacked along M; N and K tiled by 16 so that the x4 ldmatrix fills two 8-wide
  // B atoms at once, and so that two neighbouring 16x8 accumulators form one 16x16 A tile.
  using TiledMma = TiledMMA<MMA_Atom<MmaOp>, Layout<Shape<Int<kWarps>, _1, _1>>, Tile<Int<16 * kWarps>, _16, _16>>;

  // 8 rows of 64 elements (128 bytes): the swizzle XORs the 16-byte chunk index with the
  // row, so the 8 rows one ldmatrix phase reads sit in 8 different bank groups.
  using SmemAtom = decltype(composition(Swizzle<3, 3, 3>{}, Layout<Shape<_8, _64>, Stride<_64, _1>>{}));
  // kRows rows of the head dim in smem (a Q, K, V or dO tile), and the same tile seen as
  // [head dim, rows]: the B operand of a product over the rows, read with transposing
  // ldmatrix (the Shape form, unswizzled, only sizes the register fragment).
  template <int kRows>
  using SmemRows = decltype(tile_to_shape(SmemAtom{}, Shape<Int<kRows>, Int<kHeadDim>>{}));
  template <int kRows>
  using SmemRowsTransposed =
      decltype(composition(SmemRows<kRows>{}, make_layout(Shape<Int<kHeadDim>, Int<kRows>>{}, GenRowMajor{})));
  template <int kRows>
  using SmemRowsTransposedShape = decltype(get_nonswizzle_portion(SmemRowsTransposed<kRows>{}));

  // gmem -> smem: 16 bytes (8 elements) per thread per copy, 8 threads per 64-wide row.
  using GmemThreads = Layout<Shape<Int<kThreads / 8>, _8>, Stride<_8, _1>>;
  using GmemTiledCopy = decltype(make_tiled_copy(Copy_Atom<SM80_CP_ASYNC_CACHEGLOBAL<uint128_t>, Element>{},
                                                 GmemThreads{}, Layout<Shape<_1, _8>>{}));
  static constexpr int kGmemRows = kThreads / 8;  // rows one tiled copy covers: tiles are multiples of it
  using SmemCopyAtom = Copy_Atom<SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = Copy_Atom<SM75_U16x8_LDSM_T, Element>;
};

// A [rows, head dim] tile of a row-major gmem tensor whose row starts `ptr` (row stride
// `row_stride`, head dim contiguous).
template <int kRows, int kHeadDim, class Element>
__device__ __forceinline__ auto gmem_rows(Element* ptr, int64_t row_stride) {
  return make_tensor(make_gmem_ptr(ptr), make_shape(Int<kRows>{}, Int<kHeadDim>{}), make_stride(row_stride, _1{}));
}

// The same smem tensor (or partition of one) in another stage of a multi-buffered tile:
// stages are whole tiles apart, a multiple of the swizzle's 512-element period, so the
// swizzled offsets carry over unchanged.
template <class SmemTensor>
__device__ __forceinline__ auto in_stage(SmemTensor const& t, int stage, int stage_elements) {
  return make_tensor(t.data() + stage * stage_elements, t.layout());
}

// Two adjacent 16-bit elements, stored as one aligned 4-byte word (the accumulators' column
// pairs: adjacent in the tile, an even column, so the word is aligned).
template <class Element>
struct alignas(2 * sizeof(Element)) ElementPair {
  Element first, second;
};

// An accumulator (4, MMA_M, MMA_N) of 16x8 atoms viewed as (rows, cols): each thread's
// 4 values of an atom are (2 cols) x (2 rows 8 apart).
template <class Layout>
__device__ __forceinline__ constexpr auto accumulator_rows_cols(Layout layout) {
  static_assert(decltype(size<0>(layout))::value == 4 && decltype(rank(layout))::value == 3);
  auto split = logical_divide(layout, Shape<_2>{});  // ((2 cols, 2 rows), MMA_M, MMA_N)
  return make_layout(make_layout(get<0, 1>(split), get<1>(split)), make_layout(get<0, 0>(split), get<2>(split)));
}

// The same accumulator as the A operand of a 16x8x16 mma: two neighbouring 16x8 tiles
// hold a thread's 8 values of one 16x16 A tile, in the register order the mma takes.
template <class Layout>
__device__ __forceinline__ constexpr auto accumulator_as_a_operand(Layout layout) {
  static_assert(decltype(size<0>(layout))::value == 4 && decltype(rank(layout))::value == 3);
  auto split = logical_divide(layout, Shape<Underscore, Underscore, _2>{});  // (4, MMA_M, (2, MMA_N / 2))
  return make_layout(make_layout(get<0>(split), get<2, 0>(split)), get<1>(split), get<2, 1>(split));
}

// Copies the rows of a (CPY, CPY_ROWS, CPY_COLS) partition whose row coordinate (from the
// identity partition `coords`) is below `rows`, and zero-fills the others.
template <class TiledCopy, class Src, class Dst, class Coords>
__device__ __forceinline__ void copy_rows_or_zero(TiledCopy const& tiled_copy, Src const& src, Dst& dst,
                                                  Coords const& coords, int rows) {
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    if (get<0>(coords(0, m, 0)) < rows) {
      CUTE_UNROLL
      for (int k = 0; k < size<2>(src); ++k) copy(tiled_copy, src(_, m, k), dst(_, m, k));
    } else {
      clear(dst(_, m, _));
    }
  }
}

// acc += A B^T with both operands in smem, read k-slice by k-slice into registers (the
// next slice's ldmatrix issued before this slice's mma).
template <class Acc, class FragA, class FragB, class SmemA, class SmemB, class Mma, class CopyA, class ThrCopyA,
          class CopyB, class ThrCopyB>
__device__ __forceinline__ void gemm_smem_smem(Acc& acc, FragA& rA, FragB& rB, SmemA const& sA, SmemB const& sB,
                                               Mma const& mma, CopyA const& copy_a, ThrCopyA const& thr_a,
                                               CopyB const& copy_b, ThrCopyB const& thr_b) {
  Tensor rA_view = thr_a.retile_D(rA);
  Tensor rB_view = thr_b.retile_D(rB);
  copy(copy_a, sA(_, _, _0{}), rA_view(_, _, _0{}));
  copy(copy_b, sB(_, _, _0{}), rB_view(_, _, _0{}));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(rA); ++k) {
    if (k + 1 < size<2>(rA)) {
      copy(copy_a, sA(_, _, k + 1), rA_view(_, _, k + 1));
      copy(copy_b, sB(_, _, k + 1), rB_view(_, _, k + 1));
    }
    gemm(mma, rA(_, _, k), rB(_, _, k), acc);
  }
}

// acc += A B^T with A already in registers, B in smem.
template <class Acc, class FragA, class FragB, class SmemB, class Mma, class CopyB, class ThrCopyB>
__device__ __forceinline__ void gemm_regs_smem(Acc& acc, FragA const& rA, FragB& rB, SmemB const& sB,
                                               Mma const& mma, CopyB const& copy_b, ThrCopyB const& thr_b) {
  Tensor rB_view = thr_b.retile_D(rB);
  copy(copy_b, sB(_, _, _0{}), rB_view(_, _, _0{}));
  CUTE_UNROLL
  for (int k = 0; k < size<2>(rA); ++k) {
    if (k + 1 < size<2>(rA)) copy(copy_b, sB(_, _, k + 1), rB_view(_, _, k + 1));
    gemm(mma, rA(_, _, k), rB(_, _, k), acc);
  }
}

// The 4 threads of a quad share the rows of an mma accumulator.
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Rounds an fp32 accumulator to the input dtype in a fragment of the same layout.
template <class Element, class Acc>
__device__ __forceinline__ auto rounded(Acc const& acc) {
  Tensor out = make_fragment_like<Element>(acc);
  CUTE_UNROLL
  for (int i = 0; i < size(acc); ++i) out(i) = static_cast<Element>(acc(i));
  return out;
}

}  // namespace attention
}  // namespace seqops
