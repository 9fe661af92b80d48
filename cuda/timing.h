// timing.h: GPU timing and memory probes for the benchmarks (bench/attn_bench.c), callable from C.
//
// Times are CUDA events recorded on the default stream around one call of fn, the median of `reps`
// such calls after `warmup` untimed ones: what the GPU spent on the work fn queued, without the
// host's launch gaps before the first kernel. fn must queue its work on the default stream (every
// kernel of this repository does).
//
// Memory comes from cudaMemGetInfo (device-wide bytes in use: this process's buffers, the kept
// scratch, the CUDA context), so a difference of two probes around some work is what that work
// left allocated; memory allocated and freed inside it does not show.
#ifndef MSLAB_CUDA_TIMING_H
#define MSLAB_CUDA_TIMING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*CudaTimedFn)(void *arg);

// Median milliseconds of reps timed calls after warmup untimed ones; samples (may be NULL) gets
// the reps times in call order. Returns -1 when a CUDA error occurred (cuda_error() says which).
double cuda_time_median_ms(CudaTimedFn fn, void *arg, int warmup, int reps, double *samples);

// Synchronises the device; 0, or -1 with the error in cuda_error(). A sticky error (an illegal
// address, a kernel trap) poisons the context: every later call fails too.
int cuda_sync_check(void);
const char *cuda_error(void); // the last error's text ("" when none)

// Device memory: in use (total - free) and total, bytes; 0 when no device.
size_t cuda_mem_used(void);
size_t cuda_mem_total(void);

// High-water mark: a host thread samples cudaMemGetInfo every ~20 us between start and stop
// (stop synchronises the device first); returns the largest in-use value seen, bytes. Catches
// buffers allocated and freed inside the watched calls when they live longer than a sample.
int cuda_mem_watch_start(void);
size_t cuda_mem_watch_stop(void);

// cudaMalloc without aborting: NULL (and cuda_error()) when the device is out of memory.
void *cuda_try_alloc(size_t bytes);
void cuda_try_free(void *p);
void cuda_zero_bytes(void *p, size_t bytes);

// Fills x[0..n) with bf16(scale * N(0, 1)) from a counter-based hash of (seed, i) on the device:
// large inputs (a 1M-token q is 8 GiB) without a host buffer. Deterministic for a seed.
void cuda_fill_bf16_normal(uint16_t *x, size_t n, uint64_t seed, float scale);

#ifdef __cplusplus
}
#endif

#endif
