// rope.cu: rotary position embedding on x[N, H, D], both pair conventions, forward and backward.
//
// One thread per (token n, pair i): the angle pos[n] * inv_freq[i] is formed in double (the product
// of two floats is exact there) and reduced by double sincos, as core/cpu/ does: positions reach
// ~1e6, where a float angle keeps only ~0.06 rad. cos/sin are rounded to float once and applied to
// the pair in all H heads. Each output element is written by one thread: deterministic.
//   forward  out = R(angle) inp          (overwrite; out may alias inp)
//   backward dinp += R(-angle) dout
// The bf16 table's variants (bf16.h, _x): a bf16 copy of the result in the same pass; backward
// acc = 0 overwrites a dinp known to be zero.
#include "bf16_vec.cuh"
#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

#define ROPE_THREADS 256

// ob: bf16 copy of the result (NULL: none); acc = 0 (backward): out is known zero, overwrite it
template <int BACKWARD>
__global__ void rope_kernel(float *out, uint16_t *ob, int acc, const float *inp, const float *pos,
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
        for (int h = 0; h < H; h++) {
            size_t base = ((size_t)n * H + h) * D;
            size_t ia = base + (size_t)i * stride, ib = ia + boff;
            float a = inp[ia], b = inp[ib];
            float ra = a * cf - b * sf, rb = a * sf + b * cf;
            if (BACKWARD && acc) ra = out[ia] + ra, rb = out[ib] + rb;
            out[ia] = ra;
            out[ib] = rb;
            if (ob) ob[ia] = (uint16_t)bf16bits(ra), ob[ib] = (uint16_t)bf16bits(rb);
        }
    }
}

static void rope_launch(int backward, float *out, uint16_t *ob, int acc, const float *inp,
                        const float *pos, const float *inv_freq, int N, int H, int D, int style) {
    MS_ASSERT(D % 2 == 0, "rope: head dim %d is odd", D);
    MS_ASSERT(style == ROPE_INTERLEAVED || style == ROPE_HALVES, "rope: style %d", style);
    size_t total = (size_t)N * (D / 2);
    if (!total || H <= 0) return;
    if (backward)
        rope_kernel<1><<<grid_for(total, ROPE_THREADS), ROPE_THREADS>>>(out, ob, acc, inp, pos,
                                                                        inv_freq, N, H, D, style);
    else
        rope_kernel<0><<<grid_for(total, ROPE_THREADS), ROPE_THREADS>>>(out, ob, 0, inp, pos,
                                                                        inv_freq, N, H, D, style);
    cudaLaunchCheck();
}

void cuda_rope_fwd_x(float *out, uint16_t *ob, const float *inp, const float *pos,
                     const float *inv_freq, int N, int H, int D, int style) {
    rope_launch(0, out, ob, 0, inp, pos, inv_freq, N, H, D, style);
}

void cuda_rope_bwd_x(float *dinp, uint16_t *db, int acc, const float *dout, const float *pos,
                     const float *inv_freq, int N, int H, int D, int style) {
    rope_launch(1, dinp, db, acc, dout, pos, inv_freq, N, H, D, style);
}

void cuda_rope_fwd(float *out, const float *inp, const float *pos, const float *inv_freq, int N,
                   int H, int D, int style) {
    rope_launch(0, out, NULL, 0, inp, pos, inv_freq, N, H, D, style);
}

void cuda_rope_bwd(float *dinp, const float *dout, const float *pos, const float *inv_freq,
                   int N, int H, int D, int style) {
    rope_launch(1, dinp, NULL, 1, dout, pos, inv_freq, N, H, D, style);
}
