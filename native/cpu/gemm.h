// Matrix products of the CPU backend. Row-major throughout.
//   sgemm:  C[M,N] (+)= A[M,K] · B[K,N]                       (float; backward products)
//   igemm:  C[M,N]  =  A[M,Kp] · B[N,Kp]^T  (A as u8 = s8+128, B s8; exact int32; forward products)
// Each C element is computed by one task with a fixed k order, whatever the thread count.
#pragma once
#include <cstdint>
#include <string>
#include "thread_pool.h"

namespace tl {

enum class KernelPath : int { Scalar = 0, Avx2 = 1, Avx512Vnni = 2 };
KernelPath best_kernel_path();
const char* kernel_path_name(KernelPath p);
// Overrides the integer path (tests run every path the machine supports against one reference).
bool set_kernel_path(KernelPath p);
KernelPath current_kernel_path();

void sgemm(ThreadPool& pool, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float* C, int64_t ldc, bool accumulate);

// A: M rows of Kp bytes holding s8+128 (so zero activations are 128); B: N rows of Kp s8;
// Kp a multiple of 64, padding bytes of B zero. colsum[n] = Σ_k B[n,k] corrects the +128 offset.
void igemm(ThreadPool& pool, int64_t M, int64_t N, int64_t Kp, const uint8_t* A, const int8_t* B,
           const int32_t* colsum, int32_t* C, int64_t ldc);

}  // namespace tl
