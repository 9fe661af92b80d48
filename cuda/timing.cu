// timing.cu: CUDA events, memory probes and a device-side random fill for the benchmarks
// (cuda/timing.h). Errors are returned, not aborted on: a benchmark reports a kernel that fails
// and goes on with the next one where the context survives.
#include <cuda_bf16.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>

#include "cuda_common.cuh"
extern "C" {
#include "timing.h"
}

static char err_text[512];

static int note(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return 0;
    snprintf(err_text, sizeof err_text, "%s: CUDA error %d (%s): %s", what, (int)e,
             cudaGetErrorName(e), cudaGetErrorString(e));
    return -1;
}

extern "C" const char *cuda_error(void) { return err_text; }

extern "C" int cuda_sync_check(void) {
    if (note(cudaGetLastError(), "launch")) return -1;
    return note(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

extern "C" double cuda_time_median_ms(CudaTimedFn fn, void *arg, int warmup, int reps,
                                      double *samples) {
    if (reps < 1) reps = 1;
    for (int i = 0; i < warmup; i++) fn(arg);
    if (cuda_sync_check()) return -1;
    cudaEvent_t a, b;
    if (note(cudaEventCreate(&a), "cudaEventCreate") || note(cudaEventCreate(&b), "cudaEventCreate"))
        return -1;
    double *t = (double *)malloc(sizeof(double) * (size_t)reps);
    int bad = 0;
    for (int i = 0; i < reps && !bad; i++) {
        float ms = 0;
        // one event pair per call and a wait after it: no overlap between timed calls
        bad = note(cudaEventRecord(a, 0), "cudaEventRecord");
        fn(arg);
        bad = bad || note(cudaEventRecord(b, 0), "cudaEventRecord") ||
              note(cudaEventSynchronize(b), "timed call") || note(cudaGetLastError(), "timed call") ||
              note(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
        t[i] = ms;
        if (samples) samples[i] = ms;
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    double med = -1;
    if (!bad) {
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    }
    free(t);
    return med;
}

extern "C" size_t cuda_mem_used(void) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) return 0;
    return tot - fr;
}

extern "C" size_t cuda_mem_total(void) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) return 0;
    return tot;
}

static std::atomic<int> watch_on;
static std::atomic<size_t> watch_peak;
static int watch_dev;
static pthread_t watch_thread;

static void watch_sample(void) {
    size_t used = cuda_mem_used(), old = watch_peak.load();
    while (used > old && !watch_peak.compare_exchange_weak(old, used)) {
    }
}

static void *watch_main(void *arg) {
    (void)arg;
    cudaSetDevice(watch_dev); // the runtime's primary context of the benchmark's device
    while (watch_on.load()) {
        watch_sample();
        usleep(20);
    }
    return NULL;
}

extern "C" int cuda_mem_watch_start(void) {
    if (note(cudaGetDevice(&watch_dev), "cudaGetDevice")) return -1;
    watch_peak = 0;
    watch_sample();
    watch_on = 1;
    if (pthread_create(&watch_thread, NULL, watch_main, NULL) != 0) {
        watch_on = 0;
        snprintf(err_text, sizeof err_text, "pthread_create failed");
        return -1;
    }
    return 0;
}

extern "C" size_t cuda_mem_watch_stop(void) {
    note(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    watch_sample();
    watch_on = 0;
    pthread_join(watch_thread, NULL);
    return watch_peak.load();
}

extern "C" void *cuda_try_alloc(size_t bytes) {
    void *p = NULL;
    if (note(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc")) {
        cudaGetLastError(); // out of memory is not sticky: clear it for the next call
        return NULL;
    }
    return p;
}

extern "C" void cuda_try_free(void *p) {
    if (p) cudaFree(p);
}

extern "C" void cuda_zero_bytes(void *p, size_t bytes) {
    if (p && bytes) note(cudaMemsetAsync(p, 0, bytes, 0), "cudaMemsetAsync");
}

// splitmix64 of (seed, i): independent uniform bits per element; Box-Muller to a normal.
__device__ static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void fill_normal_kernel(__nv_bfloat16 *x, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t r = mix64(seed * 0x9e3779b97f4a7c15ull + i);
        float u1 = ((uint32_t)(r >> 40) + 1.0f) * (1.0f / 16777217.0f); // (0, 1]
        float u2 = (uint32_t)(r & 0xffffff) * (1.0f / 16777216.0f);
        float z = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
        x[i] = __float2bfloat16_rn(scale * z);
    }
}

extern "C" void cuda_fill_bf16_normal(uint16_t *x, size_t n, uint64_t seed, float scale) {
    if (!n) return;
    size_t blocks = (n + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    fill_normal_kernel<<<(unsigned)blocks, 256>>>((__nv_bfloat16 *)x, n, seed, scale);
    note(cudaGetLastError(), "fill_normal_kernel");
}
