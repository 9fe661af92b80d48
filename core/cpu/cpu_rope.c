// cpu_rope.c: rotary position embedding on x[N, H, D], both pair conventions.
// The angle pos * inv_freq is formed and reduced in double: positions reach ~1e6 and a float angle
// of that size keeps only ~0.06 rad of precision, while the product of two floats is exact in
// double and sin/cos of it are correctly reduced. cos/sin are computed once per (token, pair) and
// applied to all H heads.
#include <math.h>

#include "../common.h"
#include "../ops.h"
#include "cpu_internal.h"

// forward: out = R(angle) inp (overwrite; out may alias inp); backward: out += R(-angle) inp
static void rope_apply(float *out, const float *inp, const float *pos, const float *inv_freq, int N,
                       int H, int D, int style, int backward) {
    MS_ASSERT(D % 2 == 0, "rope: head dim %d is odd", D);
    MS_ASSERT(style == ROPE_INTERLEAVED || style == ROPE_HALVES, "rope: style %d", style);
    int half = D / 2;
    // pair i is (a_off + i*stride, b_off + i*stride) within a head
    int stride = style == ROPE_INTERLEAVED ? 2 : 1, boff = style == ROPE_INTERLEAVED ? 1 : half;
#pragma omp parallel for schedule(static) if ((long)N * H * D > 65536)
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < half; i++) {
            double ang = (double)pos[n] * (double)inv_freq[i];
            float c = (float)cos(ang), s = (float)sin(ang);
            if (backward) s = -s;
            for (int h = 0; h < H; h++) {
                size_t base = ((size_t)n * H + h) * D;
                size_t ia = base + (size_t)i * stride, ib = ia + boff;
                float a = inp[ia], b = inp[ib];
                float ra = a * c - b * s, rb = a * s + b * c;
                if (backward) {
                    out[ia] += ra;
                    out[ib] += rb;
                } else {
                    out[ia] = ra;
                    out[ib] = rb;
                }
            }
        }
    }
}

void cpu_rope_fwd(float *out, const float *inp, const float *pos, const float *inv_freq, int N,
                  int H, int D, int style) {
    rope_apply(out, inp, pos, inv_freq, N, H, D, style, 0);
}

void cpu_rope_bwd(float *dinp, const float *dout, const float *pos, const float *inv_freq, int N,
                  int H, int D, int style) {
    rope_apply(dinp, dout, pos, inv_freq, N, H, D, style, 1);
}
