// backend_cuda.h: the CUDA backend, seen from C. Only builds with MSLAB_CUDA defined (the Makefile
// defines it when nvcc is found and CUDA=0 is not given) link cuda/*.o; C code guards its calls:
//
//   #ifdef MSLAB_CUDA
//   #include "../cuda/backend_cuda.h"
//   #endif
//
// backend_cuda() returns the table (fp32 storage, device memory, every pointer argument of every op
// is a device pointer) or NULL when no CUDA device can be used, with ms_error() saying why, e.g.
// "no CUDA device (cudaGetDeviceCount: CUDA driver version is insufficient ...)". It never aborts
// for a missing device, so a CUDA build runs its CPU work unchanged on a machine without a GPU.
//
// Unimplemented ops: every entry of ops.h that this backend does not implement is NULL in the
// table (the table is filled by assignment from a zeroed struct, so an op added to ops.h later is
// NULL here until a kernel exists). A caller detects them with `be->op == NULL`;
// backend_cuda_missing() names them for messages.
#ifndef MSLAB_BACKEND_CUDA_H
#define MSLAB_BACKEND_CUDA_H

#include "../core/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// The CUDA backend on device 0 (MSLAB_CUDA_DEVICE=i picks another), or NULL with ms_error() set.
const Backend *backend_cuda(void);

// bf16 mixed precision (cuda/backend_bf16.cu, docs/cuda.md "Precision"): backend_cuda()'s table
// (name "cuda-bf16") whose matmul and dense / sparse attention ops round their operands to bf16 and
// accumulate in fp32; activations that only those ops read are kept in bf16 only (MSLAB_BF16_ACTS;
// widened exactly when anything reads them in fp32); weights, gradients, the residual stream, the
// loss and AdamW stay fp32. NULL as backend_cuda().
const Backend *backend_cuda_bf16(void);
// Measurements only: 1 runs its GEMMs as CUBLAS_COMPUTE_32F_FAST_16BF on the fp32 buffers (cuBLAS's
// own down-conversion) instead of rounding the operands first (also MSLAB_BF16_GEMM=fast).
void backend_cuda_bf16_fast_gemm(int on);
// How many attention calls of the bf16 table ran the fp32 kernels (a shape the bf16 kernels do
// not handle); the first per op is also reported on stderr.
int backend_cuda_bf16_fallbacks(void);

// Comma-separated names of the ops.h entries that the CUDA table leaves NULL; "" when the table is
// complete. Entries are compared against the CPU table, so an op added to ops.h and to the CPU
// backend but not here is reported as "op#<slot>" until it is named in cuda/backend.cu.
const char *backend_cuda_missing(void);

// The device in words ("NVIDIA H200, sm_90, 132 SMs, 139.8 GiB"), for logs; "" before
// backend_cuda() succeeded.
const char *backend_cuda_device_name(void);

#ifdef __cplusplus
}
#endif

#endif
