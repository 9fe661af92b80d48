// norm.cu: RMSNorm forward and backward.
//
// Forward and the input gradient: one warp per row; the row's sum of squares (and the backward's
// dot product) accumulate in double, as core/cpu/ does, and combine across lanes in a fixed
// butterfly. The weight gradient dw[c] = sum_n dy[n,c] x[n,c] rstd[n] is a reduction over rows:
// pass 1 cuts the rows into fixed chunks of NORM_RCH (a function of N only), one thread column per
// (chunk, c) sums its chunk's rows in a fixed order and writes a partial; pass 2 adds the partials
// of each column in chunk order to dw. No atomics: bitwise-identical on every call.
// With C <= 1536 both backward passes run as one kernel that reads dy and x from memory once
// (rmsnorm_bwd_fused_kernel: the same sums in the same order; MSLAB_NORM_FUSED=0: two kernels);
// by default on float4 rows and with the final sum over 32 row lanes (MSLAB_NORM_FUSED=2; 1: the
// fused kernel with the two kernels' bits; 8 lanes until s8).
// H200, the 4096 x 8 LM step (N = 32768, C = 768, with the bf16 copy): 116.6 ms/step with mode 2,
// 119.2 with 1 (fused scalar: 0.195 ms + 0.037 ms final per call), 119.5 with 0.
// Rows in registers (forward: C <= 1024, the backward's VEC path: C <= 1024; MSLAB_NORM_REGS=0:
// off): each lane keeps its elements of the row between the two passes instead of reading them
// again (the same arithmetic in the same order: the same bits). H200, the LM step (s6 r1 / r2,
// ncu): backward 0.127 ms per call (was 0.195), its dw final sum 0.011 (0.037, its loads now
// unrolled); the step 0.8 ms slower with MSLAB_NORM_REGS=0. The forward with the bf16 table's
// residual add (res): 0.115 ms (0.141 while the sum's stores came between the loads).
// float4 rows (s8): the forward's lanes hold float4 chunks (a quarter of the load / store
// instructions; the sum of squares in another order: other bits of rstd), and the backward's
// register path loads the old dx with dy and x, before the dot, instead of after it (one memory
// round trip per row instead of two; the same bits). H200, the LM step (s8 r2): part of the 98.7
// -> 96.4 ms/step of s8's four switches; ncu (s8 r3, N = 32768, C = 768): forward with the add
// 82 us per call (124.5 at base clocks before), backward 112 us (134-138). The scalar forward and
// the backward's late dx load (MSLAB_NORM_VEC=0) were removed in s9.
// The bf16 table's variants (bf16.h, _x): a bf16 copy of out / dinp written in the same pass (the
// forward's fp32 out may then be skipped), acc = 0 to overwrite a dinp known to be zero, and
// dw_acc = 0 to overwrite a dw known to be zero (s9: the model's gradients are a deferred zero
// that the weight gradients take: no memset of their 3 KB slices before the backward).
#include <stdlib.h>
#include <string.h>

#include "bf16_vec.cuh"
#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

#define NORM_THREADS 256 // 8 warps = 8 rows per block
#define NORM_RCH 32      // rows per dw partial (4 per warp in the fused kernel)
#define NORM_TY 8        // row lanes per column in the dw partial kernel

static int norm_regs(void) { // MSLAB_NORM_REGS=0: the rows are not kept in registers (measurements)
    static int regs = -1;
    if (regs < 0) regs = !(getenv("MSLAB_NORM_REGS") && !strcmp(getenv("MSLAB_NORM_REGS"), "0"));
    return regs;
}

// PER > 0 (C <= 32 PER): the lane's PER elements of the row stay in registers for the second pass
// (the same order: the same bits as PER = 0). res (the bf16 table's deferred residual add): the
// input is inp + res, element by element as cuda_add, and is written to sum on the way.
// V4 > 0 (C % 4 == 0, every pointer 16-byte aligned, C <= 128 V4): the lane's float4 chunks
// lane, lane + 32, ... (V4 of them) in registers: a quarter of the load / store instructions
// (the sum of squares in another order than PER: other bits of rstd, the same sum otherwise).
template <int PER, int V4 = 0>
__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_fwd_kernel(OutBF o, float *rstd, const float *inp, const float *res, float *sum,
                   const float *w, int N, int C, float eps) {
    int n = blockIdx.x * (NORM_THREADS / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= N) return;
    size_t row = (size_t)n * C;
    float rx[PER ? PER : 1];
    double ss = 0;
    if (V4) {
        const float4 *i4 = (const float4 *)(inp + row), *r4 = (const float4 *)(res + row);
        float4 x4[V4 ? V4 : 1];
        int nq = C / 4;
#pragma unroll
        for (int j = 0; j < V4; j++)
            if (lane + 32 * j < nq) x4[j] = i4[lane + 32 * j];
        if (res) {
#pragma unroll
            for (int j = 0; j < V4; j++)
                if (lane + 32 * j < nq) {
                    float4 b = r4[lane + 32 * j];
                    x4[j].x += b.x, x4[j].y += b.y, x4[j].z += b.z, x4[j].w += b.w;
                }
#pragma unroll
            for (int j = 0; j < V4; j++)
                if (lane + 32 * j < nq) ((float4 *)(sum + row))[lane + 32 * j] = x4[j];
        }
#pragma unroll
        for (int j = 0; j < V4; j++)
            if (lane + 32 * j < nq) {
                ss += (double)x4[j].x * x4[j].x;
                ss += (double)x4[j].y * x4[j].y;
                ss += (double)x4[j].z * x4[j].z;
                ss += (double)x4[j].w * x4[j].w;
            }
        ss = warp_sum(ss);
        float r = (float)(1.0 / sqrt(ss / C + eps));
#pragma unroll
        for (int j = 0; j < V4; j++)
            if (lane + 32 * j < nq) {
                float4 g = ((const float4 *)w)[lane + 32 * j], v = x4[j];
                out_put4(o, row + 4 * (size_t)(lane + 32 * j),
                         make_float4(v.x * r * g.x, v.y * r * g.y, v.z * r * g.z, v.w * r * g.w));
            }
        if (lane == 0) rstd[n] = r;
        return;
    }
    if (PER) { // every load before the first store: nvcc keeps a load after a store that may alias it
#pragma unroll
        for (int j = 0; j < PER; j++)
            if (lane + 32 * j < C) rx[j] = inp[row + lane + 32 * j];
        if (res) {
#pragma unroll
            for (int j = 0; j < PER; j++)
                if (lane + 32 * j < C) rx[j] += res[row + lane + 32 * j];
#pragma unroll
            for (int j = 0; j < PER; j++)
                if (lane + 32 * j < C) sum[row + lane + 32 * j] = rx[j];
        }
#pragma unroll
        for (int j = 0; j < PER; j++)
            if (lane + 32 * j < C) ss += (double)rx[j] * rx[j];
    } else
        for (int c = lane; c < C; c += 32) {
            float v = res ? inp[row + c] + res[row + c] : inp[row + c];
            if (res) sum[row + c] = v;
            ss += (double)v * v;
        }
    ss = warp_sum(ss);
    float r = (float)(1.0 / sqrt(ss / C + eps));
    if (PER) {
#pragma unroll
        for (int j = 0; j < PER; j++) {
            int c = lane + 32 * j;
            if (c < C) out_put(o, row + c, rx[j] * r * w[c]);
        }
    } else
        for (int c = lane; c < C; c += 32) {
            float v = res ? inp[row + c] + res[row + c] : inp[row + c];
            out_put(o, row + c, v * r * w[c]);
        }
    if (lane == 0) rstd[n] = r;
}

// dx_c += r w_c dy_c - (r^3 / C) x_c sum_j dy_j w_j x_j
__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_bwd_dx_kernel(float *dinp, uint16_t *db, int acc, const float *dout, const float *inp,
                      const float *w, const float *rstd, int N, int C) {
    int n = blockIdx.x * (NORM_THREADS / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
    float *dx = dinp + (size_t)n * C;
    double dot = 0;
    for (int c = lane; c < C; c += 32) dot += (double)dy[c] * w[c] * x[c];
    dot = warp_sum(dot);
    float r = rstd[n];
    float k = (float)((double)r * r * r * dot / C);
    for (int c = lane; c < C; c += 32) {
        float g = acc ? dx[c] + (r * w[c] * dy[c] - k * x[c]) : r * w[c] * dy[c] - k * x[c];
        dx[c] = g;
        if (db) db[(size_t)n * C + c] = (uint16_t)bf16bits(g);
    }
}

// grid (ceil(C / 32), nchunk), block (32, NORM_TY): part[chunk, c]
__global__ void rmsnorm_dw_partial_kernel(float *part, const float *dout, const float *inp,
                                          const float *rstd, int N, int C, int nchunk) {
    __shared__ float sh[NORM_TY][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    for (int chunk = blockIdx.y; chunk < nchunk; chunk += gridDim.y) {
        int n0 = chunk * NORM_RCH, n1 = min(N, n0 + NORM_RCH);
        float acc = 0.0f;
        if (c < C)
            for (int n = n0 + threadIdx.y; n < n1; n += NORM_TY)
                acc += dout[(size_t)n * C + c] * inp[(size_t)n * C + c] * rstd[n];
        sh[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && c < C) {
            float s = sh[0][threadIdx.x];
            for (int i = 1; i < NORM_TY; i++) s += sh[i][threadIdx.x];
            part[(size_t)chunk * C + c] = s;
        }
        __syncthreads();
    }
}

// grid ceil(C / 32), block (32, lanes <= NORM_FL): row lane y sums the partials y, y + lanes, ...
// in order, then the lanes' sums are added in lane order (lanes = 1: one sequential sum)
#define NORM_FL 32 // the fused path's lanes (s8: 11.2 us per call with 8, the LM's 1024 partials)
__global__ void rmsnorm_dw_final_kernel(float *dw, int dw_acc, const float *part, int nchunk, int C) {
    __shared__ float sh[NORM_FL][33];
    int c = blockIdx.x * 32 + threadIdx.x, lanes = blockDim.y;
    float s = 0.0f;
    if (c < C) { // unrolled: the loads of 8 partials in flight at once, the adds in the same order
#pragma unroll 8
        for (int i = threadIdx.y; i < nchunk; i += lanes) s += part[(size_t)i * C + c];
    }
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = sh[0][threadIdx.x];
        for (int i = 1; i < lanes; i++) t += sh[i][threadIdx.x];
        dw[c] = dw_acc ? dw[c] + t : t;
    }
}

void cuda_rmsnorm_fwd_x(float *out, uint16_t *ob, float *rstd, const float *inp, const float *res,
                        float *sum, const float *w, int N, int C, float eps) {
    if (N <= 0) return;
    OutBF o = {out, ob};
    unsigned g = cdiv_u(N, NORM_THREADS / 32);
    int per = norm_regs() ? (C + 31) / 32 : 0; // registers per lane for the row
    int v4 = norm_regs() && C % 4 == 0 && aligned16(out) && ((uintptr_t)ob & 7) == 0 &&
             aligned16(inp) && aligned16(res) && aligned16(sum) && aligned16(w) ? (C / 4 + 31) / 32 : 0;
#define NF_K(P) rmsnorm_fwd_kernel<P><<<g, NORM_THREADS>>>(o, rstd, inp, res, sum, w, N, C, eps)
#define NF_V(V) rmsnorm_fwd_kernel<0, V><<<g, NORM_THREADS>>>(o, rstd, inp, res, sum, w, N, C, eps)
    if (v4 > 0 && v4 <= 2) NF_V(2);
    else if (v4 > 0 && v4 <= 4) NF_V(4);
    else if (v4 > 0 && v4 <= 6) NF_V(6);
    else if (v4 > 0 && v4 <= 8) NF_V(8);
    else if (per > 0 && per <= 8) NF_K(8);
    else if (per > 0 && per <= 16) NF_K(16);
    else if (per > 0 && per <= 24) NF_K(24);
    else if (per > 0 && per <= 32) NF_K(32);
    else NF_K(0);
#undef NF_K
#undef NF_V
    cudaLaunchCheck();
}

void cuda_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                      float eps) {
    cuda_rmsnorm_fwd_x(out, NULL, rstd, inp, NULL, NULL, w, N, C, eps);
}

// Both gradients in one pass: block = one dw chunk of NORM_RCH rows, warp w takes rows n0 + w,
// n0 + w + 8, ... (the partial kernel's row lanes): the dot, then dx and the row's dw terms, summed
// per warp in shared memory (8 x C floats), the 8 warps combined in warp order. Every sum in the
// order of the two kernels above (the same bits); dy and x come from memory once (their second
// read, right after the dot, hits L1 / L2) instead of again in the partial kernel.
// VEC (C % 4 == 0, every row 16-byte aligned): lane l takes the float4 chunks l, l + 32, ... of a
// row (the dot's terms in another order than the scalar path: other bits, the same sums otherwise).
// PER > 0 (VEC, C <= 128 PER): the lane's PER chunks of dy and x stay in registers between the dot
// and the second pass (the same terms in the same order: the same bits as PER = 0). With PER = 0
// the second pass re-read them from L2 / HBM: a wave's rows (~200 MB at the LM's shape) do not
// fit L1 / L2, and the kernel ran at ~2.3 TB/s (0.195 ms for 450 MB at N = 32768, C = 768).
// (116 registers: 2 blocks per SM. Tried, s9 r6: __launch_bounds__ for 3 (80 registers, 104 bytes
// spilled): 158 us per call vs 117 at the LM's shape, ncu.)
template <int VEC, int PER>
__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_bwd_fused_kernel(float *dinp, uint16_t *db, int acc, float *part, const float *dout,
                         const float *inp, const float *w, const float *rstd, int N, int C) {
    extern __shared__ float shw[]; // [8][C]
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int n0 = blockIdx.x * NORM_RCH, n1 = min(N, n0 + NORM_RCH);
    float *dws = shw + (size_t)warp * C;
    for (int c = lane; c < C; c += 32) dws[c] = 0.0f;
    __syncwarp(); // VEC: other lanes than these add to them
    const float4 *w4 = (const float4 *)w;
    for (int n = n0 + warp; n < n1; n += NORM_THREADS / 32) {
        const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        const float4 *x4 = (const float4 *)x, *dy4 = (const float4 *)dy;
        float4 rd[PER ? PER : 1], rx[PER ? PER : 1], rg[PER ? PER : 1];
        double dot = 0;
        auto dot4 = [&](float4 a, float4 b, float4 e) {
            dot += (double)a.x * b.x * e.x;
            dot += (double)a.y * b.y * e.y;
            dot += (double)a.z * b.z * e.z;
            dot += (double)a.w * b.w * e.w;
        };
        float *dx = dinp ? dinp + (size_t)n * C : NULL;
        if (VEC && PER) { // (the old dx too: its loads in flight with dy's and x's, not after the dot)
#pragma unroll
            for (int j = 0; j < PER; j++)
                if (lane + 32 * j < C / 4) {
                    rd[j] = dy4[lane + 32 * j], rx[j] = x4[lane + 32 * j];
                    if (dx && acc) rg[j] = ((const float4 *)dx)[lane + 32 * j];
                }
#pragma unroll
            for (int j = 0; j < PER; j++)
                if (lane + 32 * j < C / 4) dot4(rd[j], w4[lane + 32 * j], rx[j]);
        } else if (VEC)
            for (int q = lane; q < C / 4; q += 32) dot4(dy4[q], w4[q], x4[q]);
        else
            for (int c = lane; c < C; c += 32) dot += (double)dy[c] * w[c] * x[c];
        dot = warp_sum(dot);
        float r = rstd[n];
        float k = (float)((double)r * r * r * dot / C);
        auto pass2 = [&](int q, float4 a, float4 e, const float4 *old) { // chunk q: dx, its copy, dw terms
            float4 b = w4[q];
            if (dx) {
                float4 g = acc ? (old ? *old : ((float4 *)dx)[q]) : make_float4(0, 0, 0, 0);
                g.x = acc ? g.x + (r * b.x * a.x - k * e.x) : r * b.x * a.x - k * e.x;
                g.y = acc ? g.y + (r * b.y * a.y - k * e.y) : r * b.y * a.y - k * e.y;
                g.z = acc ? g.z + (r * b.z * a.z - k * e.z) : r * b.z * a.z - k * e.z;
                g.w = acc ? g.w + (r * b.w * a.w - k * e.w) : r * b.w * a.w - k * e.w;
                ((float4 *)dx)[q] = g;
                if (db) store_bf16x4(db + (size_t)n * C, 4 * (size_t)q, g);
            }
            float4 t = ((float4 *)dws)[q];
            t.x += a.x * e.x * r, t.y += a.y * e.y * r, t.z += a.z * e.z * r, t.w += a.w * e.w * r;
            ((float4 *)dws)[q] = t;
        };
        if (VEC && PER) {
#pragma unroll
            for (int j = 0; j < PER; j++)
                if (lane + 32 * j < C / 4) pass2(lane + 32 * j, rd[j], rx[j], &rg[j]);
        } else if (VEC) {
            for (int q = lane; q < C / 4; q += 32) pass2(q, dy4[q], x4[q], NULL);
        } else {
            for (int c = lane; c < C; c += 32) {
                float xv = x[c], dyv = dy[c];
                if (dx) {
                    float g = acc ? dx[c] + (r * w[c] * dyv - k * xv) : r * w[c] * dyv - k * xv;
                    dx[c] = g;
                    if (db) db[(size_t)n * C + c] = (uint16_t)bf16bits(g);
                }
                dws[c] += dyv * xv * r;
            }
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += NORM_THREADS) {
        float s = shw[c];
        for (int i = 1; i < NORM_THREADS / 32; i++) s += shw[(size_t)i * C + c];
        part[(size_t)blockIdx.x * C + c] = s;
    }
}

void cuda_rmsnorm_bwd_x(float *dinp, uint16_t *db, int acc, float *dw, int dw_acc,
                        const float *dout, const float *inp, const float *w, const float *rstd,
                        int N, int C) {
    if (N <= 0 || C <= 0) return;
    // MSLAB_NORM_FUSED: 0 the two kernels, 1 the fused kernel (the same bits as 0), 2 (default)
    // the fused kernel on float4 where it can and the final sum over 8 lanes (other bits)
    static int fused = -1;
    if (fused < 0) fused = getenv("MSLAB_NORM_FUSED") ? atoi(getenv("MSLAB_NORM_FUSED")) : 2;
    size_t smem = (size_t)(NORM_THREADS / 32) * C * sizeof(float);
    if (dw && fused && smem <= 48 * 1024) {
        int nchunk = (int)cdiv_u(N, NORM_RCH);
        float *part = (float *)cuda_scratch(SCRATCH_NORM, (size_t)nchunk * C * sizeof(float));
        int vec = fused == 2 && C % 4 == 0 && aligned16(dinp) && aligned16(db) &&
                  aligned16(dout) && aligned16(inp) && aligned16(w);
        // the register path (MSLAB_NORM_REGS=0: off): the smallest PER that holds the row
        int per = vec && norm_regs() ? (C / 4 + 31) / 32 : 0;
        per = per <= 2 ? per : per <= 4 ? 4 : per <= 6 ? 6 : per <= 8 ? 8 : 0;
#define NB_K(V, P) rmsnorm_bwd_fused_kernel<V, P><<<nchunk, NORM_THREADS, smem>>>(dinp, db, acc, \
                       part, dout, inp, w, rstd, N, C)
        switch (vec ? per : -1) {
        case 1: case 2: NB_K(1, 2); break;
        case 4: NB_K(1, 4); break;
        case 6: NB_K(1, 6); break;
        case 8: NB_K(1, 8); break;
        case 0: NB_K(1, 0); break;
        default: NB_K(0, 0);
        }
#undef NB_K
        cudaLaunchCheck();
        rmsnorm_dw_final_kernel<<<cdiv_u(C, 32), dim3(32, fused == 2 ? NORM_FL : 1)>>>(
            dw, dw_acc, part, nchunk, C);
        cudaLaunchCheck();
        return;
    }
    if (dinp) {
        rmsnorm_bwd_dx_kernel<<<cdiv_u(N, NORM_THREADS / 32), NORM_THREADS>>>(
            dinp, db, acc, dout, inp, w, rstd, N, C);
        cudaLaunchCheck();
    }
    if (dw) {
        int nchunk = (int)cdiv_u(N, NORM_RCH);
        float *part = (float *)cuda_scratch(SCRATCH_NORM, (size_t)nchunk * C * sizeof(float));
        rmsnorm_dw_partial_kernel<<<dim3(cdiv_u(C, 32), nchunk < 65535 ? nchunk : 65535),
                                    dim3(32, NORM_TY)>>>(part, dout, inp, rstd, N, C, nchunk);
        cudaLaunchCheck();
        rmsnorm_dw_final_kernel<<<cdiv_u(C, 32), dim3(32, 1)>>>(dw, dw_acc, part, nchunk, C);
        cudaLaunchCheck();
    }
}

void cuda_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                      const float *w, const float *rstd, int N, int C) {
    cuda_rmsnorm_bwd_x(dinp, NULL, 1, dw, 1, dout, inp, w, rstd, N, C);
}
