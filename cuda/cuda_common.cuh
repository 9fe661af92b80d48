// cuda_common.cuh: what every file of the CUDA backend shares: error checks naming file:line, the
// cuBLAS handle, grow-only scratch buffers, block reductions in a fixed order, and the op
// prototypes that backend.cu puts in the table.
//
// Streams: every kernel, memset, copy and cuBLAS call goes to the legacy default stream (0), so
// ops run in call order and a download (cudaMemcpy) waits for everything before it. One stream is
// also what makes cuBLAS bitwise reproducible (see matmul.cu).
#ifndef MSLAB_CUDA_COMMON_CUH
#define MSLAB_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>

extern "C" {
#include "../core/common.h"
#include "../core/ops.h"
#include "backend_cuda.h"
}

// ---- error checks: abort with file:line and the CUDA / cuBLAS message ----
void cuda_check_at(cudaError_t err, const char *what, const char *file, int line);
void cublas_check_at(cublasStatus_t st, const char *what, const char *file, int line);
#define cudaCheck(x) cuda_check_at((x), #x, __FILE__, __LINE__)
#define cublasCheck(x) cublas_check_at((x), #x, __FILE__, __LINE__)
// After every kernel launch: launch errors (bad configuration) at once; with MSLAB_CUDA_SYNC=1 in
// the environment also a device synchronize, so an error inside a kernel names its launch site.
void cuda_launch_check_at(const char *file, int line);
#define cudaLaunchCheck() cuda_launch_check_at(__FILE__, __LINE__)

extern cublasHandle_t cuda_cublas;

// ---- scratch: one grow-only device buffer per slot (growing frees the old one, which waits for
// the device, so a buffer is never freed while a queued kernel may still read it) ----
enum {
    SCRATCH_SUMSQ,   // sumsq block partials (double)
    SCRATCH_NORM,    // rmsnorm dw partials
    SCRATCH_ATTN,    // attention backward: Di = rowsum(dout * out)
    SCRATCH_SORT,    // embedding backward: sorted tokens and rows
    SCRATCH_CUB,     // embedding backward: CUB's temporary storage
    SCRATCH_SELECT,  // attention_select: pooled keys, norms, per-block scores and marks
    SCRATCH_SPARSE,  // sparse attention backward: Di
    SCRATCH_FLASH_BF16,  // flash_bf16.cu: backward workspace (Di, ...)
    SCRATCH_SPARSE_BF16, // sparse_bf16.cu / the wgmma backwards: workspace; select_bf16's scratch
    SCRATCH_SELECT_BIG,  // attn_select.cu: per-block list arrays when merge x top is too large
    SCRATCH_BF16_A, SCRATCH_BF16_B, SCRATCH_BF16_C, SCRATCH_BF16_D, SCRATCH_BF16_E,
    SCRATCH_BF16_F,      // backend_bf16.cu: operands converted to / from bf16
    SCRATCH_COUNT
};
void *cuda_scratch(int slot, size_t bytes);

static inline unsigned cdiv_u(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }
// offsets inside one scratch allocation: each part starts on a 256-byte boundary
static inline size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }
// blocks for a grid-stride loop over n elements with `threads` per block (at most 2^20 blocks)
static inline unsigned grid_for(size_t n, int threads) {
    size_t g = (n + threads - 1) / threads;
    if (g < 1) g = 1;
    return g > (1u << 20) ? (1u << 20) : (unsigned)g;
}

// GPU-scope memory-order primitives for the cross-CTA counters of the ordered (deterministic)
// backward kernels: acquire / release loads and stores, relaxed ones ordered by explicit fences.
__device__ __forceinline__ int ld_acquire_gpu(const int *p) {
    int v;
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_release_gpu(int *p, int v) {
    asm volatile("st.release.gpu.global.s32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ int ld_relaxed_gpu(const int *p) {
    int v;
    asm volatile("ld.relaxed.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_relaxed_gpu(int *p, int v) {
    asm volatile("st.relaxed.gpu.global.s32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ void fence_acq_rel_gpu() { asm volatile("fence.acq_rel.gpu;\n" ::: "memory"); }

// ---- fixed-order reductions inside one block (deterministic: a tree of fixed shape) ----
// The XOR butterfly leaves the same value in every lane (IEEE addition is commutative, and each
// lane adds the same pairs).
template <typename T> __device__ __forceinline__ T warp_sum(T x) {
    for (int w = 16; w >= 1; w >>= 1) x += __shfl_xor_sync(0xffffffffu, x, w);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
    for (int w = 16; w >= 1; w >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, w));
    return x;
}
// Block of NT threads (a power of two >= 32): every thread gets the sum / max. `sh` holds NT / 32
// values; the call ends with a barrier so sh can be reused.
template <int NT, typename T> __device__ __forceinline__ T block_sum(T x, T *sh) {
    x = warp_sum(x);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = x;
    __syncthreads();
    T r = sh[0];
    for (int i = 1; i < NT / 32; i++) r += sh[i]; // every thread: the same order
    __syncthreads();
    return r;
}
template <int NT> __device__ __forceinline__ float block_max(float x, float *sh) {
    x = warp_max(x);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = x;
    __syncthreads();
    float r = sh[0];
    for (int i = 1; i < NT / 32; i++) r = fmaxf(r, sh[i]);
    __syncthreads();
    return r;
}

// ---- ops (signatures as in ops.h) ----
void cuda_add(float *out, const float *a, const float *b, size_t n);
void cuda_scale(float *x, float s, size_t n);
double cuda_sumsq(const float *x, size_t n);
void cuda_swiglu_fwd(float *out, const float *gate, const float *up, size_t n);
void cuda_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n);

void cuda_embedding_fwd(float *out, const int *tok, const float *wte, int N, int C);
void cuda_embedding_bwd(float *dwte, const float *dout, const int *tok, int N, int C);

void cuda_matmul_fwd(float *out, const float *inp, const float *w, int N, int IC, int OC);
void cuda_matmul_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     int N, int IC, int OC);

void cuda_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                      float eps);
void cuda_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                      const float *w, const float *rstd, int N, int C);

void cuda_rope_fwd(float *out, const float *inp, const float *pos, const float *inv_freq, int N,
                   int H, int D, int style);
void cuda_rope_bwd(float *dinp, const float *dout, const float *pos, const float *inv_freq,
                   int N, int H, int D, int style);

void cuda_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                        int B, int T, int H, int KVH, int D);
void cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v, int B,
                        int T, int H, int KVH, int D);

void cuda_sparse_attention_fwd(float *out, float *lse, const float *q, const float *k,
                               const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                               int D);
void cuda_sparse_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q, const float *k,
                               const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                               int D);
void cuda_attention_select(AttnIndex *ix, const struct AttnConfig *cfg, const float *q,
                           const float *k, int B, int T, int H, int KVH, int D);

void cuda_attention_decode(float *out, const float *q, const float *k, const float *v, int Tq,
                           int t0, int H, int KVH, int D);

void cuda_crossentropy_fwd(float *losses, const float *logits, const int *targets, int N, int V);
void cuda_crossentropy_bwd(float *dlogits, const float *logits, const int *targets, float dloss,
                           int N, int V);

void cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                float b2, float eps, float wd, int t);

// cuBLAS setup (matmul.cu), called once by backend_cuda()
void cuda_matmul_init(void);

#endif
