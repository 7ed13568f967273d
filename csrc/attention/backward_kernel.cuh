// The attention backward in CuTe for sm80 (sm90 runs the same mma.sync and cp.async), in
// two kernels that recompute the probabilities from the forward's logsumexp, as
// flash-attention 2 does, but with no atomics: every output element is summed by one CTA
// in a fixed order, so the gradients are the same bits from run to run.
//
//   - dK/dV kernel, grid (ceil(S / kBlockN), Hkv, B): a CTA holds kBlockN keys and their
//     values in smem and dK, dV in registers, and walks the query tiles that see them, for
//     every query head of its GQA group in turn (so a group's sum needs no second pass):
//       S^T = K Q^T,  dP^T = V dO^T,  P^T = exp2(S^T * scale log2 e - lse log2 e),
//       dS^T = P^T (dP^T - delta),  dV += P^T dO,  dK += dS^T Q.
//     Computing the transposes puts keys on the mma's M, where a warp owns whole rows, so
//     P^T and dS^T go from accumulators to A operands in registers, as P does in the
//     forward; Q and dO (with their lse and delta) are double-buffered in smem.
//   - dQ kernel, grid (ceil(L / kBlockM), Hq, B): a CTA holds kBlockM queries, their dO,
//     lse and delta, and walks the key tiles they see (the forward's schedule):
//       S = Q K^T,  dP = dO V^T,  dS = P (dP - delta),  dQ += dS K,
//     and for a mask's gradient it writes dS out (params.dscores);
//     K and V are double-buffered.
//   That is seven products per (query, key) tile where flash-attention's atomic dQ takes
//   five: the price of determinism without a dQ workspace in fp32.
//   - ordered dQ (the dK/dV kernel with kOrderedDq, the backend's "ordered_dq" variant):
//     five products. The dK/dV kernel also writes dS^T to smem and takes
//       dQ_part = dS K  (on a second mma with queries on M),
//     then adds dQ_part into an fp32 [B, Hq, L, E] workspace (params.dq_accum) in key-block
//     order: a per-(batch, head, query tile) counter (params.dq_turns) says whose turn it
//     is (per column block too at head dim 256, whose two CTAs a key block compute the
//     same dS and add a column half of dQ each, 64 columns at a time), and key block n
//     waits for turn n (schedule.h, dq_turn). Every element gets its sums in one order,
//     so the bits repeat from run to run; the host scales and rounds
//     the workspace into dq. A CTA works as the key block of the ticket it takes when it
//     starts (common/arrival.cuh), not of its blockIdx, so it waits only for CTAs that
//     started before it and the waits end whatever order CTAs are started in. A wait is
//     bounded all the same: a turn that never comes (a bug) sets the poison word, a float
//     NaN the host adds to all of dq (params.h), so that it shows, never a wrong dQ.
//   Both walk their query tiles from the last down and the heads of a GQA group inside
//   each tile, so that neighbouring key blocks reach a tile together and take their turns
//   there one after the other (key blocks further right start fewer tiles down when
//   causal, and ascending tiles would have them wait for the left blocks' whole walk).
//   - delta = rowsum(dO * O) comes first, from backward.cu's plain kernel.
// Rows past L or S are zero-filled; a query row past L or one that sees no key (lse -inf)
// gets lse +inf here, so its probabilities are exp2(-inf) = 0 and it adds nothing.
// Compiled only through csrc/attention/instances/backward_*.cu, which register their
// launcher in backward.cu's table.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>

#include "attention/launchers.h"
#include "attention/dropout.h"
#include "attention/mask.cuh"
#include "attention/params.h"
#include "attention/schedule.h"
#include "attention/tiles.cuh"
#include "common/arrival.cuh"
#include "common/status.h"

namespace seqops {
namespace attention {

constexpr float kLog2e = 1.4426950408889634f;
// How often a key block polls for its turn to add dQ (ordered dQ) before it gives up and
// poisons dq: about a second, far past any wait the tickets allow (the blocks before it at
// one query tile, each an add of its part).
constexpr int kMaxTurnPolls = 1 << 20;

template <int kHeadDim_, typename Element_>
struct BackwardTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;

  // dK/dV: 16 keys a warp. A thread holds dK and dV for kAccColumns of the head dim (2 x 16
  // x kAccColumns / 32 fp32: 64 or 128) and S^T, dP^T (2 x 16 x kQueryTile / 32: 64, or 32
  // from head dim 128, whose tiles of 32 queries keep it under 255 registers). Past head
  // dim 128 the columns are split: a CTA per (key block, block of 128 columns), each
  // computing S^T and dP^T over the whole head dim (so head dim 256 takes them twice) and
  // dK, dV for its columns; 4 warps there, so that K, V, Q and dO fit in 128 KB of smem.
  struct KeyValue : TileTypes<kHeadDim_, Element_, kHeadDim_ == 128 ? 8 : 4> {
    using Base = TileTypes<kHeadDim_, Element_, kHeadDim_ == 128 ? 8 : 4>;
    static constexpr int kBlockN = 16 * Base::kWarps;       // keys per CTA: 64, or 128 at head dim 128
    static constexpr int kBlockM = kHeadDim_ <= 64 ? 64 : 32;  // queries per tile
    static constexpr int kStages = 2;                         // Q, dO, lse and delta buffers
    static constexpr int kAccColumns = kHeadDim_ <= 128 ? kHeadDim_ : 128;  // dK, dV columns a CTA
    static constexpr int kColumnSplit = kHeadDim_ / kAccColumns;           // CTAs a key block
    static_assert(kHeadDim_ % kAccColumns == 0);
    // A block of kAccColumns columns of a Q or dO stage, transposed ([columns, queries]):
    // the stage's layout restricted to those columns, whose elements start
    // kColumnBlockElements x the block's index in (the swizzle's 64-column atoms are laid
    // column block after column block; tests/cuda_programs/backward_layouts.cu checks it).
    using Columns = TileTypes<kAccColumns, Element_, Base::kWarps>;
    static constexpr int kColumnBlockElements = kBlockM * kAccColumns;
    using SmemLayoutKV = typename Base::template SmemRows<kBlockN>;
    using SmemLayoutQ = typename Base::template SmemRows<kBlockM>;  // Q or dO, one stage
    using SmemLayoutQt = typename Columns::template SmemRowsTransposed<kBlockM>;
    using SmemLayoutQtShape = typename Columns::template SmemRowsTransposedShape<kBlockM>;
    static constexpr int kStageElements = int(cosize(SmemLayoutQ{}));
    static constexpr int kSmemBytes = int(2 * cosize(SmemLayoutKV{}) + 2 * kStages * kStageElements) *
                                          int(sizeof(Element_)) +
                                      2 * kStages * kBlockM * int(sizeof(float));
    static_assert(kBlockM % Base::kGmemRows == 0 && kBlockN % Base::kGmemRows == 0);

    // Ordered dQ: dS^T [keys, queries] in smem after lse and delta (rows of kBlockM
    // elements, swizzled as 8-row atoms), read back as dS [queries, keys] with transposing
    // ldmatrix: the A operand of dQ_part = dS K, whose mma puts kBlockM / 16 warps on the
    // queries and the others along the head dim (16 columns a warp, so that an x4 ldmatrix
    // fills two 8-wide B atoms); K^T is the B operand, read from sK transposed.
    static constexpr int kDqWarpsM = kBlockM / 16;
    static_assert(Base::kWarps % kDqWarpsM == 0);
    using DqTiledMma = TiledMMA<MMA_Atom<typename Base::MmaOp>,
                                Layout<Shape<Int<kDqWarpsM>, Int<Base::kWarps / kDqWarpsM>, _1>>,
                                Tile<Int<kBlockM>, Int<16 * (Base::kWarps / kDqWarpsM)>, _16>>;
    using SmemAtomDst = decltype(composition(Swizzle<kBlockM == 32 ? 2 : 3, 3, 3>{},
                                             Layout<Shape<_8, Int<kBlockM>>, Stride<Int<kBlockM>, _1>>{}));
    using SmemLayoutDst = decltype(tile_to_shape(SmemAtomDst{}, Shape<Int<kBlockN>, Int<kBlockM>>{}));
    using SmemLayoutDs =
        decltype(composition(SmemLayoutDst{}, make_layout(Shape<Int<kBlockM>, Int<kBlockN>>{}, GenRowMajor{})));
    using SmemLayoutDsShape = decltype(get_nonswizzle_portion(SmemLayoutDs{}));
    // dQ's part is taken kDqColumns columns at a time (64 past head dim 128, where a whole
    // column block's accumulator would spill), each from that block of K^T: its columns of
    // sK (the swizzle's 64-column atoms are laid block after block, so a block of kDqColumns
    // starts kBlockN x kDqColumns elements on).
    static constexpr int kDqColumns = kHeadDim_ <= 128 ? kAccColumns : 64;
    using DqColumns = TileTypes<kDqColumns, Element_, Base::kWarps>;
    using SmemLayoutKt = typename DqColumns::template SmemRowsTransposed<kBlockN>;
    using SmemLayoutKtShape = typename DqColumns::template SmemRowsTransposedShape<kBlockN>;
    static constexpr int kKColumnBlockElements = kBlockN * kDqColumns;
    static constexpr int kDsOffsetBytes = kSmemBytes;
    static_assert(kDsOffsetBytes % 128 == 0);
    static constexpr int kOrderedDqSmemBytes = kSmemBytes + kBlockN * kBlockM * int(sizeof(Element_));
  };

  // dQ: 16 queries a warp, as the forward at head dim 128; key tiles of 64. A thread holds
  // dQ (16 x E / 32: 32, 64 or 128 fp32) and S, dP (2 x 16 x kBlockN / 32: 64, or 32 at
  // head dim 256, whose key tiles are halved as the sm80 forward's are).
  struct Query : TileTypes<kHeadDim_, Element_, kHeadDim_ == 128 ? 8 : 4> {
    using Base = TileTypes<kHeadDim_, Element_, kHeadDim_ == 128 ? 8 : 4>;
    static constexpr int kBlockM = 16 * Base::kWarps;  // queries per CTA
    static constexpr int kBlockN = kHeadDim_ <= 128 ? 64 : 32;  // keys per tile
    static constexpr int kStages = 2;                  // K and V buffers
    using SmemLayoutQ = typename Base::template SmemRows<kBlockM>;  // Q or dO
    using SmemLayoutKV = typename Base::template SmemRows<kBlockN>;  // K or V, one stage
    using SmemLayoutKt = typename Base::template SmemRowsTransposed<kBlockN>;
    using SmemLayoutKtShape = typename Base::template SmemRowsTransposedShape<kBlockN>;
    static constexpr int kStageElements = int(cosize(SmemLayoutKV{}));
    static constexpr int kSmemBytes =
        int(2 * cosize(SmemLayoutQ{}) + 2 * kStages * kStageElements) * int(sizeof(Element_));
    static_assert(kBlockM % Base::kGmemRows == 0 && kBlockN % Base::kGmemRows == 0);
  };
};

// The pointer to row 0 of (batch, head) in a [B, H, rows, E] tensor.
template <class Element>
__device__ __forceinline__ Element* head_rows(Element* base, const HeadStrides& strides, int batch, int head) {
  return base + batch * strides.batch + head * strides.head;
}

// Writes the rows below `rows` of an fp32 accumulator tile (viewed rows x cols, with each
// value's tile position in `coords`) times `scale`, column pairs as one 4-byte store (the
// pair is adjacent in the accumulator; rows start 16-byte aligned, see the launcher checks).
template <class Element, class Acc, class Coords>
__device__ __forceinline__ void store_rows(Acc const& acc_rc, Coords const& coords_rc, Element* tile,
                                           int64_t row_stride, int rows, float scale) {
  using Pair = ElementPair<Element>;
  CUTE_UNROLL
  for (int r = 0; r < size<0>(acc_rc); ++r) {
    const int row = get<0>(coords_rc(r, 0));
    if (row < rows) {
      Element* out_row = tile + row * row_stride;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(acc_rc); c += 2) {
        const Pair pair{static_cast<Element>(acc_rc(r, c) * scale),
                               static_cast<Element>(acc_rc(r, c + 1) * scale)};
        *reinterpret_cast<Pair*>(out_row + get<1>(coords_rc(r, c))) = pair;
      }
    }
  }
}

// Writes a rounded (keys, queries) accumulator tile into smem at its (key, query), column
// pairs as one 4-byte store (the swizzle moves 8-element chunks, so a pair stays together).
template <class Frag, class Coords, class SmemTensor>
__device__ __forceinline__ void write_scores_transposed(Frag const& frag, Coords const& coords_rc, SmemTensor& smem) {
  using Element = typename SmemTensor::value_type;
  using Pair = ElementPair<Element>;
  Tensor rc = make_tensor(frag.data(), accumulator_rows_cols(frag.layout()));
  CUTE_UNROLL
  for (int r = 0; r < size<0>(rc); ++r) {
    CUTE_UNROLL
    for (int c = 0; c < size<1>(rc); c += 2) {
      const auto at = smem.data() + smem.layout()(get<0>(coords_rc(r, c)), get<1>(coords_rc(r, c)));
      *reinterpret_cast<Pair*>(raw_pointer_cast(at)) = Pair{rc(r, c), rc(r, c + 1)};
    }
  }
}

// A row's lse in base 2 for the recomputation: +inf for a row past L or one that sees no
// key, whose probabilities are then all exp2(-inf) = 0 (and never exp2(-inf - -inf)).
__device__ __forceinline__ float lse_log2_or_inf(const float* lse, int row, int len_q) {
  if (row >= len_q) return INFINITY;
  const float value = lse[row];
  return value == -INFINITY ? INFINITY : value * kLog2e;
}

// grid (ceil(S / kBlockN) x kColumnSplit, Hkv, B): blockIdx.x is key block x kColumnSplit
// + the block of dK and dV's columns. len_q, len_kv, causal_offset and group (Hq / Hkv) come
// checked and narrowed to int by the launcher, the offset clamped to [-L, S]. kOrderedDq:
// dQ too, added into params.dq_accum in key-block order (the header comment).
template <class Traits, bool kOrderedDq>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    attention_backward_kv_kernel(const AttentionBackwardParams params, int len_q, int len_kv, int causal_offset,
                                 int group) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStageElements = Traits::kStageElements;

  extern __shared__ __align__(128) unsigned char smem[];

  constexpr int kAccColumns = Traits::kAccColumns;
  constexpr int kDqColumns = Traits::kDqColumns;
  int n_block = blockIdx.x / Traits::kColumnSplit;
  int column_block = blockIdx.x % Traits::kColumnSplit;  // of dK, dV's (and with ordered dQ, dQ's) columns
  int kv_head = blockIdx.y;
  int batch = blockIdx.z;
  if constexpr (kOrderedDq) {  // the key block, head and batch of this CTA's ticket, in blockIdx's order
    const int ticket = take_ticket(params.dq_turns);
    n_block = (ticket % gridDim.x) / Traits::kColumnSplit;
    column_block = ticket % Traits::kColumnSplit;
    kv_head = (ticket / gridDim.x) % gridDim.y;
    batch = ticket / (gridDim.x * gridDim.y);
  }
  const int tid = threadIdx.x;
  const int n0 = n_block * kBlockN;
  const bool causal = params.causal;

  const TileRange tiles = query_tiles(n_block, kBlockN, kBlockM, len_q, causal, causal_offset);
  const int tiles_per_head = tiles.end > tiles.begin ? tiles.end - tiles.begin : 0;
  const int steps = tiles_per_head * group;  // (query head of the group, query tile) pairs

  const Element* k_ptr = head_rows(static_cast<const Element*>(params.k), params.k_strides, batch, kv_head);
  const Element* v_ptr = head_rows(static_cast<const Element*>(params.v), params.v_strides, batch, kv_head);

  // smem: K, V, then kStages x (Q, dO), then kStages x (lse log2, delta) in fp32.
  Tensor sK = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Traits::SmemLayoutKV{});
  Tensor sV = make_tensor(sK.data() + size(sK), typename Traits::SmemLayoutKV{});
  Tensor sQ = make_tensor(sV.data() + size(sV), typename Traits::SmemLayoutQ{});  // stage 0; stage s at + s * 2 * kStageElements
  Tensor sdO = make_tensor(sQ.data() + kStageElements, typename Traits::SmemLayoutQ{});
  Tensor sQt = make_tensor(sQ.data() + column_block * Traits::kColumnBlockElements, typename Traits::SmemLayoutQt{});
  Tensor sdOt = make_tensor(sdO.data() + column_block * Traits::kColumnBlockElements, typename Traits::SmemLayoutQt{});
  Tensor sQtShape = make_tensor(sQ.data(), typename Traits::SmemLayoutQtShape{});
  float* s_lse = reinterpret_cast<float*>(smem + (2 * size(sK) + 2 * Traits::kStages * kStageElements) *
                                                     sizeof(Element));  // [stage][kBlockM]
  float* s_delta = s_lse + Traits::kStages * kBlockM;
  constexpr int kStageStride = 2 * kStageElements;  // elements from one stage's Q to the next's

  typename Traits::GmemTiledCopy gmem_copy;
  auto gmem_thr = gmem_copy.get_thread_slice(tid);
  Tensor tKsK = gmem_thr.partition_D(sK);
  Tensor tVsV = gmem_thr.partition_D(sV);
  Tensor tQsQ = gmem_thr.partition_D(sQ);
  Tensor tdOsdO = gmem_thr.partition_D(sdO);
  Tensor tKVcKV = gmem_thr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  Tensor tQcQ = gmem_thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  Tensor tSrK = thr_mma.partition_fragment_A(sK);           // (MMA, MMA_N, MMA_E): keys on the mma's M
  Tensor tSrQ = thr_mma.partition_fragment_B(sQ);           // (MMA, MMA_M, MMA_E)
  Tensor tdPrV = thr_mma.partition_fragment_A(sV);
  Tensor tdPrdO = thr_mma.partition_fragment_B(sdO);
  Tensor tdVrdOt = thr_mma.partition_fragment_B(sQtShape);  // (MMA, MMA_E, MMA_M): dO^T (and Q^T) as B
  Tensor tdKrQt = thr_mma.partition_fragment_B(sQtShape);
  Tensor acc_dk = partition_fragment_C(mma, Shape<Int<kBlockN>, Int<kAccColumns>>{});  // (MMA, MMA_N, MMA_E)
  Tensor acc_dv = partition_fragment_C(mma, Shape<Int<kBlockN>, Int<kAccColumns>>{});
  clear(acc_dk);
  clear(acc_dv);

  auto smem_copy_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma);
  auto smem_thr_a = smem_copy_a.get_thread_slice(tid);
  Tensor tSsK = smem_thr_a.partition_S(sK);
  Tensor tdPsV = smem_thr_a.partition_S(sV);
  auto smem_copy_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma);
  auto smem_thr_b = smem_copy_b.get_thread_slice(tid);
  Tensor tSsQ = smem_thr_b.partition_S(sQ);
  Tensor tdPsdO = smem_thr_b.partition_S(sdO);
  auto smem_copy_bt = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma);
  auto smem_thr_bt = smem_copy_bt.get_thread_slice(tid);
  Tensor tdVsdOt = smem_thr_bt.partition_S(sdOt);
  Tensor tdKsQt = smem_thr_bt.partition_S(sQt);

  // Each S^T value's (key, query) in its tile, and each dK/dV value's (key, column).
  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kBlockM>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), accumulator_rows_cols(tScS.layout()));
  Tensor tKcK = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kAccColumns>>{}));
  Tensor tKcK_rc = make_tensor(tKcK.data(), accumulator_rows_cols(tKcK.layout()));

  // Ordered dQ: dS^T in smem past lse and delta, read as dS (queries, keys) for dQ_part =
  // dS K on dq_mma; each dQ_part value's (query, column) in its tile. Unused without.
  Tensor sDst = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem + Traits::kDsOffsetBytes)),
                            typename Traits::SmemLayoutDst{});
  Tensor sDs = make_tensor(sDst.data(), typename Traits::SmemLayoutDs{});
  Tensor sDsShape = make_tensor(sDst.data(), typename Traits::SmemLayoutDsShape{});
  // K^T of this CTA's first kDqColumns columns of dQ (the next ones kKColumnBlockElements on).
  Tensor sKt = make_tensor(sK.data() + column_block * (kAccColumns / kDqColumns) * Traits::kKColumnBlockElements,
                           typename Traits::SmemLayoutKt{});
  Tensor sKtShape = make_tensor(sK.data(), typename Traits::SmemLayoutKtShape{});
  typename Traits::DqTiledMma dq_mma;
  auto dq_thr_mma = dq_mma.get_thread_slice(tid);
  Tensor tdQrdS = dq_thr_mma.partition_fragment_A(sDsShape);  // (MMA, MMA_M, MMA_N): dS as A
  Tensor tdQrKt = dq_thr_mma.partition_fragment_B(sKtShape);  // (MMA, MMA_E, MMA_N): K^T as B
  auto dq_copy_a = make_tiled_copy_A(typename Traits::SmemCopyAtomTransposed{}, dq_mma);
  auto dq_thr_a = dq_copy_a.get_thread_slice(tid);
  Tensor tdQsdS = dq_thr_a.partition_S(sDs);
  auto dq_copy_b = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, dq_mma);
  auto dq_thr_b = dq_copy_b.get_thread_slice(tid);
  Tensor tdQsKt = dq_thr_b.partition_S(sKt);
  Tensor tDQcDQ = dq_thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kDqColumns>>{}));
  Tensor tDQcDQ_rc = make_tensor(tDQcDQ.data(), accumulator_rows_cols(tDQcDQ.layout()));
  const int dq_tiles = (len_q + kBlockM - 1) / kBlockM;  // query tiles per (batch, head)

  // Step t visits query tile step_tile(t) of query head step_head(t): tiles from the last
  // down, the group's heads inside each (the header comment says why).
  const auto step_tile = [&](int step) { return tiles.end - 1 - step / group; };
  const auto step_head = [&](int step) { return kv_head * group + step % group; };

  // Step t's query head and tile, into stage t % 2: Q and dO by cp.async (rows past L
  // zero-filled), lse and delta by plain loads.
  const auto load_step = [&](int step, int stage) {
    const int head = step_head(step);
    const int m0 = step_tile(step) * kBlockM;
    const Element* q_tile =
        head_rows(static_cast<const Element*>(params.q), params.q_strides, batch, head) + m0 * params.q_strides.row;
    const Element* do_tile = head_rows(static_cast<const Element*>(params.grad_out), params.grad_out_strides, batch,
                                       head) + m0 * params.grad_out_strides.row;
    Tensor tQgQ = gmem_thr.partition_S(gmem_rows<kBlockM, kHeadDim>(q_tile, params.q_strides.row));
    Tensor tdOgdO = gmem_thr.partition_S(gmem_rows<kBlockM, kHeadDim>(do_tile, params.grad_out_strides.row));
    Tensor q_dst = in_stage(tQsQ, stage, kStageStride);
    Tensor do_dst = in_stage(tdOsdO, stage, kStageStride);
    copy_rows_or_zero(gmem_copy, tQgQ, q_dst, tQcQ, len_q - m0);
    copy_rows_or_zero(gmem_copy, tdOgdO, do_dst, tQcQ, len_q - m0);
    if (tid < kBlockM) {
      const float* lse = params.lse + batch * params.lse_batch_stride + head * params.lse_head_stride;
      const float* delta = params.delta + (batch * params.heads_q + head) * len_q;
      const int row = m0 + tid;
      s_lse[stage * kBlockM + tid] = lse_log2_or_inf(lse, row, len_q);
      s_delta[stage * kBlockM + tid] = row < len_q ? delta[row] : 0.0f;
    }
  };

  // A key block no query sees (causal) loads nothing and writes zeros: no copy is left in
  // flight at exit.
  if (steps > 0) {
    copy_rows_or_zero(gmem_copy,
                      gmem_thr.partition_S(gmem_rows<kBlockN, kHeadDim>(k_ptr + n0 * params.k_strides.row,
                                                                        params.k_strides.row)),
                      tKsK, tKVcKV, len_kv - n0);
    copy_rows_or_zero(gmem_copy,
                      gmem_thr.partition_S(gmem_rows<kBlockN, kHeadDim>(v_ptr + n0 * params.v_strides.row,
                                                                        params.v_strides.row)),
                      tVsV, tKVcKV, len_kv - n0);
    cp_async_fence();
    load_step(0, 0);
    cp_async_fence();
  }

  const float scale_log2 = params.scale * kLog2e;
  const bool dropout = params.dropout_p > 0.0f;
  const float keep_scale = dropout ? 1.0f / (1.0f - params.dropout_p) : 1.0f;

  CUTE_NO_UNROLL
  for (int step = 0; step < steps; ++step) {
    const int stage = step % 2;
    if (step + 1 < steps) {
      load_step(step + 1, stage ^ 1);  // that stage was last read in step - 1, which ended in a barrier
      cp_async_fence();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this step's Q, dO, lse and delta (and K, V) landed for all

    const int m_tile = step_tile(step);
    const int m0 = m_tile * kBlockM;
    const int head = step_head(step);
    const MaskView mask = mask_view(params.mask, batch, head);
    const int32_t dropout_stream_id = dropout_stream(params.seed, int64_t(batch) * params.heads_q + head);
    const float* stage_lse = s_lse + stage * kBlockM;
    const float* stage_delta = s_delta + stage * kBlockM;

    Tensor acc_st = partition_fragment_C(mma, Shape<Int<kBlockN>, Int<kBlockM>>{});  // S^T: (keys, queries)
    clear(acc_st);
    gemm_smem_smem(acc_st, tSrK, tSrQ, tSsK, in_stage(tSsQ, stage, kStageStride), mma, smem_copy_a, smem_thr_a,
                   smem_copy_b, smem_thr_b);
    Tensor acc_dpt = partition_fragment_C(mma, Shape<Int<kBlockN>, Int<kBlockM>>{});  // dP^T
    clear(acc_dpt);
    gemm_smem_smem(acc_dpt, tdPrV, tdPrdO, tdPsV, in_stage(tdPsdO, stage, kStageStride), mma, smem_copy_a,
                   smem_thr_a, smem_copy_b, smem_thr_b);

    Tensor st = make_tensor(acc_st.data(), accumulator_rows_cols(acc_st.layout()));    // (keys, queries)
    Tensor dpt = make_tensor(acc_dpt.data(), accumulator_rows_cols(acc_dpt.layout()));
    const bool needs_mask = tile_needs_mask(m0, n0, kBlockN, len_kv, causal, causal_offset);
    CUTE_UNROLL
    for (int r = 0; r < size<0>(st); ++r) {
      const int key = n0 + get<0>(tScS_rc(r, 0));
      CUTE_UNROLL
      for (int c = 0; c < size<1>(st); ++c) {
        const int col = get<1>(tScS_rc(r, c));
        const int query = m0 + col;
        float score = st(r, c) * scale_log2;
        if (mask.present() && key < len_kv && query < len_q) score += mask.bias_log2(query, key);
        float p = exp2f(score - stage_lse[col]);
        if (needs_mask && (key >= len_kv || (causal && key > query + causal_offset))) p = 0.0f;
        float dp = dpt(r, c);
        if (dropout) {  // the forward's draw: P^T as it multiplied V, and dP^T through the same mask
          const bool keep = dropout_uniform(dropout_stream_id, int64_t(query) * len_kv + key) >= params.dropout_p;
          st(r, c) = keep ? p * keep_scale : 0.0f;
          dp = keep ? dp * keep_scale : 0.0f;
        } else {
          st(r, c) = p;
        }
        dpt(r, c) = p * (dp - stage_delta[col]);
      }
    }

    // dV += P^T dO and dK += dS^T Q, the rounded accumulators as A operands.
    Tensor pt = rounded<Element>(acc_st);
    gemm_regs_smem(acc_dv, make_tensor(pt.data(), accumulator_as_a_operand(pt.layout())), tdVrdOt,
                   in_stage(tdVsdOt, stage, kStageStride), mma, smem_copy_bt, smem_thr_bt);
    Tensor dst = rounded<Element>(acc_dpt);
    if constexpr (kOrderedDq) {
      write_scores_transposed(dst, tScS_rc, sDst);
      // A float mask's gradient: dS^T in fp32, [S, L] a head (params.h), by one CTA a key block.
      if (params.dscores != nullptr && column_block == 0) {
        CUTE_UNROLL
        for (int r = 0; r < size<0>(dpt); ++r) {
          const int key = n0 + get<0>(tScS_rc(r, 0));
          if (key < len_kv) {
            float* dscores_row = params.dscores + ((int64_t(batch) * params.heads_q + head) * len_kv + key) * len_q;
            CUTE_UNROLL
            for (int c = 0; c < size<1>(dpt); ++c) {
              const int query = m0 + get<1>(tScS_rc(r, c));
              if (query < len_q) dscores_row[query] = dpt(r, c);
            }
          }
        }
      }
    }
    gemm_regs_smem(acc_dk, make_tensor(dst.data(), accumulator_as_a_operand(dst.layout())), tdKrQt,
                   in_stage(tdKsQt, stage, kStageStride), mma, smem_copy_bt, smem_thr_bt);
    if constexpr (kOrderedDq) {
      __syncthreads();  // dS^T is in smem for all
      const int64_t batch_head = int64_t(batch) * params.heads_q + head;
      // Past the ticket and the poison: a counter per (batch, head, query tile, column block).
      int* turn = params.dq_turns + 2 + (batch_head * dq_tiles + m_tile) * Traits::kColumnSplit + column_block;
      float* dq_rows = params.dq_accum + (batch_head * len_q + m0) * kHeadDim + column_block * kAccColumns;
      CUTE_UNROLL
      for (int part = 0; part < kAccColumns / kDqColumns; ++part) {  // the turn is taken before the first add
        Tensor acc_dq = partition_fragment_C(dq_mma, Shape<Int<kBlockM>, Int<kDqColumns>>{});
        clear(acc_dq);
        gemm_smem_smem(acc_dq, tdQrdS, tdQrKt, tdQsdS, in_stage(tdQsKt, part, Traits::kKColumnBlockElements), dq_mma,
                       dq_copy_a, dq_thr_a, dq_copy_b, dq_thr_b);
        if (part == 0 && !wait_for_turn(turn, dq_turn(n_block), kMaxTurnPolls) && tid == 0) {
          atomicExch(params.dq_turns + 1, __float_as_int(NAN));  // the host adds it to every dq entry
        }
        Tensor dq_rc = make_tensor(acc_dq.data(), accumulator_rows_cols(acc_dq.layout()));
        CUTE_UNROLL
        for (int r = 0; r < size<0>(dq_rc); ++r) {
          const int row = get<0>(tDQcDQ_rc(r, 0));
          if (m0 + row < len_q) {
            CUTE_UNROLL
            for (int c = 0; c < size<1>(dq_rc); ++c) {
              atomicAdd(dq_rows + row * kHeadDim + part * kDqColumns + get<1>(tDQcDQ_rc(r, c)), dq_rc(r, c));
            }
          }
        }
      }
      pass_turn(turn);
    }
    __syncthreads();  // every thread is done reading this stage (and dS^T) before step + 2's loads land in it
  }

  // dK carries the score scale (dS is the gradient of scale * q.k); keys past S are not written.
  Tensor dk_rc = make_tensor(acc_dk.data(), accumulator_rows_cols(acc_dk.layout()));
  Tensor dv_rc = make_tensor(acc_dv.data(), accumulator_rows_cols(acc_dv.layout()));
  Element* dk_ptr = head_rows(static_cast<Element*>(params.dk), params.dk_strides, batch, kv_head) +
                   column_block * kAccColumns;
  Element* dv_ptr = head_rows(static_cast<Element*>(params.dv), params.dv_strides, batch, kv_head) +
                   column_block * kAccColumns;
  store_rows(dk_rc, tKcK_rc, dk_ptr + n0 * params.dk_strides.row, params.dk_strides.row, len_kv - n0, params.scale);
  store_rows(dv_rc, tKcK_rc, dv_ptr + n0 * params.dv_strides.row, params.dv_strides.row, len_kv - n0, 1.0f);
}

// grid (ceil(L / kBlockM), Hq, B), arguments as the dK/dV kernel's.
template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    attention_backward_q_kernel(const AttentionBackwardParams params, int len_q, int len_kv, int causal_offset,
                                int group) {
  using Element = typename Traits::Element;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStageElements = Traits::kStageElements;

  extern __shared__ __align__(128) unsigned char smem[];

  const int m_block = blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int kv_head = head / group;
  const int tid = threadIdx.x;
  const int m0 = m_block * kBlockM;
  const bool causal = params.causal;

  const TileRange tiles = key_tiles(m_block, kBlockM, kBlockN, len_q, len_kv, causal, causal_offset);

  const Element* q_ptr = head_rows(static_cast<const Element*>(params.q), params.q_strides, batch, head);
  const Element* do_ptr = head_rows(static_cast<const Element*>(params.grad_out), params.grad_out_strides, batch, head);
  const Element* k_ptr = head_rows(static_cast<const Element*>(params.k), params.k_strides, batch, kv_head);
  const Element* v_ptr = head_rows(static_cast<const Element*>(params.v), params.v_strides, batch, kv_head);
  Element* dq_ptr = head_rows(static_cast<Element*>(params.dq), params.dq_strides, batch, head);
  const float* lse = params.lse + batch * params.lse_batch_stride + head * params.lse_head_stride;
  const float* delta = params.delta + (batch * params.heads_q + head) * len_q;
  const MaskView mask = mask_view(params.mask, batch, head);
  const int32_t dropout_stream_id = dropout_stream(params.seed, int64_t(batch) * params.heads_q + head);
  float* dscores = params.dscores == nullptr
                       ? nullptr
                       : params.dscores + (int64_t(batch) * params.heads_q + head) * len_q * int64_t(len_kv);

  // smem: Q, dO, then kStages x (K, V).
  Tensor sQ = make_tensor(make_smem_ptr(reinterpret_cast<Element*>(smem)), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(sQ.data() + size(sQ), typename Traits::SmemLayoutQ{});
  Tensor sK = make_tensor(sdO.data() + size(sdO), typename Traits::SmemLayoutKV{});  // stage s at + s * 2 * kStageElements
  Tensor sV = make_tensor(sK.data() + kStageElements, typename Traits::SmemLayoutKV{});
  Tensor sKt = make_tensor(sK.data(), typename Traits::SmemLayoutKt{});
  Tensor sKtShape = make_tensor(sK.data(), typename Traits::SmemLayoutKtShape{});
  constexpr int kStageStride = 2 * kStageElements;

  typename Traits::GmemTiledCopy gmem_copy;
  auto gmem_thr = gmem_copy.get_thread_slice(tid);
  Tensor tQsQ = gmem_thr.partition_D(sQ);
  Tensor tdOsdO = gmem_thr.partition_D(sdO);
  Tensor tKsK = gmem_thr.partition_D(sK);
  Tensor tVsV = gmem_thr.partition_D(sV);
  Tensor tQcQ = gmem_thr.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tKVcKV = gmem_thr.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));

  typename Traits::TiledMma mma;
  auto thr_mma = mma.get_thread_slice(tid);
  Tensor tSrQ = thr_mma.partition_fragment_A(sQ);         // (MMA, MMA_M, MMA_E)
  Tensor tSrK = thr_mma.partition_fragment_B(sK);         // (MMA, MMA_N, MMA_E)
  Tensor tdPrdO = thr_mma.partition_fragment_A(sdO);
  Tensor tdPrV = thr_mma.partition_fragment_B(sV);
  Tensor tdQrKt = thr_mma.partition_fragment_B(sKtShape);  // (MMA, MMA_E, MMA_N): K^T as B
  Tensor acc_dq = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});
  clear(acc_dq);

  auto smem_copy_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma);
  auto smem_thr_a = smem_copy_a.get_thread_slice(tid);
  Tensor tSsQ = smem_thr_a.partition_S(sQ);
  Tensor tdPsdO = smem_thr_a.partition_S(sdO);
  auto smem_copy_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma);
  auto smem_thr_b = smem_copy_b.get_thread_slice(tid);
  Tensor tSsK = smem_thr_b.partition_S(sK);
  Tensor tdPsV = smem_thr_b.partition_S(sV);
  auto smem_copy_bt = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma);
  auto smem_thr_bt = smem_copy_bt.get_thread_slice(tid);
  Tensor tdQsKt = smem_thr_bt.partition_S(sKt);

  Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));
  Tensor tScS_rc = make_tensor(tScS.data(), accumulator_rows_cols(tScS.layout()));
  Tensor tQcQ_mma = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
  Tensor tQcQ_rc = make_tensor(tQcQ_mma.data(), accumulator_rows_cols(tQcQ_mma.layout()));

  // This thread's rows' lse (base 2, +inf for none) and delta.
  constexpr int kRows = decltype(size<0>(tScS_rc))::value;
  float row_lse[kRows];
  float row_delta[kRows];
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int row = m0 + get<0>(tScS_rc(r, 0));
    row_lse[r] = lse_log2_or_inf(lse, row, len_q);
    row_delta[r] = row < len_q ? delta[row] : 0.0f;
  }

  const auto load_keys = [&](int n, int stage) {
    const int n0 = n * kBlockN;
    Tensor tKgK = gmem_thr.partition_S(gmem_rows<kBlockN, kHeadDim>(k_ptr + n0 * params.k_strides.row,
                                                                    params.k_strides.row));
    Tensor tVgV = gmem_thr.partition_S(gmem_rows<kBlockN, kHeadDim>(v_ptr + n0 * params.v_strides.row,
                                                                    params.v_strides.row));
    Tensor k_dst = in_stage(tKsK, stage, kStageStride);
    Tensor v_dst = in_stage(tVsV, stage, kStageStride);
    copy_rows_or_zero(gmem_copy, tKgK, k_dst, tKVcKV, len_kv - n0);
    copy_rows_or_zero(gmem_copy, tVgV, v_dst, tKVcKV, len_kv - n0);
  };

  // Key tiles from the last one seen down to the first, as in the forward: only the first
  // few visited cross the causal diagonal or the end of S.
  const int visits = tiles.end > tiles.begin ? tiles.end - tiles.begin : 0;
  if (visits > 0) {
    copy_rows_or_zero(gmem_copy, gmem_thr.partition_S(gmem_rows<kBlockM, kHeadDim>(q_ptr + m0 * params.q_strides.row,
                                                                                   params.q_strides.row)),
                      tQsQ, tQcQ, len_q - m0);
    copy_rows_or_zero(gmem_copy,
                      gmem_thr.partition_S(gmem_rows<kBlockM, kHeadDim>(do_ptr + m0 * params.grad_out_strides.row,
                                                                        params.grad_out_strides.row)),
                      tdOsdO, tQcQ, len_q - m0);
    load_keys(tiles.end - 1, 0);
    cp_async_fence();
  }

  const float scale_log2 = params.scale * kLog2e;
  const bool dropout = params.dropout_p > 0.0f;
  const float keep_scale = dropout ? 1.0f / (1.0f - params.dropout_p) : 1.0f;

  CUTE_NO_UNROLL
  for (int visit = 0; visit < visits; ++visit) {
    const int n = tiles.end - 1 - visit;
    const int n0 = n * kBlockN;
    const int stage = visit % 2;
    if (visit + 1 < visits) {
      load_keys(n - 1, stage ^ 1);  // that stage was last read in visit - 1, which ended in a barrier
      cp_async_fence();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this tile's K and V (and Q, dO) landed for all

    Tensor acc_s = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_s);
    gemm_smem_smem(acc_s, tSrQ, tSrK, tSsQ, in_stage(tSsK, stage, kStageStride), mma, smem_copy_a, smem_thr_a,
                   smem_copy_b, smem_thr_b);
    Tensor acc_dp = partition_fragment_C(mma, Shape<Int<kBlockM>, Int<kBlockN>>{});
    clear(acc_dp);
    gemm_smem_smem(acc_dp, tdPrdO, tdPrV, tdPsdO, in_stage(tdPsV, stage, kStageStride), mma, smem_copy_a,
                   smem_thr_a, smem_copy_b, smem_thr_b);

    Tensor s = make_tensor(acc_s.data(), accumulator_rows_cols(acc_s.layout()));  // (queries, keys)
    Tensor dp = make_tensor(acc_dp.data(), accumulator_rows_cols(acc_dp.layout()));
    const bool needs_mask = tile_needs_mask(m0, n0, kBlockN, len_kv, causal, causal_offset);
    CUTE_UNROLL
    for (int r = 0; r < size<0>(s); ++r) {
      const int row = m0 + get<0>(tScS_rc(r, 0));
      const int visible = causal ? min(len_kv, row + causal_offset + 1) : len_kv;  // keys j < visible
      CUTE_UNROLL
      for (int c = 0; c < size<1>(s); ++c) {
        const int col = n0 + get<1>(tScS_rc(r, c));
        float score = s(r, c) * scale_log2;
        if (mask.present() && row < len_q && col < len_kv) score += mask.bias_log2(row, col);
        float p = exp2f(score - row_lse[r]);
        if (needs_mask && col >= visible) p = 0.0f;
        float dp_used = dp(r, c);
        if (dropout) {
          const bool keep = dropout_uniform(dropout_stream_id, int64_t(row) * len_kv + col) >= params.dropout_p;
          dp_used = keep ? dp_used * keep_scale : 0.0f;
        }
        dp(r, c) = p * (dp_used - row_delta[r]);
        if (dscores != nullptr && row < len_q && col < len_kv) dscores[int64_t(row) * len_kv + col] = dp(r, c);
      }
    }

    // dQ += dS K, dS rounded as the A operand.
    Tensor ds = rounded<Element>(acc_dp);
    gemm_regs_smem(acc_dq, make_tensor(ds.data(), accumulator_as_a_operand(ds.layout())), tdQrKt,
                   in_stage(tdQsKt, stage, kStageStride), mma, smem_copy_bt, smem_thr_bt);
    __syncthreads();  // every thread is done reading this stage before visit + 2's loads land in it
  }

  Tensor dq_rc = make_tensor(acc_dq.data(), accumulator_rows_cols(acc_dq.layout()));
  store_rows(dq_rc, tQcQ_rc, dq_ptr + m0 * params.dq_strides.row, params.dq_strides.row, len_q - m0, params.scale);
}

// The host side of one instance: both kernels' geometry, the opt-in to more than 48 KiB
// of smem, the launches (after backward.cu's delta kernel, on the same stream). The
// params are checked by check_attention_backward (backward.cu) before.
template <class Kernel>
cudaError_t allow_smem(Kernel kernel, int smem_bytes) {
  if (smem_bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
}

// The launch geometry both launchers share: the narrowed lengths, offset and group, and
// the dK/dV kernel's grid.
struct BackwardGeometry {
  int len_q, len_kv, offset, group;
  dim3 kv_grid;
};

template <class KeyValue>
BackwardGeometry backward_geometry(const AttentionBackwardParams& params) {
  BackwardGeometry g;
  g.len_q = static_cast<int>(params.len_q);
  g.len_kv = static_cast<int>(params.len_kv);
  g.offset = static_cast<int>(clamp_causal_offset(params.causal_offset, params.len_q, params.len_kv));
  g.group = static_cast<int>(params.heads_q / params.heads_kv);
  const int key_blocks = (g.len_kv + KeyValue::kBlockN - 1) / KeyValue::kBlockN;
  g.kv_grid = dim3(static_cast<unsigned>(key_blocks * KeyValue::kColumnSplit),
                   static_cast<unsigned>(params.heads_kv), static_cast<unsigned>(params.batch));
  return g;
}

template <int kHeadDim, typename Element>
Status launch_attention_backward(const AttentionBackwardParams& params, cudaStream_t stream) {
  using KeyValue = typename BackwardTraits<kHeadDim, Element>::KeyValue;
  using Query = typename BackwardTraits<kHeadDim, Element>::Query;
  const auto kv_kernel = &attention_backward_kv_kernel<KeyValue, false>;
  const auto q_kernel = &attention_backward_q_kernel<Query>;
  cudaError_t error = allow_smem(kv_kernel, KeyValue::kSmemBytes);
  if (error == cudaSuccess) error = allow_smem(q_kernel, Query::kSmemBytes);
  if (error != cudaSuccess) return Status::from_cuda(error);

  const BackwardGeometry g = backward_geometry<KeyValue>(params);
  kv_kernel<<<g.kv_grid, KeyValue::kThreads, KeyValue::kSmemBytes, stream>>>(params, g.len_q, g.len_kv, g.offset,
                                                                              g.group);
  error = cudaGetLastError();
  if (error != cudaSuccess) return Status::from_cuda(error);
  const dim3 q_grid(static_cast<unsigned>((g.len_q + Query::kBlockM - 1) / Query::kBlockM),
                    static_cast<unsigned>(params.heads_q), static_cast<unsigned>(params.batch));
  q_kernel<<<q_grid, Query::kThreads, Query::kSmemBytes, stream>>>(params, g.len_q, g.len_kv, g.offset, g.group);
  return Status::from_cuda(cudaGetLastError());
}

// Ordered dQ: the dK/dV kernel alone, adding dQ into params.dq_accum (zero-filled, as are
// params.dq_turns: the host allocates both) in key-block order; params.dq is not written.
template <int kHeadDim, typename Element>
Status launch_attention_backward_ordered_dq(const AttentionBackwardParams& params, cudaStream_t stream) {
  using KeyValue = typename BackwardTraits<kHeadDim, Element>::KeyValue;
  const auto kv_kernel = &attention_backward_kv_kernel<KeyValue, true>;
  const cudaError_t error = allow_smem(kv_kernel, KeyValue::kOrderedDqSmemBytes);
  if (error != cudaSuccess) return Status::from_cuda(error);
  const BackwardGeometry g = backward_geometry<KeyValue>(params);
  kv_kernel<<<g.kv_grid, KeyValue::kThreads, KeyValue::kOrderedDqSmemBytes, stream>>>(params, g.len_q, g.len_kv,
                                                                                       g.offset, g.group);
  return Status::from_cuda(cudaGetLastError());
}

// The table entry (launchers.h) of one instance.
template <int kHeadDim, typename Element>
AttentionBackwardInstance backward_instance(DType dtype) {
  using KeyValue = typename BackwardTraits<kHeadDim, Element>::KeyValue;
  using Query = typename BackwardTraits<kHeadDim, Element>::Query;
  AttentionBackwardInstance instance;
  instance.head_dim = kHeadDim;
  instance.dtype = dtype;
  instance.kv_block_n = KeyValue::kBlockN;
  instance.kv_block_m = KeyValue::kBlockM;
  instance.kv_threads = KeyValue::kThreads;
  instance.kv_smem_bytes = KeyValue::kSmemBytes;
  instance.q_block_m = Query::kBlockM;
  instance.q_block_n = Query::kBlockN;
  instance.q_threads = Query::kThreads;
  instance.q_smem_bytes = Query::kSmemBytes;
  instance.launcher = &launch_attention_backward<kHeadDim, Element>;
  instance.kv_column_split = KeyValue::kColumnSplit;
  instance.ordered_dq_smem_bytes = KeyValue::kOrderedDqSmemBytes;
  instance.ordered_dq_launcher = &launch_attention_backward_ordered_dq<kHeadDim, Element>;
  return instance;
}

}  // namespace attention
}  // namespace seqops
