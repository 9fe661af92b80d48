// cpu_decode.c: attention of a few new queries over a KV cache (generation, chunked prefill).
// Per (query row, kv head) item: the G query heads of the group score every visible key (the keys
// are read once for the G heads), a max-subtracted softmax, then the weighted sum of values. Items
// are independent and each output row is one thread's fixed-order sums, so results do not depend
// on the thread count. Work is O(Tq * (t0 + Tq) * H * D), memory one score row per head.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

#include <math.h>
#include <stdlib.h>

#include "../common.h"
#include "../ops.h"
#include "cpu_internal.h"

static inline float dot(const float *a, const float *b, int D) {
    int d = 0;
    float s = 0.0f;
    if (D >= CPU_VL) {
        vf acc = vbcast(0.0f);
        for (; d + CPU_VL <= D; d += CPU_VL) acc += vload(a + d) * vload(b + d);
        s = vhsum(acc);
    }
    for (; d < D; d++) s += a[d] * b[d];
    return s;
}

void cpu_attention_decode(float *out, const float *q, const float *k, const float *v, int Tq, int t0,
                          int H, int KVH, int D) {
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention_decode: H = %d not a multiple of KVH = %d", H, KVH);
    MS_ASSERT(Tq > 0 && t0 >= 0, "attention_decode: Tq = %d, t0 = %d", Tq, t0);
    int G = H / KVH, S = t0 + Tq;
    float scale = (float)(1.0 / sqrt((double)D));
    size_t ldk = (size_t)KVH * D;
    long items = (long)Tq * KVH;
    int par = (double)Tq * S * H * D > (double)(1 << 20); // a team costs more below
    (void)par;
#pragma omp parallel if (par)
    {
        float *s = ms_malloc(sizeof(float) * (size_t)G * S);
#pragma omp for schedule(static)
        for (long it = 0; it < items; it++) {
            int i = (int)(it / KVH), g = (int)(it % KVH), n = t0 + i + 1; // keys 0 .. t0+i
            const float *qg = q + ((size_t)i * H + (size_t)g * G) * D;
            for (int j = 0; j < n; j++) {
                const float *kj = k + (size_t)j * ldk + (size_t)g * D;
                for (int h = 0; h < G; h++) s[(size_t)h * S + j] = dot(qg + (size_t)h * D, kj, D) * scale;
            }
            for (int h = 0; h < G; h++) {
                float *sh = s + (size_t)h * S, m = sh[0], sum = 0.0f;
                for (int j = 1; j < n; j++) m = sh[j] > m ? sh[j] : m;
                for (int j = 0; j < n; j++) sum += (sh[j] = expf(sh[j] - m));
                float *o = out + ((size_t)i * H + (size_t)g * G + h) * D, inv = 1.0f / sum;
                for (int d = 0; d < D; d++) o[d] = 0.0f;
                for (int j = 0; j < n; j++) {
                    const float *vj = v + (size_t)j * ldk + (size_t)g * D;
                    float p = sh[j];
                    for (int d = 0; d < D; d++) o[d] += p * vj[d];
                }
                for (int d = 0; d < D; d++) o[d] *= inv;
            }
        }
        free(s);
    }
}
