// bf16.h: bfloat16 storage for the CUDA side, seen from C (raw bits in a uint16_t) and CUDA.
//
// The device kernels use __nv_bfloat16; C code (tests, benchmarks, the CLI) holds the same bits as
// uint16_t. Rounding is round-to-nearest-even everywhere (the host helpers below match
// __float2bfloat16_rn bit for bit, NaN kept quiet), so a CPU reference can round its inputs
// exactly as the GPU stored them.
#ifndef MSLAB_BF16_H
#define MSLAB_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- device conversions (default stream, asynchronous like every backend op) ----
void cuda_f32_to_bf16(uint16_t *dst, const float *src, size_t n);   // dst = rn(src)
void cuda_bf16_to_f32(float *dst, const uint16_t *src, size_t n);   // dst = src (exact)
void cuda_bf16_add_to_f32(float *dst, const uint16_t *src, size_t n); // dst += src

#ifdef __cplusplus
}
#endif

// ---- host rounding, identical to the device's ----
static inline uint16_t bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u); // round to nearest, ties to even
    return (uint16_t)(u >> 16);
}
static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}
static inline float bf16_round(float x) { return bf16_to_f32(bf16_from_f32(x)); }

#endif
