// mma_bf16.cuh: warp-level tensor-core building blocks for the bf16 kernels (sm_80+ PTX, run on
// sm_90): mma.sync m16n8k16 bf16 -> fp32, ldmatrix (plain and .trans), cp.async 16-byte copies
// with zero fill, and a swizzled [rows][D] bf16 tile layout. Shared by flash_bf16.cu and
// sparse_bf16.cu; keep the names and semantics stable.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A 16x16 (row-major), 4 regs of bf16x2: a0 (row g, cols 2t..2t+1), a1 (row g+8, same cols),
//     a2 (row g, cols 2t+8..2t+9), a3 (row g+8, cols 2t+8..2t+9)
//   B 16x8 (k x n), 2 regs: b0 (k 2t..2t+1, col n = g), b1 (k 2t+8..2t+9, n = g)
//   C/D 16x8 fp32, 4 regs: c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g+8, cols 2t, 2t+1)
// So the C fragments of two adjacent n-tiles (16 columns) are, packed to bf16, exactly the A
// fragment of the next product over those 16 columns (P = softmax(S) -> P V without shared memory):
//   a0 = pack(C[2j].c0, c1), a1 = pack(C[2j].c2, c3),
//   a2 = pack(C[2j+1].c0, c1), a3 = pack(C[2j+1].c2, c3)
#ifndef MSLAB_MMA_BF16_CUH
#define MSLAB_MMA_BF16_CUH

#include <cuda_bf16.h>
#include <stdint.h>

// D += A * B (fp32 accumulate)
__device__ __forceinline__ void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0,
                                               uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// four 8x8 bf16 matrices; lanes 8i..8i+7 give the row addresses of matrix i; r[i] = this lane's
// (row g, cols 2t..2t+1) of matrix i (.trans: (rows 2t..2t+1, col g))
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *smem_row) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void *smem_row) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// 16 bytes global -> shared, asynchronous; valid == false writes 16 zero bytes (src not read)
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // .x = lo (low half), .y = hi
    return *reinterpret_cast<uint32_t *>(&v);
}

// Swizzled tile [rows][D] of bf16, D a multiple of 64: row r's 16-byte chunk c sits at chunk
// c ^ (r & 7), so the 8 rows an ldmatrix reads at one logical chunk hit 8 distinct bank groups,
// and cp.async still writes whole 16-byte chunks. Returns the element offset.
template <int D> __device__ __forceinline__ int swz(int r, int c) {
    return r * D + ((c ^ (r & 7)) << 3);
}

#endif
