// Which tiles a CTA of the attention kernels visits and which of those need the
// elementwise mask, written once for the kernels and for the host: the bindings expose it
// as `attention_schedule`, and tests/test_cuda_attention_host.py checks it against a
// brute-force model of which (query, key) pairs are seen, with no GPU.
//
// Query i sees key j iff j < len_kv and, when causal, j <= i + offset (offset 0: the
// upper-left alignment; len_kv - len_q: the bottom-right one). The offset comes clamped to
// [-len_q, len_kv] (clamp_causal_offset), past which it changes nothing; positions stay
// below 2**30, so every sum here fits in int.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define SEQOPS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SEQOPS_HOST_DEVICE inline
#endif

namespace seqops {
namespace attention {

// Tiles begin .. end - 1 (empty when end <= begin).
struct TileRange {
  int begin = 0, end = 0;
};

SEQOPS_HOST_DEVICE int64_t clamp_causal_offset(int64_t offset, int64_t len_q, int64_t len_kv) {
  return offset < -len_q ? -len_q : offset > len_kv ? len_kv : offset;
}

// The key tiles (block_n keys each) holding every key that a query of block `m_block`
// (block_m queries) sees: all of them, or up to the one holding the last key its last
// real row sees when causal. The forward and the dQ kernel walk them.
SEQOPS_HOST_DEVICE TileRange key_tiles(int m_block, int block_m, int block_n, int len_q, int len_kv, bool causal,
                                       int offset) {
  int end = (len_kv + block_n - 1) / block_n;
  if (causal) {
    const int last_row = (m_block + 1) * block_m < len_q ? (m_block + 1) * block_m - 1 : len_q - 1;
    const int last_key = last_row + offset;
    end = last_key < 0 ? 0 : (last_key / block_n + 1 < end ? last_key / block_n + 1 : end);
  }
  return {0, end};
}

// The query tiles (block_m queries each) holding every query that sees a key of block
// `n_block` (block_n keys): all of them, or from the one holding the first query that sees
// the block's first key when causal. The dK/dV kernel walks them.
SEQOPS_HOST_DEVICE TileRange query_tiles(int n_block, int block_n, int block_m, int len_q, bool causal,
                                         int offset) {
  const int end = (len_q + block_m - 1) / block_m;
  int begin = 0;
  if (causal) {
    const int first_row = n_block * block_n - offset;  // query i sees key n0 iff i >= n0 - offset
    begin = first_row <= 0 ? 0 : (first_row >= len_q ? end : first_row / block_m);
  }
  return {begin, end};
}

// Ordered dQ: the turn of key block `n_block` at every query tile it visits. The key
// blocks that visit a query tile are 0 .. k for some k (query_tiles' begin never falls as
// n_block grows, and its end is the same for all), so block n goes n-th everywhere;
// tests/test_cuda_attention_host.py checks that prefix on query_tiles.
SEQOPS_HOST_DEVICE int dq_turn(int n_block) { return n_block; }

// Chunk `split` of `splits` of a tile range, for split-KV: contiguous chunks of
// ceil(count / splits) tiles in order, so that the last ones may be short or empty.
SEQOPS_HOST_DEVICE TileRange split_tiles(TileRange range, int split, int splits) {
  const int count = range.end > range.begin ? range.end - range.begin : 0;
  const int per_split = (count + splits - 1) / splits;
  const int begin = range.begin + split * per_split < range.end ? range.begin + split * per_split : range.end;
  const int end = begin + per_split < range.end ? begin + per_split : range.end;
  return {begin, end};
}

// Whether a visited tile (queries from m0, keys n0 .. n0 + block_n - 1) holds a pair a
// query below len_q does not see: a key past len_kv, or one right of the causal diagonal.
// Query rows past len_q are not masked here; the kernels zero them by other means.
SEQOPS_HOST_DEVICE bool tile_needs_mask(int m0, int n0, int block_n, int len_kv, bool causal, int offset) {
  return n0 + block_n > len_kv || (causal && n0 + block_n - 1 > m0 + offset);
}

}  // namespace attention
}  // namespace seqops
