// select_common.cuh: device pieces shared by the ms selection kernels (select_bf16.cu's fused and
// two-pass paths, select_blocks.cu's merge-1 path): region pooling of bf16 rows in double, the
// order-preserving score key, the fp64 tensor-core step, the warp histogram bin search and the
// warp bitonic sort of (key, id) pairs. Every kernel that uses them gives the CPU's lists
// (core/cpu/cpu_attn_select.c), so their arithmetic must stay the CPU's.
#ifndef MSLAB_SELECT_COMMON_CUH
#define MSLAB_SELECT_COMMON_CUH

#include <limits.h>
#include <stdint.h>

// sum over n rows (st 32-bit words apart) of a bf16 dim pair (one 32-bit word: low half = even
// dim), in double, rows in order; then / n (the CPU's pool_rows, POOL_MEAN). n == 16 (w 16): the
// 16 loads in flight at once (a dependent chain of 16 loads per element cost as much as the
// whole GEMM of a 128K fused item)
__device__ __forceinline__ void sel_pool2(const uint32_t *src, size_t st, int n, double *m0,
                                          double *m1) {
    double a0 = 0.0, a1 = 0.0;
    if (n == 16) {
        uint32_t v[16];
#pragma unroll
        for (int t = 0; t < 16; t++) v[t] = __ldg(src + t * st);
#pragma unroll
        for (int t = 0; t < 16; t++)
            a0 += (double)__uint_as_float(v[t] << 16), a1 += (double)__uint_as_float(v[t] & 0xffff0000u);
    } else {
#pragma unroll 8
        for (int t = 0; t < n; t++) {
            uint32_t v = __ldg(src + t * st);
            a0 += (double)__uint_as_float(v << 16);
            a1 += (double)__uint_as_float(v & 0xffff0000u);
        }
    }
    *m0 = a0 / n, *m1 = a1 / n;
}

// dst [B, NH, N, D] = mean over each region's rows (w, fewer in the last) of src [B, T, NH, D]
// (bf16), in double; a thread per (b, head, region, dim pair); D even
static __global__ void sel_pool(double *dst, const uint16_t *src, int B, int T, int NH, int D,
                                int w, int N) {
    int D2 = D / 2;
    size_t n = (size_t)B * NH * N * D2;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int d2 = (int)(i % D2);
        size_t x = i / D2; // b * NH * N + hh * N + r
        int r = (int)(x % N), hh = (int)(x / N % NH), b = (int)(x / N / NH);
        int r0 = r * w, cnt = min(T, r0 + w) - r0;
        size_t st = (size_t)NH * D2;
        const uint32_t *s = (const uint32_t *)(src + ((size_t)b * T * NH + hh) * D) + d2 + r0 * st;
        sel_pool2(s, st, cnt, dst + x * D + 2 * d2, dst + x * D + 2 * d2 + 1);
    }
}

// order-preserving bits: larger score -> larger key; NaN lowest; -0 == +0
__device__ __forceinline__ unsigned long long fs_key(double x) {
    if (isnan(x)) return 0ull;
    if (x == 0.0) x = 0.0;
    unsigned long long u = (unsigned long long)__double_as_longlong(x);
    return (u >> 63) ? ~u : (u | 0x8000000000000000ull);
}

// fp64 tensor-core step (mma.sync m8n8k4 f64, twice the FMA rate of the FMA units): c += a b
// over 4 dims, each product added in dimension order
__device__ __forceinline__ void fs_dmma(double (&c)[2], double a, double b) {
    asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, {%3}, {%0,%1};\n"
                 : "+d"(c[0]), "+d"(c[1])
                 : "d"(a), "d"(b));
}

// warp: the bin b of a 256-bin histogram, counting from the top, where the running count reaches
// need (<= total); *above = entries in bins > b
__device__ __forceinline__ int sel_find(const int *hist, int need, int *above) {
    int lane = threadIdx.x & 31, top = 255 - 8 * lane, s = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) s += hist[top - i];
    int inc = s;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int v = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += v;
    }
    int L = __ffs(__ballot_sync(0xffffffffu, inc >= need)) - 1;
    int b = 0, ex = inc - s;
    if (lane == L)
        for (int i = 0; i < 8; i++) {
            int h = hist[top - i];
            if (ex + h >= need) {
                b = top - i;
                break;
            }
            ex += h;
        }
    *above = __shfl_sync(0xffffffffu, ex, L);
    return __shfl_sync(0xffffffffu, b, L);
}

// warp: bitonic sort of n (key, id) pairs, key desc, id asc (the CPU's cand_cmp on fs_key bits:
// NaN last), padded to P = pow2 >= max(n, pmin) (keys 0, ids INT_MAX: after every real entry);
// with cl: by cl asc first (cl padded with INT_MAX), cl swapped along
__device__ __forceinline__ void sel_warp_sort(unsigned long long *bk, int *bi, int n, int pmin,
                                              int *cl = nullptr) {
    int lane = threadIdx.x & 31, P = pmin;
    while (P < n) P <<= 1;
    for (int p = n + lane; p < P; p += 32) {
        bk[p] = 0ull, bi[p] = INT_MAX;
        if (cl) cl[p] = INT_MAX;
    }
    __syncwarp();
    for (int size = 2; size <= P; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = lane; i < P / 2; i += 32) {
                int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                bool up = (lo & size) == 0; // this run sorted best-first
                unsigned long long ka = bk[lo], kb = bk[hi];
                int ia = bi[lo], ib = bi[hi], ca = cl ? cl[lo] : 0, cb = cl ? cl[hi] : 0;
                bool a_first = ca < cb || (ca == cb && (ka > kb || (ka == kb && ia < ib)));
                if (a_first != up) {
                    bk[lo] = kb, bk[hi] = ka, bi[lo] = ib, bi[hi] = ia;
                    if (cl) cl[lo] = cb, cl[hi] = ca;
                }
            }
            __syncwarp();
        }
}

#endif
