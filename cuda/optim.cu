// optim.cu: AdamW (decoupled weight decay), element-wise (4 parameters per thread and step where
// aligned); deterministic by construction. The bias corrections are formed on the host in double, as core/cpu/ does.
#include <math.h>

#include "bf16_vec.cuh" // vec_loop
#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

#define ADAM_THREADS 256

__device__ __forceinline__ void adamw1(float &p, float g, float &m, float &v, float lr, float b1,
                                       float b2, float eps, float wd, float c1, float c2) {
    float mi = b1 * m + (1.0f - b1) * g;
    float vi = b2 * v + (1.0f - b2) * g * g;
    m = mi;
    v = vi;
    p = p - lr * (mi * c1 / (sqrtf(vi * c2) + eps) + wd * p);
}

// VEC: 4 parameters per thread and step (float4; every pointer 16-byte aligned), the same
// expression per element. H200, the 162M LM (ncu, s6 r1 / r2): the 28.3M-parameter tensors 0.212 ->
// 0.185 ms per call, the 24.6M LM head 0.183 -> 0.159 ms.
// The bf16 table's variant (cuda_adamw_x): gs scales the gradient as it is read (g * gs, the
// product cuda_scale would have stored: the same bits; gs = 1 is exact), and the parameters in the
// ranges of sg (the per-layer weight slices whose bf16 copies the GEMMs read) also go to those
// copies, rounded to bf16 (no conversion pass; one launch for a whole tensor and its slices).
// The 162M LM (s8 r3 ncu): 12 launches, 1.15 ms per step (~4.2 TB/s); the weights' ~85
// conversion launches in the forward (~0.4 ms at base clocks, s8 r1) are gone.
__device__ __forceinline__ uint16_t *adam_seg(const AdamSegs &sg, size_t i) { // i's bf16 slot
    for (int s = 0; s < sg.n; s++)
        if (i >= sg.off[s] && i < sg.off[s] + sg.len[s]) return sg.b[s] + (i - sg.off[s]);
    return NULL;
}
template <int VEC>
__global__ void adamw_kernel(float *p, AdamSegs sg, const float *g, float gs, float *m, float *v,
                             size_t n, float lr, float b1, float b2, float eps, float wd, float c1,
                             float c2) {
    vec_loop<VEC, 4>(n, [&](size_t j) { // VEC: every range in sg starts and ends at a multiple of 4
        float4 P = ((float4 *)p)[j], G = ((const float4 *)g)[j];
        float4 M = ((float4 *)m)[j], W = ((float4 *)v)[j];
        G.x *= gs, G.y *= gs, G.z *= gs, G.w *= gs;
        adamw1(P.x, G.x, M.x, W.x, lr, b1, b2, eps, wd, c1, c2);
        adamw1(P.y, G.y, M.y, W.y, lr, b1, b2, eps, wd, c1, c2);
        adamw1(P.z, G.z, M.z, W.z, lr, b1, b2, eps, wd, c1, c2);
        adamw1(P.w, G.w, M.w, W.w, lr, b1, b2, eps, wd, c1, c2);
        ((float4 *)p)[j] = P, ((float4 *)m)[j] = M, ((float4 *)v)[j] = W;
        if (uint16_t *b = adam_seg(sg, 4 * j)) store_bf16x4(b, 0, P);
    }, [&](size_t i) {
        adamw1(p[i], g[i] * gs, m[i], v[i], lr, b1, b2, eps, wd, c1, c2);
        if (uint16_t *b = adam_seg(sg, i)) *b = (uint16_t)bf16bits(p[i]);
    });
}

void cuda_adamw_x(float *p, const AdamSegs *sg, const float *g, float gs, float *m, float *v,
                  size_t n, float lr, float b1, float b2, float eps, float wd, int t) {
    MS_ASSERT(t >= 1, "adamw step t = %d, must be >= 1", t);
    if (!n) return;
    float c1 = (float)(1.0 / (1.0 - pow(b1, t)));
    float c2 = (float)(1.0 / (1.0 - pow(b2, t)));
    AdamSegs s = {};
    if (sg) s = *sg;
    MS_ASSERT(s.n >= 0 && s.n <= ADAM_SEGS, "adamw: %d bf16 ranges", s.n);
    int vec = aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v);
    for (int i = 0; i < s.n; i++)
        vec &= s.off[i] % 4 == 0 && s.len[i] % 4 == 0 && ((uintptr_t)s.b[i] & 7) == 0;
    if (vec)
        adamw_kernel<1><<<grid_for((n + 3) / 4, ADAM_THREADS), ADAM_THREADS>>>(
            p, s, g, gs, m, v, n, lr, b1, b2, eps, wd, c1, c2);
    else
        adamw_kernel<0><<<grid_for(n, ADAM_THREADS), ADAM_THREADS>>>(p, s, g, gs, m, v, n, lr, b1,
                                                                     b2, eps, wd, c1, c2);
    cudaLaunchCheck();
}

void cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                float b2, float eps, float wd, int t) {
    cuda_adamw_x(p, NULL, g, 1.0f, m, v, n, lr, b1, b2, eps, wd, t);
}
