// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, SC'11), counter-based: every random number in ternlab
// is a pure function of (seed, step, layer, element, stream), so results do not depend on thread
// count, batch split or backend, and the CPU and the GPU draw the same numbers for the same weight.
// Compiles for host and device (the CUDA backend includes this same header).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define TL_HD __host__ __device__ __forceinline__
#else
#define TL_HD inline
#endif

namespace tl {

struct Philox4 {
  uint32_t v[4];
};

TL_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// The raw generator: 10 rounds on a 128-bit counter with a 64-bit key.
TL_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(M0, c0, &hi0, &lo0);
    philox_mulhilo(M1, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  Philox4 out;
  out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
  return out;
}

// What each draw is for: separates uses so that no two consumers ever share a number.
enum Stream : uint32_t {
  kStreamInit = 1,      // weight initialisation
  kStreamData = 2,      // data order (per-epoch permutation)
  kStreamDst = 3,       // DST Bernoulli draws
  kStreamProposal = 4,  // samplers: proposal draws
  kStreamAccept = 5,    // samplers: acceptance draws
  kStreamAugment = 6,   // data augmentation
};

// The ternlab counter layout: (element, step, layer, stream) -> counter words, seed -> key.
TL_HD Philox4 philox_draw(uint64_t seed, uint32_t step, uint32_t layer, uint32_t element, uint32_t stream) {
  return philox4x32_10(element, step, layer, stream, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A uniform float in [0, 1) with 24 random bits: exactly representable, identical on CPU and GPU.
TL_HD float uniform24(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

}  // namespace tl
