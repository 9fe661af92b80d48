// bf16_vec.cuh: device helpers of the vectorised memory-bound kernels (bf16.cu and the bf16
// table's fused outputs in elementwise.cu, norm.cu, loss.cu, rope.cu): two bf16 in one 32-bit
// word, low half = the lower address. Rounding: __float2bfloat16_rn, as cuda_f32_to_bf16.
#ifndef MSLAB_BF16_VEC_CUH
#define MSLAB_BF16_VEC_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "bf16.h" // BfIn

__device__ __forceinline__ unsigned bf16bits(float x) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(x));
}
__device__ __forceinline__ unsigned bf16pack(float lo, float hi) {
    return bf16bits(lo) | (bf16bits(hi) << 16);
}
__device__ __forceinline__ float bf16lo(unsigned u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16hi(unsigned u) { return __uint_as_float(u & 0xffff0000u); }
// 4 floats -> 4 bf16 at dst[i .. i+3] (dst 8-byte aligned at i)
__device__ __forceinline__ void store_bf16x4(uint16_t *dst, size_t i, float4 v) {
    uint2 o;
    o.x = bf16pack(v.x, v.y), o.y = bf16pack(v.z, v.w);
    *(uint2 *)(dst + i) = o;
}
static inline int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// Grid-stride loop over n elements: with VEC, W at a time through body_w(j) (elements W j ..
// W j + W - 1), the tail (n % W) and every element without VEC one at a time through body1(i).
template <int VEC, int W, class BW, class B1>
__device__ __forceinline__ void vec_loop(size_t n, BW body_w, B1 body1) {
    size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    size_t nt = (size_t)gridDim.x * blockDim.x, done = 0;
    if (VEC) {
        for (size_t j = tid; j < n / W; j += nt) body_w(j);
        done = n / W * W;
    }
    for (size_t i = done + tid; i < n; i += nt) body1(i);
}

// An output of the bf16 table's fused ops (bf16.h, _x): f the fp32 array (NULL: not stored, the
// table keeps the array in bf16 only), b its bf16 copy (NULL: none). rl > 0: the copy's rows of rl
// elements lie ld apart (a column block of a wider matrix: backend_bf16.cu "Grouped products");
// a 4-element group never straddles a row (rl % 4 == 0 where out_put4 is used).
struct OutBF {
    float *f;
    uint16_t *b;
    size_t rl, ld;
    unsigned long long rlm; // ceil(2^64 / rl) (out_strided): the row by one multiply, not a division
};
// the strided form (rl 2 .. 2^24; i < 2^40 below: floor(i rlm / 2^64) is then exactly i / rl).
// (s10 r4: strided copies still cost rope_bwd 38.3 vs 34.0 us, swiglu_bwd 321 vs 301 us at the
// LM's shape, as with a division per store in r2 / r3: the rows spread over the wider block.)
static inline OutBF out_strided(float *f, uint16_t *b, size_t rl, size_t ld) {
    OutBF o = {f, b, rl, ld, 0};
    if (rl > 1 && rl < (1u << 24)) o.rlm = ~0ull / rl + 1;
    return o;
}
__device__ __forceinline__ size_t ob_at(const OutBF &o, size_t i) {
    if (!o.rl) return i;
    size_t r = o.rl == 1 ? i : o.rlm && !(i >> 40) ? __umul64hi(i, o.rlm) : i / o.rl;
    return r * o.ld + (i - r * o.rl);
}
__device__ __forceinline__ void out_put(const OutBF &o, size_t i, float v) {
    if (o.f) o.f[i] = v;
    if (o.b) o.b[ob_at(o, i)] = (uint16_t)bf16bits(v);
}
// elements i .. i+3 (f 16-byte, b 8-byte aligned there)
__device__ __forceinline__ void out_put4(const OutBF &o, size_t i, float4 v) {
    if (o.f) *(float4 *)(o.f + i) = v;
    if (o.b) store_bf16x4(o.b, ob_at(o, i), v);
}

// BfIn (bf16.h): element i, elements i .. i+3 (b 8-byte, f 16-byte aligned there)
__device__ __forceinline__ float bf16r(float x) { return __uint_as_float(bf16bits(x) << 16); }
__device__ __forceinline__ float in_get(const BfIn &a, size_t i) {
    if (a.b) return __uint_as_float((unsigned)a.b[i] << 16);
    return a.rnd ? bf16r(a.f[i]) : a.f[i];
}
__device__ __forceinline__ float4 in_get4(const BfIn &a, size_t i) {
    if (a.b) {
        uint2 u = *(const uint2 *)(a.b + i);
        return make_float4(bf16lo(u.x), bf16hi(u.x), bf16lo(u.y), bf16hi(u.y));
    }
    float4 x = *(const float4 *)(a.f + i);
    return a.rnd ? make_float4(bf16r(x.x), bf16r(x.y), bf16r(x.z), bf16r(x.w)) : x;
}
static inline int in_aligned(const BfIn &a) { return a.b ? ((uintptr_t)a.b & 7) == 0 : aligned16(a.f); }
// 8 elements at i (i % 8 == 0; f and b 16-byte aligned there), by input kind known at compile time:
// IN 0: fp32 as is, 1: bf16 (b), 2: either (the BfIn's fields at run time)
struct V8 { float v[8]; };
template <int IN> __device__ __forceinline__ V8 in_get8(const BfIn &a, size_t i) {
    V8 r;
    if (IN == 1 || (IN == 2 && a.b)) {
        uint4 u = *(const uint4 *)(a.b + i);
        unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int k = 0; k < 4; k++) r.v[2 * k] = bf16lo(w[k]), r.v[2 * k + 1] = bf16hi(w[k]);
    } else {
        float4 x = *(const float4 *)(a.f + i), y = *(const float4 *)(a.f + i + 4);
        r = V8{{x.x, x.y, x.z, x.w, y.x, y.y, y.z, y.w}};
        if (IN == 2 && a.rnd)
#pragma unroll
            for (int k = 0; k < 8; k++) r.v[k] = bf16r(r.v[k]);
    }
    return r;
}
static inline int in_kind(const BfIn &a) { return a.b ? 1 : a.rnd ? 2 : 0; } // (2: rounded fp32)
static inline int in_aligned16(const BfIn &a) { return a.b ? aligned16(a.b) : aligned16(a.f); }
// elements i .. i+7 (i % 8 == 0; f, b 16-byte aligned there: rl % 8 == 0, ld % 8 == 0)
__device__ __forceinline__ void out_put8(const OutBF &o, size_t i, const V8 &r) {
    if (o.f) {
        *(float4 *)(o.f + i) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
        *(float4 *)(o.f + i + 4) = make_float4(r.v[4], r.v[5], r.v[6], r.v[7]);
    }
    if (o.b)
        *(uint4 *)(o.b + ob_at(o, i)) = make_uint4(bf16pack(r.v[0], r.v[1]), bf16pack(r.v[2], r.v[3]),
                                                   bf16pack(r.v[4], r.v[5]), bf16pack(r.v[6], r.v[7]));
}
static inline BfIn in_f32(const float *f) { return BfIn{f, NULL, 0}; }

#endif
