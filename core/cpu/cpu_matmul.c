// cpu_matmul.c: the linear layer (matmul_fwd / matmul_bwd) on one packed, register-tiled GEMM, plus
// the small GEMM that the attention tiles use.
//
// Structure (BLIS / GotoBLAS): C[M, N] (+)= A[M, K] @ B[K, N], with A and B given by (row, column)
// strides so that the three products of a linear layer are the same routine without transposing:
//   forward  out[N, OC]  = inp[N, IC] @ w^T      (B(k, j) = w[j, k])
//   backward dinp[N, IC] += dout[N, OC] @ w
//            dw[OC, IC]  += dout^T @ inp          (A(i, k) = dout[k, i])
// K is cut in KC slices; each slice of B is packed once into NR-wide column panels (shared by all
// threads), each MC-row block of A into MR-row panels (per thread). The micro-kernel keeps an
// MR x NR tile of C in vector registers, so per k it loads one NR-wide row of B and MR scalars of A
// for MR*NR multiply-adds.
//
// Determinism: every C element is summed by exactly one thread, in k order: a fused multiply-add
// chain over each KC slice, added to C slice after slice. Neither KC nor the arithmetic of an
// element depends on the thread count or on which tile (full or edge) the element falls in, so the
// result is bitwise identical for any number of threads.
//
// FMA: with -std=c11 GCC defaults to -ffp-contract=off, which would split every a*b+c into a
// multiply and an add (half the peak). Contraction is enabled for this file only; it is still
// IEEE-exact per operation (no reassociation, unlike -ffast-math).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "../ops.h"
#include "cpu_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// Micro-tile MR x NR: NR = two vectors; MR as many rows as the register file holds
// (AVX-512: 32 registers -> 12x2 accumulators + 2 B vectors + 1 broadcast; AVX2: 16 -> 6x2 + 3).
#define NR (2 * CPU_VL)
#if CPU_VL == 16
#define MR 12
#else
#define MR 6
#endif
#define KC 256       // k slice: a packed B panel (KC x NR floats = 32 KiB at NR = 32) stays in L1
#define MC (MR * 16) // rows of A per block: MC x KC floats (~190 KiB) stay in L2
#define NC 1024      // columns per packed B block (KC x NC floats = 1 MiB, half of L2)

static inline int min_i(int a, int b) { return a < b ? a : b; }
static inline int cdiv(int a, int b) { return (a + b - 1) / b; }

// Grow-only scratch buffers, one per thread (OpenMP worker threads persist between calls), so the
// hot path does not mmap and page-fault fresh memory on every call.
static float *scratch(float **buf, size_t *cap, size_t n) {
    if (n > *cap) {
        free(*buf);
        *buf = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        MS_ASSERT(*buf, "out of memory (%zu floats of GEMM scratch)", n);
        *cap = n;
    }
    return *buf;
}
static _Thread_local float *tl_bpack, *tl_apack;
static _Thread_local size_t tl_bpack_cap, tl_apack_cap;

// Pack A[m0 : m0+mc, k0 : k0+kc] into MR-row panels, k-major inside a panel: Ap[p * MR + ii].
// Rows past mc are zero so edge tiles run the same kernel.
static void pack_a(float *restrict Ap, const float *A, size_t rsA, size_t csA, int m0, int mc,
                   int k0, int kc) {
    for (int ip = 0; ip * MR < mc; ip++) {
        float *dst = Ap + (size_t)ip * MR * kc;
        int mr = min_i(MR, mc - ip * MR);
        if (csA == 1) { // rows of A contiguous in k (forward, dinp)
            for (int ii = 0; ii < mr; ii++) {
                const float *src = A + (size_t)(m0 + ip * MR + ii) * rsA + k0;
                for (int p = 0; p < kc; p++) dst[(size_t)p * MR + ii] = src[p];
            }
            for (int ii = mr; ii < MR; ii++)
                for (int p = 0; p < kc; p++) dst[(size_t)p * MR + ii] = 0.0f;
        } else { // columns of A contiguous in i (dw: A = dout^T)
            for (int p = 0; p < kc; p++) {
                const float *src = A + (size_t)(k0 + p) * csA + (size_t)(m0 + ip * MR) * rsA;
                float *d = dst + (size_t)p * MR;
                int ii = 0;
                for (; ii < mr; ii++) d[ii] = src[(size_t)ii * rsA];
                for (; ii < MR; ii++) d[ii] = 0.0f;
            }
        }
    }
}

// Pack B[k0 : k0+kc, j0 : j0+nr] (nr <= NR) into one panel Bp[p * NR + jj], zero-padded to NR.
static void pack_b(float *restrict Bp, const float *B, size_t rsB, size_t csB, int k0, int kc,
                   int j0, int nr) {
    if (csB == 1) { // rows of B contiguous in j (dinp: B = w, dw: B = inp)
        for (int p = 0; p < kc; p++) {
            const float *src = B + (size_t)(k0 + p) * rsB + j0;
            float *d = Bp + (size_t)p * NR;
            int jj = 0;
            for (; jj < nr; jj++) d[jj] = src[jj];
            for (; jj < NR; jj++) d[jj] = 0.0f;
        }
    } else { // B = w^T (forward): read rows of w contiguously, write the panel transposed
        for (int jj = 0; jj < nr; jj++) {
            const float *src = B + (size_t)(j0 + jj) * csB + (size_t)k0 * rsB;
            for (int p = 0; p < kc; p++) Bp[(size_t)p * NR + jj] = src[(size_t)p * rsB];
        }
        for (int jj = nr; jj < NR; jj++)
            for (int p = 0; p < kc; p++) Bp[(size_t)p * NR + jj] = 0.0f;
    }
}

// C[0:mr, 0:nr] (overwrite ? = : +=) Ap-panel @ Bp-panel over kc. The sum is formed in registers
// from zero, then stored or added to C: the same arithmetic for full and edge tiles.
static void ukernel(int kc, const float *restrict Ap, const float *restrict Bp, float *restrict C,
                    size_t ldc, int mr, int nr, int overwrite) {
    vf c0[MR], c1[MR];
    for (int i = 0; i < MR; i++) c0[i] = c1[i] = (vf){0};
    for (int p = 0; p < kc; p++) {
        vf b0 = vload(Bp), b1 = vload(Bp + CPU_VL);
        for (int i = 0; i < MR; i++) {
            vf a = vbcast(Ap[i]);
            c0[i] += a * b0;
            c1[i] += a * b1;
        }
        Ap += MR;
        Bp += NR;
    }
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            float *ci = C + (size_t)i * ldc;
            if (overwrite) {
                vstore(ci, c0[i]);
                vstore(ci + CPU_VL, c1[i]);
            } else {
                vstore(ci, vload(ci) + c0[i]);
                vstore(ci + CPU_VL, vload(ci + CPU_VL) + c1[i]);
            }
        }
    } else {
        float t[MR * NR];
        for (int i = 0; i < MR; i++) {
            vstore(t + i * NR, c0[i]);
            vstore(t + i * NR + CPU_VL, c1[i]);
        }
        for (int i = 0; i < mr; i++) {
            float *ci = C + (size_t)i * ldc;
            for (int j = 0; j < nr; j++) ci[j] = overwrite ? t[i * NR + j] : ci[j] + t[i * NR + j];
        }
    }
}

// C[M, N] (accumulate ? += : =) A @ B, A(i, k) = A[i*rsA + k*csA], B(k, j) = B[k*rsB + j*csB]
// (one of each pair of strides is 1), C row-major with leading dimension ldc.
static void gemm(int M, int N, int K, const float *A, size_t rsA, size_t csA, const float *B,
                 size_t rsB, size_t csB, float *C, size_t ldc, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
        return;
    }
    int nthr = 1;
#ifdef _OPENMP
    nthr = omp_get_max_threads();
#endif
    float *Bp = scratch(&tl_bpack, &tl_bpack_cap, (size_t)KC * cdiv(min_i(N, NC), NR) * NR);
    int nmb = cdiv(M, MC);
    // Small products run on the calling thread: a team's start and barriers cost more than they
    // save (and far more when the cores are oversubscribed).
    int par = (double)M * N * K > (double)(1 << 18);
    (void)par; // (unused without OpenMP)

#pragma omp parallel if (par)
    {
        float *Ap = scratch(&tl_apack, &tl_apack_cap, (size_t)MC * KC);
        for (int jc = 0; jc < N; jc += NC) {
            int nc = min_i(NC, N - jc), npan = cdiv(nc, NR);
            // Few row blocks (e.g. dw with OC = 64): also split the column panels, so every thread
            // has work. Tiling only moves work between threads; it never changes an element's sum.
            int nchunk = nmb >= 4 * nthr ? 1 : min_i(npan, cdiv(4 * nthr, nmb));
            int pan_per_chunk = cdiv(npan, nchunk);
            for (int pc = 0; pc < K; pc += KC) {
                int kc = min_i(KC, K - pc);
#pragma omp for schedule(static)
                for (int jp = 0; jp < npan; jp++)
                    pack_b(Bp + (size_t)jp * kc * NR, B, rsB, csB, pc, kc, jc + jp * NR,
                           min_i(NR, nc - jp * NR));
                // (implicit barrier: the B block is complete)
                int overwrite = !accumulate && pc == 0;
                // Dynamic: a descheduled thread does not hold up the others. Items go out in
                // order, so a thread often gets the next chunk of its row block: A is reused.
                int packed_mb = -1;
#pragma omp for schedule(dynamic, 1)
                for (int item = 0; item < nmb * nchunk; item++) {
                    int mb = item / nchunk, ch = item % nchunk;
                    int m0 = mb * MC, mc = min_i(MC, M - m0);
                    if (mb != packed_mb) {
                        pack_a(Ap, A, rsA, csA, m0, mc, pc, kc);
                        packed_mb = mb;
                    }
                    int jp1 = min_i(npan, (ch + 1) * pan_per_chunk);
                    for (int jp = ch * pan_per_chunk; jp < jp1; jp++) {
                        int j = jc + jp * NR, nr = min_i(NR, nc - jp * NR);
                        for (int ip = 0; ip * MR < mc; ip++)
                            ukernel(kc, Ap + (size_t)ip * MR * kc, Bp + (size_t)jp * kc * NR,
                                    C + (size_t)(m0 + ip * MR) * ldc + j, ldc,
                                    min_i(MR, mc - ip * MR), nr, overwrite);
                    }
                }
                // (implicit barrier: nobody still reads Bp when the next slice overwrites it)
            }
        }
    }
}

void cpu_matmul_fwd(float *out, const float *inp, const float *w, int N, int IC, int OC) {
    gemm(N, OC, IC, inp, IC, 1, w, 1, IC, out, OC, 0);
}

void cpu_matmul_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                    int N, int IC, int OC) {
    if (dinp) gemm(N, IC, OC, dout, OC, 1, w, IC, 1, dinp, IC, 1);
    if (dw) gemm(OC, IC, N, dout, 1, OC, inp, IC, 1, dw, IC, 1);
}

// ---- small GEMM for attention tiles (operands already in L1/L2; no packing, no threads) ----

// Rows per register tile: 8 x 2 vector accumulators fit AVX-512's 32 registers, 4 x 2 AVX2's 16.
#define SMR (CPU_VL == 16 ? 8 : 4)

// rows x (nv vectors) tile of C over k: broadcast A, vector loads of B rows. rows and nv are
// compile-time constants after inlining, so the accumulators live in registers.
static inline __attribute__((always_inline)) void small_tile(int rows, int nv, int K,
                                                             const float *A, size_t rsA, size_t csA,
                                                             const float *B, size_t ldb, float *C,
                                                             size_t ldc, int acc) {
    vf c[SMR][2];
    for (int i = 0; i < rows; i++)
        for (int v = 0; v < nv; v++)
            c[i][v] = acc ? vload(C + (size_t)i * ldc + v * CPU_VL) : (vf){0};
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb;
        vf bv[2];
        for (int v = 0; v < nv; v++) bv[v] = vload(b + v * CPU_VL);
        for (int i = 0; i < rows; i++) {
            vf a = vbcast(A[(size_t)i * rsA + (size_t)k * csA]);
            for (int v = 0; v < nv; v++) c[i][v] += a * bv[v];
        }
    }
    for (int i = 0; i < rows; i++)
        for (int v = 0; v < nv; v++) vstore(C + (size_t)i * ldc + v * CPU_VL, c[i][v]);
}

// All N columns of `rows` rows: two-vector tiles, then one vector, then scalar columns.
static inline __attribute__((always_inline)) void small_rows(int rows, int N, int K, const float *A,
                                                             size_t rsA, size_t csA, const float *B,
                                                             size_t ldb, float *C, size_t ldc,
                                                             int acc) {
    int j = 0;
    for (; j + 2 * CPU_VL <= N; j += 2 * CPU_VL)
        small_tile(rows, 2, K, A, rsA, csA, B + j, ldb, C + j, ldc, acc);
    for (; j + CPU_VL <= N; j += CPU_VL)
        small_tile(rows, 1, K, A, rsA, csA, B + j, ldb, C + j, ldc, acc);
    for (; j < N; j++)
        for (int r = 0; r < rows; r++) {
            float s = acc ? C[(size_t)r * ldc + j] : 0.0f;
            for (int k = 0; k < K; k++)
                s += A[(size_t)r * rsA + (size_t)k * csA] * B[(size_t)k * ldb + j];
            C[(size_t)r * ldc + j] = s;
        }
}

void cpu_gemm_small(int M, int N, int K, const float *A, int rsA, int csA, const float *B, int ldb,
                    float *C, int ldc, int acc) {
    int i = 0;
    for (; i + SMR <= M; i += SMR)
        small_rows(SMR, N, K, A + (size_t)i * rsA, rsA, csA, B, ldb, C + (size_t)i * ldc, ldc, acc);
    for (; i + 4 <= M; i += 4)
        small_rows(4, N, K, A + (size_t)i * rsA, rsA, csA, B, ldb, C + (size_t)i * ldc, ldc, acc);
    for (; i < M; i++)
        small_rows(1, N, K, A + (size_t)i * rsA, rsA, csA, B, ldb, C + (size_t)i * ldc, ldc, acc);
}
