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
// bf16. rope8_kernel (s9): the interleaved convention at D % 8 == 0 in 16-byte chunks, software-
// pipelined (ncu, s9 r2, the LM's N = 32768 x 12 heads x 64, clocks and caches as live: forward
// 38.2 us per call vs 42.2 for rope_kernel, backward from bf16 29.7 vs 37.0; 100 MB moved by the
// backward: ~3.4 TB/s); rope_kernel serves the halves convention and other shapes. Tried (s8 r3,
// removed): interleaved pairs as one 8-byte fp32 / 4-byte bf16 load and store with every head's
// loads in flight at once: backward 56.5 us per call (ncu) vs 43.5 for rope_kernel (ncu at base
// clocks, r1), forward 41.5 vs 44; the LM step 94.7 vs 94.4 ms.
// s10: the forward's input as BfIn (the bf16 table reads it rounded to bf16: f32r, or the GEMM's
// bf16 output itself; LM trace 40.7 -> 30.7 us per call), the backward's bf16 copy strided (ldb:
// a grouped product's column block; backend_bf16.cu "Grouped products").
#include "bf16_vec.cuh"
#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

#define ROPE_THREADS 256
#define RH 4 // heads whose loads are in flight together (LM step, H200: fwd 0.059 -> 0.040 ms)

// The rotation of one pair, its roundings spelled out: nvcc's FMA contraction of a * c - b * s
// may pick either product per instantiation (s9: the fp32- and the bf16-input backward of the
// vectorised kernel differed in the last bit), so every kernel and input type gets these bits.
template <int BACKWARD>
__device__ __forceinline__ void rot(float a, float b, float cf, float sf, float &ra, float &rb) {
    if (BACKWARD) sf = -sf;
    ra = __fmaf_rn(a, cf, -__fmul_rn(b, sf)), rb = __fmaf_rn(a, sf, __fmul_rn(b, cf));
}

// f32r: an fp32 input read rounded to bf16 (the bf16 table's rounding readers: BfIn.rnd)
struct f32r { float v; };
__device__ __forceinline__ float ld_in(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ld_in(const f32r *p, size_t i) { return bf16r(p[i].v); }
__device__ __forceinline__ float ld_in(const uint16_t *p, size_t i) {
    return __uint_as_float((unsigned)p[i] << 16);
}

// o: the result (o.f, its bf16 copy o.b: bf16_vec.cuh); acc = 0 (backward): o.f is
// known zero (or not stored), overwrite it. TIN: float, f32r (fp32 read rounded to bf16), or
// uint16_t for a bf16 input (the table's dq / dk that the attention backward left in bf16 only).
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
                    float ra, rb;
                    rot<BACKWARD>(a[j], b[j], cf, sf, ra, rb);
                    if (BACKWARD && acc) ra = o.f[ia] + ra, rb = o.f[ib] + rb;
                    out_put(o, ia, ra);
                    out_put(o, ib, rb);
                }
        }
    }
}

// Interleaved pairs, D % 8 == 0, 16-byte aligned arrays: one thread per (token n, 4 pairs), 8
// elements of a head per 16-byte (bf16) / 2 x 16-byte (fp32) load and store; the same angles and
// the same rotation as rope_kernel: the same bits. Software-pipelined over groups of RH heads:
// the first group's loads are issued before the angles (double sincos: its latency hides theirs)
// and each next group's before the current group's stores (heads never overlap, so an in-place
// call is still exact).
// 8 elements as loaded: fp32 (two float4) or bf16 (one uint4, widened at use: half the registers)
struct F8 { float4 a, b; };
__device__ __forceinline__ void ld8(const float *p, size_t i, F8 &e) {
    e.a = *(const float4 *)(p + i), e.b = *(const float4 *)(p + i + 4);
}
__device__ __forceinline__ void ld8(const f32r *p, size_t i, F8 &e) {
    ld8((const float *)p, i, e);
    e.a = make_float4(bf16r(e.a.x), bf16r(e.a.y), bf16r(e.a.z), bf16r(e.a.w));
    e.b = make_float4(bf16r(e.b.x), bf16r(e.b.y), bf16r(e.b.z), bf16r(e.b.w));
}
__device__ __forceinline__ void ld8(const uint16_t *p, size_t i, uint4 &e) { e = *(const uint4 *)(p + i); }
__device__ __forceinline__ float el(const F8 &e, int k) {
    const float4 &v = k < 4 ? e.a : e.b;
    int m = k & 3;
    return m == 0 ? v.x : m == 1 ? v.y : m == 2 ? v.z : v.w;
}
__device__ __forceinline__ float el(const uint4 &e, int k) {
    unsigned w = k < 2 ? e.x : k < 4 ? e.y : k < 6 ? e.z : e.w;
    return k & 1 ? bf16hi(w) : bf16lo(w);
}
template <class TIN> struct Chunk { typedef F8 T; };
template <> struct Chunk<uint16_t> { typedef uint4 T; };
template <class TIN, class C>
__device__ __forceinline__ void ld_group(const TIN *inp, size_t base, int D, int nh, C (&e)[RH]) {
#pragma unroll
    for (int j = 0; j < RH; j++)
        if (j < nh) ld8(inp, base + (size_t)j * D, e[j]);
}
template <int BACKWARD, class TIN>
__global__ void rope8_kernel(OutBF o, int acc, const TIN *inp, const float *pos,
                             const float *inv_freq, int N, int H, int D) {
    int g8 = D / 8;
    size_t total = (size_t)N * g8;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int n = (int)(idx / g8), i0 = 4 * (int)(idx % g8);
        size_t row = (size_t)n * H * D + 2 * i0; // head h's 8 elements at row + h D
        typename Chunk<TIN>::T e0[RH], e1[RH];
        ld_group(inp, row, D, H < RH ? H : RH, e0);
        float cf[4], sf[4];
#pragma unroll
        for (int p = 0; p < 4; p++) {
            double s, c;
            sincos((double)pos[n] * (double)inv_freq[i0 + p], &s, &c);
            cf[p] = (float)c, sf[p] = (float)s;
        }
        // group h0 from cur: the next group's loads into nxt first, then cur's rotations and stores
        auto group = [&](int h0, typename Chunk<TIN>::T (&cur)[RH], typename Chunk<TIN>::T (&nxt)[RH]) {
            if (h0 + RH < H) {
                int nh = H - h0 - RH;
                ld_group(inp, row + (size_t)(h0 + RH) * D, D, nh < RH ? nh : RH, nxt);
            }
#pragma unroll
            for (int j = 0; j < RH; j++)
                if (h0 + j < H) {
                    size_t ia = row + (size_t)(h0 + j) * D;
                    float r[8];
                    F8 old;
                    if (BACKWARD && acc) ld8(o.f, ia, old);
#pragma unroll
                    for (int p = 0; p < 4; p++) {
                        rot<BACKWARD>(el(cur[j], 2 * p), el(cur[j], 2 * p + 1), cf[p], sf[p], r[2 * p],
                                      r[2 * p + 1]);
                        if (BACKWARD && acc)
                            r[2 * p] = el(old, 2 * p) + r[2 * p], r[2 * p + 1] = el(old, 2 * p + 1) + r[2 * p + 1];
                    }
                    if (o.f) {
                        *(float4 *)(o.f + ia) = make_float4(r[0], r[1], r[2], r[3]);
                        *(float4 *)(o.f + ia + 4) = make_float4(r[4], r[5], r[6], r[7]);
                    }
                    if (o.b)
                        *(uint4 *)(o.b + ob_at(o, ia)) =
                            make_uint4(bf16pack(r[0], r[1]), bf16pack(r[2], r[3]),
                                       bf16pack(r[4], r[5]), bf16pack(r[6], r[7]));
                }
        };
        for (int h0 = 0; h0 < H; h0 += 2 * RH) {
            group(h0, e0, e1);
            if (h0 + RH < H) group(h0 + RH, e1, e0);
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
    if (style == ROPE_INTERLEAVED && D % 8 == 0 && aligned16(o.f) && aligned16(o.b) &&
        aligned16(inp) && o.ld % 8 == 0) {
        unsigned g = grid_for((size_t)N * (D / 8), ROPE_THREADS);
        if (backward) rope8_kernel<1, TIN><<<g, ROPE_THREADS>>>(o, acc, inp, pos, inv_freq, N, H, D);
        else rope8_kernel<0, TIN><<<g, ROPE_THREADS>>>(o, 0, inp, pos, inv_freq, N, H, D);
        cudaLaunchCheck();
        return;
    }
    unsigned g = grid_for(total, ROPE_THREADS);
    if (backward)
        rope_kernel<1, TIN><<<g, ROPE_THREADS>>>(o, acc, inp, pos, inv_freq, N, H, D, style);
    else rope_kernel<0, TIN><<<g, ROPE_THREADS>>>(o, 0, inp, pos, inv_freq, N, H, D, style);
    cudaLaunchCheck();
}

void cuda_rope_fwd_x(float *out, uint16_t *ob, BfIn inp, const float *pos, const float *inv_freq,
                     int N, int H, int D, int style) {
    OutBF o = {out, ob};
    if (inp.b) rope_launch(0, o, 0, inp.b, pos, inv_freq, N, H, D, style);
    else if (inp.rnd) rope_launch(0, o, 0, (const f32r *)inp.f, pos, inv_freq, N, H, D, style);
    else rope_launch(0, o, 0, inp.f, pos, inv_freq, N, H, D, style);
}

void cuda_rope_bwd_x(float *dinp, uint16_t *db, size_t ldb, int acc, const float *dout,
                     const uint16_t *dout_b, const float *pos, const float *inv_freq, int N, int H,
                     int D, int style) {
    OutBF o = out_strided(dinp, db, ldb ? (size_t)H * D : 0, ldb);
    if (dout_b) rope_launch(1, o, acc, dout_b, pos, inv_freq, N, H, D, style);
    else rope_launch(1, o, acc, dout, pos, inv_freq, N, H, D, style);
}

void cuda_rope_fwd(float *out, const float *inp, const float *pos, const float *inv_freq, int N,
                   int H, int D, int style) {
    cuda_rope_fwd_x(out, NULL, in_f32(inp), pos, inv_freq, N, H, D, style);
}

void cuda_rope_bwd(float *dinp, const float *dout, const float *pos, const float *inv_freq,
                   int N, int H, int D, int style) {
    cuda_rope_bwd_x(dinp, NULL, 0, 1, dout, NULL, pos, inv_freq, N, H, D, style);
}
