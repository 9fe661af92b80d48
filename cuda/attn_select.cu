// attn_select.cu: the selection op (ops.h attention_select) on the GPU: the index list of every
// sparse kind, equal to core/cpu/cpu_attn_select.c's list element for element.
//
// Same arithmetic as the reference: pooling, norms and scores in double, each a plain sum in row /
// dimension order (one thread per output value, a serial loop: no reduction tree), so every score
// is the CPU's score up to FMA contraction, and ranks use the CPU's total order (best first, ties
// to the lower region id, NaN last). Top-S without sorting: candidate j's rank is the number of
// candidates that beat it, computed by one thread per candidate; rank < S places it.
//
//   pool_k:  one thread per (b, kv head, region, dim): the semantic keys [B, KVH, N, D] (double);
//            knorm: one thread per (b, kv head, region).
//   ms:      one block per list (b, head, group block), grid-stride over lists: for each member
//            region (or the whole group), threads over dims pool q, thread 0 takes the norm,
//            threads over candidates score them (scores in a per-block scratch row) and rank them;
//            thread 0 merges the members' top lists in the rank-major scan (first-occurrence
//            dedup, score sums or vote counts, as the reference), threads rank the merged entries
//            for order = score / votes; then the locals, -1 padding, kpos / qpos.
//   moba:    one block per query row: q in double, scores of the strictly past blocks, ranks,
//            then its own block.
//   fixed:   dense / s2 / window: one thread per list.
#include <math.h>

#include "cuda_common.cuh"

extern "C" {
#include "../core/attention.h"
}

#define SEL_THREADS 256
#define SEL_MAX_GRID 2048

__device__ __forceinline__ double pool_dim(const float *x, size_t ld, int r0, int r1, int d, int D,
                                           int mode) {
    if (mode == POOL_FIRST) return (double)x[(size_t)r0 * ld + d];
    double acc = mode == POOL_MAX ? -INFINITY : 0.0;
    for (int r = r0; r < r1; r++) {
        const float *row = x + (size_t)r * ld;
        double inv = 1.0;
        if (mode == POOL_NMEAN) {
            double ss = 0;
            for (int e = 0; e < D; e++) ss += (double)row[e] * row[e];
            inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
        }
        if (mode == POOL_MAX) acc = row[d] > acc ? row[d] : acc;
        else acc += row[d] * inv;
    }
    if (mode == POOL_MEAN || mode == POOL_NMEAN) acc /= (r1 - r0);
    return acc;
}

__global__ void pool_k_kernel(double *kbar, const float *k, int B, int T, int KVH, int D, int w,
                              int N, int mode) {
    size_t n = (size_t)B * KVH * N * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % D);
        size_t x = i / D;
        int r = (int)(x % N);
        x /= N;
        int kh = (int)(x % KVH), b = (int)(x / KVH);
        kbar[i] = pool_dim(k + ((size_t)b * T * KVH + kh) * D, (size_t)KVH * D, r * w,
                           min(T, (r + 1) * w), d, D, mode);
    }
}

__global__ void norm_kernel(double *nrm, const double *x, size_t rows, int D) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < rows;
         i += (size_t)gridDim.x * blockDim.x) {
        double s = 0;
        for (int d = 0; d < D; d++) s += x[i * D + d] * x[i * D + d];
        nrm[i] = sqrt(s);
    }
}

// a beats b (cand_cmp(a, b) < 0): NaN last, higher score first, then the lower id
__device__ __forceinline__ bool beats(double sa, int ia, double sb, int ib) {
    bool an = isnan(sa), bn = isnan(sb);
    if (an != bn) return bn;
    if (!an && sa != sb) return sa > sb;
    return ia < ib;
}

struct MsArgs {
    int *idx, *kpos, *qpos;
    const float *q;
    const double *kbar, *knorm;
    double *scores; // [gridDim.x, N]
    int *mark;      // [gridDim.x, N], zero between lists
    int B, T, H, KVH, D;
    int N, w, M, S, W, nblk, first, last_dense, lg, Gq;
    int pool, score, select, order;
    double *gbuf;   // NULL: the per-list arrays live in shared memory; else per-block global rows
    size_t gstride; // doubles per block in gbuf
};

__global__ void __launch_bounds__(SEL_THREADS) ms_select_kernel(MsArgs a) {
    extern __shared__ double shd[];
    int MS = a.M * a.S;
    double *qbar = a.gbuf ? a.gbuf + blockIdx.x * a.gstride : shd; // [D]
    double *tops_s = qbar + a.D;            // [M*S]
    double *mkey = tops_s + MS;             // [M*S]
    int *tops = (int *)(mkey + MS);         // [M*S]
    int *mid = tops + MS;                   // [M*S]
    int *sel = mid + MS;                    // [M*S]
    int *ntop = sel + MS;                   // [M]
    __shared__ double qn;
    __shared__ int nm_sh;
    double *sc = a.scores + (size_t)blockIdx.x * a.N;
    int *mark = a.mark + (size_t)blockIdx.x * a.N;
    int G = a.H / a.KVH, tid = threadIdx.x;
    size_t nl = (size_t)a.B * a.H * a.nblk;
    for (size_t li = blockIdx.x; li < nl; li += gridDim.x) {
        int c = (int)(li % a.nblk), h = (int)((li / a.nblk) % a.H), b = (int)(li / a.nblk / a.H);
        int kh = h / G;
        size_t lo = li * a.W;
        int *list = a.idx + lo;
        int g0 = c * a.M, gend = min(a.N, g0 + a.M);
        if (c < a.first || (c == a.nblk - 1 && a.last_dense)) {
            for (int s = tid; s < a.W; s += blockDim.x) {
                list[s] = s < gend ? s : -1;
                if (a.kpos) a.kpos[lo + s] = s < gend ? s * a.w : 0;
            }
            if (a.kpos && tid == 0) a.qpos[li] = c * a.Gq;
            continue;
        }
        const double *kb = a.kbar + ((size_t)b * a.KVH + kh) * a.N * a.D;
        const double *kn = a.knorm + ((size_t)b * a.KVH + kh) * a.N;
        const float *qb = a.q + ((size_t)b * a.T * a.H + h) * a.D;
        size_t ld = (size_t)a.H * a.D;
        int local0 = max(0, g0 - (a.lg - 1) * a.M);
        int members = a.select == SELECT_GROUP ? 1 : gend - g0;
        for (int m = 0; m < members; m++) {
            int g = a.select == SELECT_GROUP ? -1 : g0 + m;
            int r0 = g >= 0 ? g * a.w : g0 * a.w;
            int r1 = g >= 0 ? min(a.T, r0 + a.w) : min(a.T, gend * a.w);
            for (int d = tid; d < a.D; d += blockDim.x)
                qbar[d] = pool_dim(qb, ld, r0, r1, d, a.D, a.pool);
            __syncthreads();
            if (tid == 0) {
                double s = 0;
                for (int d = 0; d < a.D; d++) s += qbar[d] * qbar[d];
                qn = sqrt(s);
            }
            __syncthreads();
            // attn_ms_eligible
            int e = g >= 0 ? min(g - a.M + 1, local0) : local0;
            e = max(e, 0);
            for (int j = tid; j < e; j += blockDim.x) {
                const double *kr = kb + (size_t)j * a.D;
                double s = 0;
                for (int d = 0; d < a.D; d++) s += qbar[d] * kr[d];
                if (a.score == SCORE_SCALED) s = s / sqrt((double)a.D);
                else if (a.score == SCORE_COSINE) s = qn > 0 && kn[j] > 0 ? s / (qn * kn[j]) : 0.0;
                sc[j] = s;
            }
            __syncthreads();
            for (int j = tid; j < e; j += blockDim.x) {
                double sj = sc[j];
                int rank = 0;
                for (int i = 0; i < e && rank < a.S; i++) rank += beats(sc[i], i, sj, j);
                if (rank < a.S) tops[m * a.S + rank] = j, tops_s[m * a.S + rank] = sj;
            }
            if (tid == 0) ntop[m] = min(a.S, e);
            __syncthreads();
        }
        if (tid == 0) { // rank-major scan, first-occurrence dedup (reference: ms_merge)
            int maxn = 0, nm = 0;
            for (int m = 0; m < members; m++) maxn = max(maxn, ntop[m]);
            for (int r = 0; r < maxn; r++)
                for (int m = 0; m < members; m++) {
                    if (r >= ntop[m]) continue;
                    int id = tops[m * a.S + r];
                    double s = tops_s[m * a.S + r];
                    if (!mark[id]) {
                        mid[nm] = id, mkey[nm] = 0.0;
                        mark[id] = ++nm;
                    }
                    mkey[mark[id] - 1] += a.order == ORDER_SCORE ? s : 1.0;
                }
            for (int i = 0; i < nm; i++) mark[mid[i]] = 0;
            nm_sh = nm;
        }
        __syncthreads();
        int nm = nm_sh;
        for (int i = tid; i < nm; i += blockDim.x) { // merged_cmp: key desc, then scan position
            int rank = i;
            if (a.order != ORDER_RANK) {
                rank = 0;
                for (int x = 0; x < nm; x++)
                    rank += mkey[x] > mkey[i] || (mkey[x] == mkey[i] && x < i);
            }
            sel[rank] = mid[i];
        }
        __syncthreads();
        int nsel = min(nm, a.S), ntot = nsel + gend - local0;
        for (int s = tid; s < a.W; s += blockDim.x) {
            list[s] = s < nsel ? sel[s] : s < ntot ? local0 + (s - nsel) : -1;
            if (a.kpos) a.kpos[lo + s] = s < ntot ? s * a.w : 0;
        }
        if (a.kpos && tid == 0) a.qpos[li] = (nsel + g0 - local0) * a.w;
        __syncthreads(); // shared arrays are reused by the next list
    }
}

__global__ void __launch_bounds__(128)
moba_select_kernel(int *idx, const float *q, const double *kbar, double *scores, int B, int T,
                   int H, int KVH, int D, int bs, int nb, int top, int W) {
    extern __shared__ double qd[]; // [D]
    double *sc = scores + (size_t)blockIdx.x * nb;
    int G = H / KVH, tid = threadIdx.x;
    size_t nl = (size_t)B * H * T;
    for (size_t li = blockIdx.x; li < nl; li += gridDim.x) {
        int t = (int)(li % T), h = (int)((li / T) % H), b = (int)(li / T / H);
        const float *qt = q + (((size_t)b * T + t) * H + h) * D;
        const double *kb = kbar + ((size_t)b * KVH + h / G) * nb * D;
        int *list = idx + li * W, own = t / bs, n = top - 1;
        for (int d = tid; d < D; d += blockDim.x) qd[d] = qt[d];
        for (int s = tid; s < W; s += blockDim.x) list[s] = -1;
        __syncthreads();
        for (int j = tid; j < own; j += blockDim.x) {
            double s = 0;
            for (int d = 0; d < D; d++) s += qd[d] * kb[(size_t)j * D + d];
            sc[j] = s;
        }
        __syncthreads();
        for (int j = tid; j < own; j += blockDim.x) {
            double sj = sc[j];
            int rank = 0;
            for (int i = 0; i < own && rank < n; i++) rank += beats(sc[i], i, sj, j);
            if (rank < n) list[rank] = j;
        }
        if (tid == 0) list[min(n, own) > 0 ? min(n, own) : 0] = own;
        __syncthreads();
    }
}

__global__ void fixed_select_kernel(int *idx, int kind, int B, int H, int nblk, int W) {
    size_t n = (size_t)B * H * nblk;
    for (size_t li = blockIdx.x * (size_t)blockDim.x + threadIdx.x; li < n;
         li += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(li % nblk), h = (int)((li / nblk) % H);
        int *list = idx + li * W, m = 0;
        for (int s = 0; s < W; s++) list[s] = -1;
        if (kind == ATTN_DENSE) {
            for (int r = 0; r <= c; r++) list[m++] = r;
            continue;
        }
        int pair_with_prev = kind == ATTN_WINDOW ? c > 0 : h < H / 2 ? c % 2 == 1 : c > 0 && c % 2 == 0;
        if (pair_with_prev) list[m++] = c - 1;
        list[m++] = c;
    }
}

void cuda_attention_select(AttnIndex *ix, const AttnConfig *cfg, const float *q, const float *k,
                           int B, int T, int H, int KVH, int D) {
    AttnDims d;
    MS_ASSERT(attn_dims(cfg, T, &d) == 0, "%s", ms_error());
    MS_ASSERT(ix->nblk == d.nblk && ix->width == d.width && ix->qblock == d.qblock &&
                  ix->region == d.region,
              "attention_select: index shape does not match the config at T = %d", T);
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention: H = %d not a multiple of KVH = %d", H, KVH);
    size_t nl = (size_t)B * H * d.nblk, n = nl * d.width;
    if (ix->kpos && cfg->kind != ATTN_MS) cudaCheck(cudaMemset(ix->kpos, 0, n * sizeof(int)));
    if (cfg->kind == ATTN_MS) {
        int N = d.N;
        unsigned grid = (unsigned)(nl < SEL_MAX_GRID ? nl : SEL_MAX_GRID);
        size_t kb_n = (size_t)B * KVH * N * D;
        size_t bytes = kb_n * 8 + (size_t)B * KVH * N * 8 + (size_t)grid * N * 8 + (size_t)grid * N * 4;
        char *scr = (char *)cuda_scratch(SCRATCH_SELECT, bytes);
        double *kbar = (double *)scr, *knorm = kbar + kb_n, *scores = knorm + (size_t)B * KVH * N;
        int *mark = (int *)(scores + (size_t)grid * N);
        cudaCheck(cudaMemset(mark, 0, (size_t)grid * N * sizeof(int)));
        pool_k_kernel<<<grid_for(kb_n, 256), 256>>>(kbar, k, B, T, KVH, D, cfg->w, N, cfg->pool);
        cudaLaunchCheck();
        norm_kernel<<<grid_for((size_t)B * KVH * N, 256), 256>>>(knorm, kbar, (size_t)B * KVH * N, D);
        cudaLaunchCheck();
        MsArgs a;
        a.idx = ix->idx, a.kpos = ix->kpos, a.qpos = ix->qpos, a.q = q, a.kbar = kbar;
        a.knorm = knorm, a.scores = scores, a.mark = mark;
        a.B = B, a.T = T, a.H = H, a.KVH = KVH, a.D = D;
        a.N = N, a.w = cfg->w, a.M = d.M, a.S = d.S, a.W = d.width, a.nblk = d.nblk;
        a.first = d.first, a.last_dense = d.last_dense, a.lg = d.lg, a.Gq = d.G;
        a.pool = cfg->pool, a.score = cfg->score, a.select = cfg->select, a.order = cfg->order;
        int MS = d.M * d.S;
        size_t smem = sizeof(double) * ((size_t)D + 2 * MS) + sizeof(int) * (3 * (size_t)MS + d.M);
        a.gbuf = NULL, a.gstride = 0;
        if (smem > 200 * 1024) { // large merge x top: the arrays go to global memory, fewer blocks
            a.gstride = (smem + 7) / 8;
            size_t cap = ((size_t)256 << 20) / (a.gstride * 8);
            if (cap < 1) cap = 1;
            if (grid > cap) grid = (unsigned)cap;
            a.gbuf = (double *)cuda_scratch(SCRATCH_SELECT_BIG, a.gstride * 8 * grid);
            smem = 0;
        }
        if (smem > 48 * 1024)
            cudaCheck(cudaFuncSetAttribute(ms_select_kernel,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        ms_select_kernel<<<grid, SEL_THREADS, smem>>>(a);
        cudaLaunchCheck();
        return;
    }
    if (cfg->kind == ATTN_MOBA) {
        int bs = cfg->block, nb = (T + bs - 1) / bs;
        size_t nlr = (size_t)B * H * T;
        unsigned grid = (unsigned)(nlr < 8 * SEL_MAX_GRID ? nlr : 8 * SEL_MAX_GRID);
        size_t kb_n = (size_t)B * KVH * nb * D;
        double *kbar = (double *)cuda_scratch(SCRATCH_SELECT, kb_n * 8 + (size_t)grid * nb * 8);
        double *scores = kbar + kb_n;
        pool_k_kernel<<<grid_for(kb_n, 256), 256>>>(kbar, k, B, T, KVH, D, bs, nb, POOL_MEAN);
        cudaLaunchCheck();
        MS_ASSERT(D <= 4096, "attention_select: head dim %d", D);
        moba_select_kernel<<<grid, 128, sizeof(double) * D>>>(ix->idx, q, kbar, scores, B, T, H,
                                                              KVH, D, bs, nb, cfg->top, d.width);
        cudaLaunchCheck();
        return;
    }
    fixed_select_kernel<<<grid_for(nl, 128), 128>>>(ix->idx, cfg->kind, B, H, d.nblk, d.width);
    cudaLaunchCheck();
}
