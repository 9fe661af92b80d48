// optim.cu: AdamW (decoupled weight decay), one thread per parameter; deterministic by
// construction. The bias corrections are formed on the host in double, as core/cpu/ does.
#include <math.h>

#include "cuda_common.cuh"

#define ADAM_THREADS 256

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float lr,
                             float b1, float b2, float eps, float wd, float c1, float c2) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i];
        p[i] = pi - lr * (mi * c1 / (sqrtf(vi * c2) + eps) + wd * pi);
    }
}

void cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                float b2, float eps, float wd, int t) {
    MS_ASSERT(t >= 1, "adamw step t = %d, must be >= 1", t);
    if (!n) return;
    float c1 = (float)(1.0 / (1.0 - pow(b1, t)));
    float c2 = (float)(1.0 / (1.0 - pow(b2, t)));
    adamw_kernel<<<grid_for(n, ADAM_THREADS), ADAM_THREADS>>>(p, g, m, v, n, lr, b1, b2, eps, wd,
                                                               c1, c2);
    cudaLaunchCheck();
}
