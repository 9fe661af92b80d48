// matmul.cu: the linear layer on cuBLAS (fp32 storage, fp32 compute).
//
// Row-major [R, C] arrays are column-major [C, R] to cuBLAS, so each product is written transposed:
//   forward   out[N, OC]  = inp @ w^T    ->  out^T  (OC x N) = op_T(w) (OC x IC) . inp^T (IC x N)
//   backward  dinp[N, IC] += dout @ w    ->  dinp^T (IC x N) = w^T (IC x OC) . dout^T (OC x N)
//             dw[OC, IC]  += dout^T @ inp -> dw^T  (IC x OC) = inp^T (IC x N) . op_T(dout^T)
// The backward uses beta = 1: cuBLAS adds into the gradient, which is ops.h's += convention.
//
// Precision: CUBLAS_DEFAULT_MATH, so fp32 GEMMs run on the FP32 units, not TF32 tensor cores
// (cuBLAS uses TF32 for fp32 only under CUBLAS_TF32_TENSOR_OP_MATH or NVIDIA_TF32_OVERRIDE=1);
// parity with the CPU reference is then ~1e-6 relative. MSLAB_CUDA_TF32=1 opts into TF32 (about
// 8x the FP32 rate on Hopper, ~1e-3 relative error): for speed runs, never for parity.
//
// Determinism: cuBLAS gives bitwise-identical results from run to run on the same GPU model with
// the same toolkit when all calls go to one stream (ours: the default stream) and atomics mode is
// off (the default, CUBLAS_ATOMICS_NOT_ALLOWED, set explicitly below). Split-K reductions inside
// cuBLAS are deterministic in that setting.
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

void cuda_matmul_init(void) {
    cublasCheck(cublasCreate(&cuda_cublas));
    cublasCheck(cublasSetStream(cuda_cublas, 0));
    cublasCheck(cublasSetAtomicsMode(cuda_cublas, CUBLAS_ATOMICS_NOT_ALLOWED));
    const char *tf32 = getenv("MSLAB_CUDA_TF32");
    int use_tf32 = tf32 && tf32[0] && strcmp(tf32, "0") != 0;
    cublasCheck(cublasSetMathMode(cuda_cublas,
                                  use_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

void cuda_matmul_fwd(float *out, const float *inp, const float *w, int N, int IC, int OC) {
    if (N <= 0 || OC <= 0) return;
    if (IC <= 0) { // empty sum: out = 0 (cuBLAS with k = 0 would also scale by beta = 0)
        cudaCheck(cudaMemsetAsync(out, 0, (size_t)N * OC * sizeof(float), 0));
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasSgemm(cuda_cublas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, w, IC, inp, IC,
                            &zero, out, OC));
}

void cuda_matmul_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     int N, int IC, int OC) {
    if (N <= 0 || IC <= 0 || OC <= 0) return; // nothing to add
    const float one = 1.0f;
    if (dinp)
        cublasCheck(cublasSgemm(cuda_cublas, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, &one, w, IC,
                                dout, OC, &one, dinp, IC));
    if (dw)
        cublasCheck(cublasSgemm(cuda_cublas, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, &one, inp, IC,
                                dout, OC, &one, dw, IC));
}
