// Attention dropout's draw, bit for bit the Triton backend's (kernels/attention/common.py,
// dropout_keep): Philox-4x32 with 10 rounds keyed by (seed + batch * Hq + head), counter
// query * S + key, as triton.language.rand computes it; a probability is kept when its
// uniform draw is >= dropout_p. The same seed therefore drops the same probabilities on
// either backend. Host and device: the bindings expose it (attention_dropout_uniform) so
// that a CPU test can compare it with the Triton kernel's draw under the interpreter.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define SEQOPS_DROPOUT_FN __host__ __device__ __forceinline__
#else
#define SEQOPS_DROPOUT_FN inline
#endif

namespace seqops {
namespace attention {

SEQOPS_DROPOUT_FN uint32_t mul_hi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// The uniform draw in [0, 1) for stream `stream` (the Triton side's seed + bh, an int32
// sum that wraps) and a 64-bit counter.
SEQOPS_DROPOUT_FN float dropout_uniform(int32_t stream, int64_t counter) {
  // triton.language.philox: the seed widened to 64 bits (sign-extended) is the key.
  const uint64_t key = static_cast<uint64_t>(static_cast<int64_t>(stream));
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  uint32_t c0 = static_cast<uint32_t>(static_cast<uint64_t>(counter));
  uint32_t c1 = static_cast<uint32_t>(static_cast<uint64_t>(counter) >> 32);
  uint32_t c2 = 0, c3 = 0;
  // Rolled on the device: unrolled, the compiler interleaves the draws of a thread's many
  // elements and the attention kernels spill (head dim 64 on sm_90a: 44 bytes).
#ifdef __CUDA_ARCH__
#pragma unroll 1
#endif
  for (int round = 0; round < 10; ++round) {
    const uint32_t old_c0 = c0, old_c2 = c2;
    c0 = mul_hi(0xCD9E8D57u, old_c2) ^ c1 ^ k0;
    c2 = mul_hi(0xD2511F53u, old_c0) ^ c3 ^ k1;
    c1 = 0xCD9E8D57u * old_c2;
    c3 = 0xD2511F53u * old_c0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // triton.language.uint_to_uniform_float: the draw as int32, folded to non-negative.
  int32_t x = static_cast<int32_t>(c0);
  x = x < 0 ? -x - 1 : x;
  return static_cast<float>(x) * 4.6566127342e-10f;
}

// The Triton side's stream: seed + bh in int32 arithmetic (two's complement wrap).
SEQOPS_DROPOUT_FN int32_t dropout_stream(int64_t seed, int64_t batch_head) {
  return static_cast<int32_t>(static_cast<uint32_t>(seed) + static_cast<uint32_t>(batch_head));
}

}  // namespace attention
}  // namespace seqops
