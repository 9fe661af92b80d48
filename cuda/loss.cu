// loss.cu: cross-entropy over logits[N, V], forward and backward, softmax fused in.
//
// One block per row. The row's max (fixed-tree block max) and sum of exp(x - max) (each thread
// sums its strided elements in double, the block combines them in a fixed tree) give
// losses[n] = log(sum) + max - x[target]. The backward recomputes the same statistics and writes
// dlogits[n, i] += dloss * (exp(x_i - max) / sum - [i == target]) in the same pass, so no softmax
// is stored. Ignored rows (target < 0) have loss 0 and no gradient; a target >= V stops the kernel
// with a message (the CPU reference asserts). Deterministic: fixed-order reductions only.
// One kernel template (crossentropy_kernel) for the forward, the register backward and the bf16
// table's forward that also writes the gradient; the strided backward is its own kernel.
#include <stdlib.h>
#include <string.h>

#include "bf16_vec.cuh"
#include "cuda_common.cuh"
#include "mma_bf16.cuh" // cp_async16
extern "C" {
#include "bf16.h"
}

#define CE_THREADS 256

// The logits as BfIn (bf16.h): the bf16 table reads them rounded to bf16, the fp32 table as they are.
__device__ __forceinline__ BfIn in_at(BfIn a, size_t off) {
    if (a.f) a.f += off;
    if (a.b) a.b += off;
    return a;
}

__device__ __forceinline__ void ce_row_stats(BfIn x, int V, float *mx_out, double *s_out) {
    __shared__ float shf[CE_THREADS / 32];
    __shared__ double shd[CE_THREADS / 32];
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += CE_THREADS) mx = fmaxf(mx, in_get(x, i));
    mx = block_max<CE_THREADS>(mx, shf);
    double s = 0;
    for (int i = threadIdx.x; i < V; i += CE_THREADS) s += (double)expf(in_get(x, i) - mx);
    s = block_sum<CE_THREADS>(s, shd);
    *mx_out = mx;
    *s_out = s;
}

__device__ __forceinline__ void ce_check_target(int t, int V, int n) {
    if (t >= V) {
        if (threadIdx.x == 0) printf("crossentropy: target %d >= V = %d at row %d\n", t, V, n);
        __trap();
    }
}

__global__ void __launch_bounds__(CE_THREADS)
crossentropy_bwd_kernel(float *dlogits, BfIn logits, const int *targets, float dloss, int V) {
    int n = blockIdx.x, t = targets[n];
    if (t < 0) return;
    ce_check_target(t, V, n);
    BfIn x = in_at(logits, (size_t)n * V);
    float *dx = dlogits + (size_t)n * V;
    float mx;
    double s;
    ce_row_stats(x, V, &mx, &s);
    float k = (float)(dloss / s); // dloss * softmax = k * exp(x - max)
    for (int i = threadIdx.x; i < V; i += CE_THREADS) {
        float g = dx[i] + k * expf(in_get(x, i) - mx);
        if (i == t) g -= dloss;
        dx[i] = g;
    }
}

// Rows held in registers (V <= 4096 * CE_RPER, V % 4 == 0, logits 16-byte aligned; 32000 fits):
// CE_RT threads, thread t holds the float4 chunks t, t + CE_RT, ... (PER of them), so a row is read
// from memory once: the forward reads the logits once instead of twice (max, then sum), the
// backward reads them once and writes the gradient (and, for the bf16 table, its bf16 copy and
// without reading the old gradient when acc = 0). Same statistics as above (fp32 max, sum of
// expf in double, fixed-tree block reductions), the sum in another fixed order.
// H200, N = 32768, V = 32000 (the 4096 x 8 LM step): forward 1.55 ms (was 1.87), backward 2.77 ms
// writing the bf16 copy and skipping the zeroed gradient (was 5.17 ms plus a memset and a 2.1 GB
// conversion); the step is 5 ms slower with MSLAB_CE_REGS=0. The bf16 table's forward that also
// writes the bf16 gradient (backend_bf16.cu, "Cross-entropy"): 1.85 ms (s6 r2; 2.28 before the
// gradient reused the sum's expf values), where the forward and backward took 1.55 + 2.77 ms.
// With the next row prefetched into shared memory (crossentropy_pf_kernel): the LM step 96.7 ->
// 96.4 ms (s8 r2); ncu 1.85 ms per call (s8 r3; 6.3 GB: 3.4 TB/s). (Its switch, MSLAB_CE_PF, was
// removed in s9: crossentropy_kernel remains where the row does not fit shared memory.) s9: the
// next row's fetch issued as soon as the row is in registers, before its reductions (was: after
// its max and sum): ncu (s9 r2, clocks and caches as live) 1.763 ms per call vs 1.848.
// s10: the logits as BfIn (bf16.h; the bf16 table reads them rounded to bf16, so its logits GEMM
// writes them in bf16: 64 KB a row), two rows in flight where they fit (nbuf 2), each row's target
// loaded a row early and x[target] taken from the row's copy (two global loads off the row's path):
// LM trace per call 2081 us (fp32 logits) -> 1881 (bf16, r1) -> 1805 (r2). ncu (r3): DRAM 40% of
// peak, SM 65%, 12.3 cycles per issued instruction at 50% occupancy (64 registers): bound by the
// instructions per element, not by memory. Tried (r4, removed): two blocks per SM, the row read
// from shared memory in each pass instead of held in registers: 2110 vs 1860 us.
#define CE_RT 1024
#define CE_RPER 8

// loaded(): every thread runs it once its part of the row is in registers (before the
// reductions): crossentropy_pf_kernel then reuses the row's shared-memory copy for the next row.
template <int PER, class F>
__device__ __forceinline__ void ce_row_regs(BfIn x, int V, float4 (&r)[PER], float *mx_out,
                                            double *s_out, F loaded) {
    __shared__ float shf[CE_RT / 32];
    __shared__ double shd[CE_RT / 32];
    int n4 = V / 4;
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < PER; j++) {
        int c = threadIdx.x + j * CE_RT;
        r[j] = c < n4 ? in_get4(x, 4 * (size_t)c)
                      : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
        mx = fmaxf(mx, fmaxf(fmaxf(r[j].x, r[j].y), fmaxf(r[j].z, r[j].w)));
    }
    loaded();
    mx = block_max<CE_RT>(mx, shf);
    double s = 0; // r becomes exp(x - max): the gradient reuses it (one expf per element)
#pragma unroll
    for (int j = 0; j < PER; j++)
        if (threadIdx.x + j * CE_RT < n4) {
            r[j] = make_float4(expf(r[j].x - mx), expf(r[j].y - mx), expf(r[j].z - mx),
                               expf(r[j].w - mx));
            s += (double)r[j].x + (double)r[j].y + (double)r[j].z + (double)r[j].w;
        }
    s = block_sum<CE_RT>(s, shd);
    *mx_out = mx;
    *s_out = s;
}

// e = exp(x - max) of element i
__device__ __forceinline__ float ce_grad1(float old, float k, float e, int i, int t, float dloss,
                                          int acc) {
    float g = acc ? old + k * e : k * e;
    if (i == t) g -= dloss;
    return g;
}

// One row per block. LOSS: losses[n]; GRAD (register path only): the gradient into o (o.f may be
// NULL with o.b set: the bf16 table keeps it in bf16 only), acc = 0: it is known
// to be zero: ignored rows write zeros, nothing is read. PER = 0: the strided statistics (CE_THREADS
// threads), else the register ones (CE_RT threads). LOSS and GRAD together: the bf16 table's
// forward that also leaves the backward's gradient (backend_bf16.cu, "Cross-entropy").
// src: where the row's statistics read it (the row in logits, or its copy in shared memory:
// crossentropy_pf_kernel); stats_done() runs in every thread once the row has been read (the
// register path: as soon as it is in registers, before its reductions; at once for an ignored row).
// t: the row's target (targets[n]; the caller loads it, the prefetching kernel a row early).
template <int PER, int LOSS, int GRAD, class F>
__device__ __forceinline__ void ce_row(int n, int t, BfIn src, float *losses, OutBF o, int acc,
                                       float dloss, int V, F stats_done) {
    int n4 = V / 4;
    size_t row = (size_t)n * V;
    if (t < 0) {
        stats_done();
        if (LOSS && threadIdx.x == 0) losses[n] = 0.0f;
        if (GRAD && !acc)
            for (int c = threadIdx.x; c < n4; c += CE_RT)
                out_put4(o, row + 4 * (size_t)c, make_float4(0, 0, 0, 0));
        return;
    }
    ce_check_target(t, V, n);
    float xt = LOSS && threadIdx.x == 0 ? in_get(src, t) : 0.0f; // (before src is refilled)
    float4 r[PER ? PER : 1];
    float mx;
    double s;
    if (PER) ce_row_regs<PER ? PER : 1>(src, V, r, &mx, &s, stats_done);
    else ce_row_stats(src, V, &mx, &s), stats_done();
    if (LOSS && threadIdx.x == 0) losses[n] = (float)(log(s) + (double)(mx - xt));
    if (!GRAD) return;
    float k = (float)(dloss / s);
#pragma unroll
    for (int j = 0; j < PER; j++) {
        int c = threadIdx.x + j * CE_RT;
        if (c >= n4) break;
        float4 g = acc ? *(const float4 *)(o.f + row + 4 * (size_t)c) : make_float4(0, 0, 0, 0);
        g.x = ce_grad1(g.x, k, r[j].x, 4 * c, t, dloss, acc);
        g.y = ce_grad1(g.y, k, r[j].y, 4 * c + 1, t, dloss, acc);
        g.z = ce_grad1(g.z, k, r[j].z, 4 * c + 2, t, dloss, acc);
        g.w = ce_grad1(g.w, k, r[j].w, 4 * c + 3, t, dloss, acc);
        out_put4(o, row + 4 * (size_t)c, g);
    }
}

template <int PER, int LOSS, int GRAD>
__global__ void __launch_bounds__(PER ? CE_RT : CE_THREADS)
crossentropy_kernel(float *losses, OutBF o, int acc, BfIn logits, const int *targets,
                    float dloss, int V) {
    int n = blockIdx.x;
    ce_row<PER, LOSS, GRAD>(n, targets[n], in_at(logits, (size_t)n * V), losses, o, acc, dloss, V,
                            [] {});
}

// The fused forward + gradient (LOSS, GRAD, acc = 0) with the next row in flight: persistent
// blocks (one per SM: a row's registers are half the register file), row n + grid copied into
// shared memory by cp.async while row n's exponentials, sums and gradient stores run (in
// crossentropy_kernel a block's loads and its reductions / stores alternate, so the SM's memory
// pipe idles for half of each row). The same statistics from the same values: the same bits.
// nbuf 2 (s10: bf16 rows): two rows in flight, the next-but-one fetched into the slot row n leaves.
template <int PER>
__global__ void __launch_bounds__(CE_RT, 1)
crossentropy_pf_kernel(float *losses, OutBF o, BfIn logits, const int *targets, float dloss,
                       int N, int V, int nbuf) {
    extern __shared__ float4 ce_buf[]; // nbuf rows: V / 4 float4 each, or V / 8 of 8 bf16 (logits.b)
    int n16 = logits.b ? V / 8 : V / 4, g = (int)gridDim.x;
    auto fetch = [&](int n, int slot) {
        const float4 *src = logits.b ? (const float4 *)(logits.b + (size_t)n * V)
                                     : (const float4 *)(logits.f + (size_t)n * V);
        float4 *dst = ce_buf + (size_t)slot * n16;
        for (int c = threadIdx.x; c < n16; c += CE_RT) cp_async16(dst + c, src + c, true);
        cp_async_commit();
    };
    for (int r = 0; r < nbuf; r++)
        if (blockIdx.x + r * g < N) fetch(blockIdx.x + r * g, r);
    int t = blockIdx.x < N ? targets[blockIdx.x] : 0;
    for (int n = blockIdx.x, it = 0; n < N; n += g, it++) {
        int nn = n + g, tn = nn < N ? targets[nn] : 0; // (its latency off the row's path)
        int slot = nbuf == 2 ? it & 1 : 0;
        if (nbuf == 2 && nn < N) cp_async_wait<1>(); // (row nn's copy may stay in flight)
        else cp_async_wait<0>();
        __syncthreads(); // row n in its slot
        const float4 *row = ce_buf + (size_t)slot * n16;
        BfIn src = {logits.b ? NULL : (const float *)row, logits.b ? (const uint16_t *)row : NULL,
                    logits.rnd};
        ce_row<PER, 1, 1>(n, t, src, losses, o, 0, dloss, V, [&] {
            __syncthreads(); // every thread has its part of row n in registers: the slot is free
            if (n + nbuf * g < N) fetch(n + nbuf * g, slot);
        });
        t = tn;
    }
}

// the per-thread chunk count for V, 0: the row does not fit the register path
static int ce_per(const BfIn &logits, const void *dlogits, const void *db, int V) {
    static int regs = -1; // MSLAB_CE_REGS=0: the strided kernels only (measurements)
    if (regs < 0) regs = !(getenv("MSLAB_CE_REGS") && !strcmp(getenv("MSLAB_CE_REGS"), "0"));
    if (!regs || V % 4 || !in_aligned(logits) || !aligned16(dlogits) || ((uintptr_t)db & 7))
        return 0;
    int c = (V / 4 + CE_RT - 1) / CE_RT;
    return c <= 1 ? 1 : c <= 2 ? 2 : c <= 4 ? 4 : c <= CE_RPER ? CE_RPER : 0;
}

int cuda_crossentropy_regs(BfIn logits, int V) { return ce_per(logits, NULL, NULL, V) != 0; }

// one launch of crossentropy_kernel<P, LOSS, GRAD> for per = ce_per(...) (0: the strided forward)
template <int LOSS, int GRAD>
static void ce_launch(int per, float *losses, OutBF o, int acc, BfIn logits, const int *targets,
                      float dloss, int N, int V) {
    switch (per) {
#define CE_K(P, NT) crossentropy_kernel<P, LOSS, GRAD><<<N, NT>>>(losses, o, acc, logits, targets, dloss, V)
    case 1: CE_K(1, CE_RT); break;
    case 2: CE_K(2, CE_RT); break;
    case 4: CE_K(4, CE_RT); break;
    case 8: CE_K(8, CE_RT); break;
    default: MS_ASSERT(!GRAD, "crossentropy: no register path"); CE_K(0, CE_THREADS);
#undef CE_K
    }
    cudaLaunchCheck();
}

void cuda_crossentropy_fwd_x(float *losses, BfIn logits, const int *targets, int N, int V) {
    if (N <= 0) return;
    ce_launch<1, 0>(ce_per(logits, NULL, NULL, V), losses, OutBF{NULL, NULL}, 0, logits,
                    targets, 0.0f, N, V);
}

void cuda_crossentropy_fwd(float *losses, const float *logits, const int *targets, int N, int V) {
    cuda_crossentropy_fwd_x(losses, in_f32(logits), targets, N, V);
}

// The forward plus the gradient for dloss into db (bf16 only; as cuda_crossentropy_bwd_x with
// acc = 0): only where cuda_crossentropy_regs(logits, V).
void cuda_crossentropy_fwd_grad(float *losses, uint16_t *db, BfIn logits, const int *targets,
                                float dloss, int N, int V) {
    if (N <= 0) return;
    static int nsm;
    if (!nsm) cudaCheck(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, 0));
    int per = ce_per(logits, NULL, db, V);
    size_t smem = (size_t)V * (logits.b ? 2 : 4);
    if (per && smem <= 200 * 1024 && !(logits.b && (V % 8 || ((uintptr_t)logits.b & 15)))) {
        unsigned grid = (unsigned)(N < nsm ? N : nsm);
        int nbuf = 2 * smem <= 200 * 1024 ? 2 : 1; // two rows in flight where they fit
        smem *= nbuf;
        OutBF o = {NULL, db};
#define CE_PF(P)                                                                                 \
    do {                                                                                         \
        static int attr;                                                                         \
        if (!attr) cudaCheck(cudaFuncSetAttribute(crossentropy_pf_kernel<P>,                     \
                                                  cudaFuncAttributeMaxDynamicSharedMemorySize,   \
                                                  200 * 1024)), attr = 1;                        \
        crossentropy_pf_kernel<P><<<grid, CE_RT, smem>>>(losses, o, logits, targets, dloss, N, V, \
                                                          nbuf);                                 \
    } while (0)
        switch (per) {
        case 1: CE_PF(1); break;
        case 2: CE_PF(2); break;
        case 4: CE_PF(4); break;
        default: CE_PF(8);
        }
#undef CE_PF
        cudaLaunchCheck();
        return;
    }
    ce_launch<1, 1>(per, losses, OutBF{NULL, db}, 0, logits, targets, dloss, N, V);
}

// dlogits NULL (with db): the register path only
void cuda_crossentropy_bwd_x(float *dlogits, uint16_t *db, int acc, BfIn logits,
                             const int *targets, float dloss, int N, int V) {
    if (N <= 0) return;
    if (!dlogits) acc = 0;
    int per = ce_per(logits, dlogits, db, V);
    if (per) {
        ce_launch<0, 1>(per, NULL, OutBF{dlogits, db}, acc, logits, targets, dloss, N, V);
        return;
    }
    // the strided path: always +=, then the copy
    MS_ASSERT(dlogits, "crossentropy_bwd: no fp32 gradient for the strided path");
    if (!acc) cudaCheck(cudaMemsetAsync(dlogits, 0, (size_t)N * V * sizeof(float), 0));
    crossentropy_bwd_kernel<<<N, CE_THREADS>>>(dlogits, logits, targets, dloss, V);
    cudaLaunchCheck();
    if (db) cuda_f32_to_bf16(db, dlogits, (size_t)N * V);
}

void cuda_crossentropy_bwd(float *dlogits, const float *logits, const int *targets, float dloss,
                           int N, int V) {
    cuda_crossentropy_bwd_x(dlogits, NULL, 1, in_f32(logits), targets, dloss, N, V);
}
