// rope.cu: rotary position embedding on x[N, H, D], both pair conventions, forward and backward.
//
// One thread per (token n, pair i): the angle pos[n] * inv_freq[i] is formed in double (the product
// of two floats is exact there) and reduced by double sincos, as core/cpu/ does: positions reach
// ~1e6, where a float angle keeps only ~0.06 rad. cos/sin are rounded to float once and applied to
// the pair in all H heads. Each output element is written by one thread: deterministic.
//   forward  out = R(angle) inp          (overwrite; out may alias inp)
//   backward dinp += R(-angle) dout
// The bf16 table's variants (bf16.h, _x): a bf16 copy of the result in the same pass (the fp32
// result may then be skipped); backward acc = 0 overwrites a dinp known to be zero, and dout may be
// bf16. Tried (s8 r3, removed): interleaved pairs as one 8-byte fp32 / 4-byte bf16 load and
// store with every head's loads in flight at once: backward 56.5 us per call (ncu) vs 43.5 for
// this kernel (ncu at base clocks, r1), forward 41.5 vs 44; the LM step 94.7 vs 94.4 ms.
#include "bf16_vec.cuh"
#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

#define ROPE_THREADS 256
#define RH 4 // heads whose loads are in flight together (LM step, H200: fwd 0.059 -> 0.040 ms)

__device__ __forceinline__ float ld_in(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ld_in(const uint16_t *p, size_t i) {
    return __uint_as_float((unsigned)p[i] << 16);
}

// o: the result (o.f, its bf16 copy o.b: bf16_vec.cuh); acc = 0 (backward): o.f is
// known zero (or not stored), overwrite it. TIN: float, or uint16_t for a bf16 input (the table's
// dq / dk that the attention backward left in bf16 only).
template <int BACKWARD, class TIN>
__global__ void rope_kernel(OutBF o, int acc, const TIN *inp, const float *pos,
                            const float *inv_freq, int N, int H, int D, int style) {
    int half = D / 2;
    int stride = style == ROPE_INTERLEAVED ? 2 : 1, boff = style == ROPE_INTERLEAVED ? 1 : half;
    size_t total = (size_t)N * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int n = (int)(idx / half), i = (int)(idx % half);
        double s, c;
        sincos((double)pos[n] * (double)inv_freq[i], &s, &c);
        float cf = (float)c, sf = (float)s;
        if (BACKWARD) sf = -sf;
        // heads in groups of RH: the group's loads first (nvcc keeps a load after a store that
        // may alias it: one head at a time, a thread had one pair of loads in flight)
        for (int h0 = 0; h0 < H; h0 += RH) {
            float a[RH], b[RH];
#pragma unroll
            for (int j = 0; j < RH; j++)
                if (h0 + j < H) {
                    size_t ia = ((size_t)n * H + h0 + j) * D + (size_t)i * stride;
                    a[j] = ld_in(inp, ia), b[j] = ld_in(inp, ia + boff);
                }
#pragma unroll
            for (int j = 0; j < RH; j++)
                if (h0 + j < H) {
                    size_t ia = ((size_t)n * H + h0 + j) * D + (size_t)i * stride, ib = ia + boff;
                    float ra = a[j] * cf - b[j] * sf, rb = a[j] * sf + b[j] * cf;
                    if (BACKWARD && acc) ra = o.f[ia] + ra, rb = o.f[ib] + rb;
                    out_put(o, ia, ra);
                    out_put(o, ib, rb);
                }
        }
    }
}

template <class TIN>
static void rope_launch(int backward, OutBF o, int acc, const TIN *inp, const float *pos,
                        const float *inv_freq, int N, int H, int D, int style) {
    MS_ASSERT(D % 2 == 0, "rope: head dim %d is odd", D);
    MS_ASSERT(style == ROPE_INTERLEAVED || style == ROPE_HALVES, "rope: style %d", style);
    size_t total = (size_t)N * (D / 2);
    if (!total || H <= 0 || (!o.f && !o.b)) return;
    if (!o.f) acc = 0;
    unsigned g = grid_for(total, ROPE_THREADS);
    if (backward)
        rope_kernel<1, TIN><<<g, ROPE_THREADS>>>(o, acc, inp, pos, inv_freq, N, H, D, style);
    else rope_kernel<0, TIN><<<g, ROPE_THREADS>>>(o, 0, inp, pos, inv_freq, N, H, D, style);
    cudaLaunchCheck();
}

void cuda_rope_fwd_x(float *out, uint16_t *ob, const float *inp, const float *pos,
                     const float *inv_freq, int N, int H, int D, int style) {
    rope_launch(0, OutBF{out, ob}, 0, inp, pos, inv_freq, N, H, D, style);
}

void cuda_rope_bwd_x(float *dinp, uint16_t *db, int acc, const float *dout, const uint16_t *dout_b,
                     const float *pos, const float *inv_freq, int N, int H, int D, int style) {
    if (dout_b) rope_launch(1, OutBF{dinp, db}, acc, dout_b, pos, inv_freq, N, H, D, style);
    else rope_launch(1, OutBF{dinp, db}, acc, dout, pos, inv_freq, N, H, D, style);
}

void cuda_rope_fwd(float *out, const float *inp, const float *pos, const float *inv_freq, int N,
                   int H, int D, int style) {
    cuda_rope_fwd_x(out, NULL, inp, pos, inv_freq, N, H, D, style);
}

void cuda_rope_bwd(float *dinp, const float *dout, const float *pos, const float *inv_freq,
                   int N, int H, int D, int style) {
    cuda_rope_bwd_x(dinp, NULL, 1, dout, NULL, pos, inv_freq, N, H, D, style);
}
