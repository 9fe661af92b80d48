// flash_wgmma.cuh: Hopper wgmma (warpgroup MMA, sm_90a only) building blocks for
// cuda/flash_wgmma.cu: matrix descriptors over the planar 128-byte-swizzled tiles, the
// wgmma.mma_async wrappers (m64n64k16 / m64n128k16, bf16 in, fp32 accumulate; A from shared
// memory (SS) or registers (RS)), fence / commit / wait.
//
// Layouts (checked against the PTX ISA, "Matrix Descriptor Format" and the CUTLASS canonical
// layouts; verified on the H200 by tests/gpu/flash_wgmma_tests.c):
//   descriptor: bits 0-13 start >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 62-63 swizzle (1 = 128 B).
//   Tiles [rows][D] bf16 are stored as D / 64 planes [rows][64] (128-byte rows), 16-byte chunk
//   c of row r at c ^ (r & 7), planes 1024-byte aligned = the canonical 128B-swizzle atom.
//   K-major (A, or B = [N][K]): ((8,m),(T,2k)):((8T,SBO),(1,T)): SBO = 1024 (8 rows), LBO unused
//   (16); a k16 step moves the start 32 bytes inside the 128-byte row, the next plane every 4.
//   MN-major B (imm-trans-b = 1; tile rows = k, D = N): ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)):
//   LBO = the plane stride (next 64 N), SBO = 1024 (next 8 k); a k16 step = 16 rows = 2048 B.
//   Register fragments: warp w of the warpgroup owns rows 16w..16w+15 and, per 8 columns, the
//   mma.m16n8k16 C layout (d[n][0..1] row g cols 8n+2t.., d[n][2..3] row g+8); the RS A operand
//   is mma.m16n8k16's A layout, so packed C fragments of S feed P V directly.
#ifndef MSLAB_FLASH_WGMMA_CUH
#define MSLAB_FLASH_WGMMA_CUH
#include <cuda_bf16.h>
#include <stdint.h>

#include <cuda.h> // CUtensorMap (the encode function comes through cudaGetDriverEntryPoint)

#include "mma_bf16.cuh"

typedef __nv_bfloat16 bf16;

#define WG_LOG2E 1.4426950408889634f
#define WG_LN2 0.6931471805599453f

__device__ __forceinline__ float wg_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// element offset of (row r, 16-byte chunk c) in a planar tile of ROWS rows
template <int ROWS> __device__ __forceinline__ int pl(int r, int c) {
    return (c >> 3) * (ROWS * 64) + r * 64 + (((c & 7) ^ (r & 7)) << 3);
}

// rows [r0, r0 + ROWS) of x (row t at x + t * ld) into the planar tile dst; rows >= T zero
template <int D, int ROWS, int NT>
__device__ __forceinline__ void ptile_load(bf16 *dst, const bf16 *x, size_t ld, int r0, int T) {
    constexpr int CH = D / 8;
#pragma unroll
    for (int i = threadIdx.x; i < ROWS * CH; i += NT) {
        int r = i / CH, c = i % CH, t = r0 + r;
        bool ok = t < T;
        cp_async16(dst + pl<ROWS>(r, c), x + (size_t)(ok ? t : 0) * ld + c * 8, ok);
    }
}

// 4 bytes global -> shared, asynchronous; valid == false writes 0 (src not read)
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem, bool valid) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    int n = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

// wgmma matrix descriptor: start address, leading / stride byte offsets, 128-byte swizzle
__device__ __forceinline__ uint64_t wg_desc(const bf16 *p, uint32_t lbo, uint32_t sbo) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    return (uint64_t)((a >> 4) & 0x3FFF) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) |
           ((uint64_t)((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}
// K-major operand: 64 rows starting at row0 of a planar tile of ROWS rows, k16 step kk along D
template <int ROWS>
__device__ __forceinline__ uint64_t desc_k(const bf16 *tile, int row0, int kk) {
    return wg_desc(tile + (kk >> 2) * (ROWS * 64) + row0 * 64 + (kk & 3) * 16, 16, 1024);
}
// MN-major operand (B only): the tile's rows are the k index (step kk = rows 16 kk..), D is N
template <int ROWS> __device__ __forceinline__ uint64_t desc_mn(const bf16 *tile, int kk) {
    return wg_desc(tile + kk * 16 * 64, ROWS * 128, 1024);
}

// a descriptor as base + constant (s11 forward, s12 backward): wgd_lo = the low 32 bits (start >> 4
// in bits 0-13, LBO >> 4 in 16-29; p + e elements = wgd_lo(p) + e / 8: a shared address below
// 256 KB never carries out of the start field), wgd = it with the high bits (SBO 1024, 128-byte
// swizzle), dk_k = desc_k's k-step offset in those units
__device__ __forceinline__ uint32_t wgd_lo(const bf16 *p, uint32_t lbo) {
    return ((uint32_t)__cvta_generic_to_shared(p) >> 4) | ((lbo >> 4) << 16);
}
__device__ __forceinline__ uint64_t wgd(uint32_t lo) {
    return (uint64_t)lo | ((uint64_t)((1024 >> 4) | (1u << 30)) << 32);
}
template <int ROWS> __host__ __device__ constexpr uint32_t dk_k(int kk) {
    return (uint32_t)((kk >> 2) * (ROWS * 64) + (kk & 3) * 16) / 8;
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// shared memory written by cp.async (generic proxy) before the tensor cores read it (async proxy)
__device__ __forceinline__ void fence_async_smem() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// a 1024-byte aligned base inside the dynamic shared memory (launched with 1 KB extra)
__device__ __forceinline__ unsigned char *smem_base1k(unsigned char *p) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    return p + ((1024u - (s & 1023u)) & 1023u);
}

// wgmma wrappers: one asm per shape (the accumulators are 32 / 64 registers)
__device__ __forceinline__ void wg_ss_n64(float (*d)[4], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
                 : "l"(da), "l"(db), "r"(acc));
}
__device__ __forceinline__ void wg_rs_n64(float (*d)[4], const uint32_t a[4], uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}
__device__ __forceinline__ void wg_keep_n64(float (*d)[4]) {
    asm volatile("" : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]) :: "memory");
}
__device__ __forceinline__ void wg_ss_n128(float (*d)[4], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
                 : "l"(da), "l"(db), "r"(acc));
}
__device__ __forceinline__ void wg_rs_n128(float (*d)[4], const uint32_t a[4], uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
}
__device__ __forceinline__ void wg_keep_n128(float (*d)[4]) {
    asm volatile("" : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3]) :: "memory");
}
// SS m64n64k16 with A M-major and B N-major (imm-trans-a = imm-trans-b = 1): A from a tile whose
// rows are the k index and whose 64 columns are M (dQ = dS K from dS^T in shared memory)
__device__ __forceinline__ void wg_ss_tt_n64(float (*d)[4], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 1, 1;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
                 : "l"(da), "l"(db), "r"(acc));
}
template <int N>
__device__ __forceinline__ void wg_ss(float (*d)[4], uint64_t da, uint64_t db, int acc) {
    if constexpr (N == 64) wg_ss_n64(d, da, db, acc);
    else wg_ss_n128(d, da, db, acc);
}
template <int N>
__device__ __forceinline__ void wg_rs(float (*d)[4], const uint32_t a[4], uint64_t db, int acc) {
    if constexpr (N == 64) wg_rs_n64(d, a, db, acc);
    else wg_rs_n128(d, a, db, acc);
}
// pins the accumulators after a wait: no read of them moves above the wgmma.wait_group
// 4 8x8 b16 matrices to shared memory (the mma C / A fragment layout: register m of a thread
// (g, t) = row g, columns 2t, 2t + 1 of matrix m); lane l gives the address of row l & 7 of matrix l >> 3
__device__ __forceinline__ void stsm_x4(uint32_t addr, const uint32_t (&r)[4]) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
                 "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
                 : "memory");
}
// k-step kk of the RS A operand from C fragments (c[n][0..3]: columns 8n..8n+7 of the thread's two
// rows): column groups 2kk and 2kk + 1 packed to bf16 pairs, the layout P V / dS K consume
__device__ __forceinline__ void wg_pack_kk(uint32_t (&a)[4], const float (*c)[4], int kk) {
    a[0] = pack_bf16x2(c[2 * kk][0], c[2 * kk][1]);
    a[1] = pack_bf16x2(c[2 * kk][2], c[2 * kk][3]);
    a[2] = pack_bf16x2(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[3] = pack_bf16x2(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}
template <int N> __device__ __forceinline__ void wg_keep(float (*d)[4]) {
    if constexpr (N == 64) wg_keep_n64(d);
    else wg_keep_n128(d);
}


// ---- mbarriers and TMA (the warp-specialised forward) ----
__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void mbar_init(uint64_t *bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
// the inits visible to the async proxy (TMA) and the other threads (a __syncthreads follows)
__device__ __forceinline__ void mbar_fence_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(smem_u32(bar))
                 : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(
                     smem_u32(bar)),
                 "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
    asm volatile("{\n.reg .pred p;\nWAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
                 "@!p bra WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
                 "r"(parity)
                 : "memory");
}
// the same with a suspend-time hint (ns; CUTLASS's 10 ms): the thread sleeps until the phase
// completes instead of retrying every few dozen cycles (the producers' ring waits: s11)
__device__ __forceinline__ void mbar_wait_sleep(uint64_t *bar, uint32_t parity) {
    asm volatile("{\n.reg .pred p;\nWAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1, %2;\n"
                 "@!p bra WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
                 "r"(parity), "r"(0x989680)
                 : "memory");
}
// 4-d tile load (coordinates innermost first) into shared memory, completing on bar
__device__ __forceinline__ void tma_load_4d(void *dst, const void *tmap, uint64_t *bar, int c0,
                                            int c1, int c2, int c3) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(smem_u32(dst)),
                 "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_u32(bar))
                 : "memory");
}

// ---------------------------------------------------------------------------------------------
// host helpers shared by flash_wgmma.cu (forward) and flash_wgmma_bwd.cu (backward)

// the tilings (flash_wgmma_tune, MSLAB_FLASH_WGMMA_TUNE; defined and explained in flash_wgmma.cu)
extern int wg_tune_fwd, wg_tune_dkdv, wg_tune_dq;
void wg_tune_from_env(void);

// wgmma code exists only for sm_90 (sm_90a cubin): elsewhere return -1 and launch nothing
static inline int arch_ok(void) {
    static int ok = -1;
    if (ok < 0) {
        int dev = 0, major = 0, minor = 0;
        ok = cudaGetDevice(&dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ==
                 cudaSuccess &&
             cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) ==
                 cudaSuccess &&
             major == 9 && minor == 0;
        cudaGetLastError();
    }
    return ok;
}
// the grids put query / key tiles of 64 rows in gridDim.y (<= 65535)
static inline int shape_ok(int B, int T, int H, int KVH, int D) {
    return (D == 64 || D == 128) && B >= 1 && T >= 1 && T <= 65535 * 64 && H >= 1 && KVH >= 1 &&
           H % KVH == 0 && (size_t)B * H <= 0x7fffffffu && arch_ok();
}

// one-time opt-in to more than 48 KB of dynamic shared memory per kernel instantiation
template <typename K> static inline void smem_optin(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)bytes));
}

// TMA descriptors: x [B, T, NH, D] bf16 as a 4-d tensor (D, NH, T, B), box (64, 1, rows, 1) =
// one [rows][64] plane, 128-byte swizzle (the planar tile layout), rows past T zero-filled
typedef CUresult (*EncodeTiledFn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                  const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                  const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                  CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static inline EncodeTiledFn encode_fn(void) {
    static EncodeTiledFn fn = NULL;
    static int tried = 0;
    if (!tried) {
        tried = 1;
        void *p = NULL;
        cudaDriverEntryPointQueryResult qr;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                             cudaEnableDefault, &qr) == cudaSuccess &&
            qr == cudaDriverEntryPointSuccess)
            fn = (EncodeTiledFn)p;
        cudaGetLastError();
    }
    return fn;
}
static inline bool make_map(CUtensorMap *m, const bf16 *x, int B, int T, int NH, int D, int rows) {
    EncodeTiledFn fn = encode_fn();
    if (!fn) return false;
    cuuint64_t dims[4] = {(cuuint64_t)D, (cuuint64_t)NH, (cuuint64_t)T, (cuuint64_t)B};
    cuuint64_t strides[3] = {(cuuint64_t)D * 2, (cuuint64_t)NH * D * 2, (cuuint64_t)T * NH * D * 2};
    cuuint32_t box[4] = {64, 1, (cuuint32_t)rows, 1}, es[4] = {1, 1, 1, 1};
    return fn(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void *)x, dims, strides, box, es,
              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

#endif
