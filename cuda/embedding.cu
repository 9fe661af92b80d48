// embedding.cu: token embedding, forward (a row gather) and backward (a scatter-add made
// deterministic).
//
// Backward, dwte[tok[n], :] += dout[n, :]: two rows may share a token, so rows cannot simply be
// handed to threads, and float atomics would make the sum's order (and its bits) vary from run to
// run. Instead a deterministic segmented reduction:
//   1. a stable radix sort of (token, row) pairs (CUB; stable, so rows of one token stay in
//      increasing order); the sort needs no vocabulary size;
//   2. one block column per segment start (a sorted position whose token differs from the one
//      before) and 128 columns of C: acc = dwte[v, c]; acc += dout[row, c] for the segment's rows
//      in increasing row order; dwte[v, c] = acc.
// Every dwte element is owned by one thread and summed in the order of core/cpu/ (increasing n,
// starting from the old value), so the result is bitwise identical to the CPU reference.
// Both directions move float4 where C % 4 == 0 and the arrays are 16-byte aligned (s9; ncu, the
// LM's N = 32768, C = 768, V = 32000, H200, s9 r2: forward 56 us per call (112 with 4-byte
// loads), the backward's segment kernel 65 us (150); the same sums in the same order).
#include <cub/device/device_radix_sort.cuh>

#include "cuda_common.cuh"

#define EMB_THREADS 128

// T: float, or float4 (C counted in float4 then)
template <class T>
__global__ void embedding_fwd_kernel(T *out, const int *tok, const T *wte, int N, int C) {
    int n = blockIdx.y;
    int t = tok[n];
    if (t < 0) {
        if (threadIdx.x == 0 && blockIdx.x == 0)
            printf("embedding: token %d at row %d is negative\n", t, n);
        __trap();
    }
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x)
        out[(size_t)n * C + c] = wte[(size_t)t * C + c];
}

__global__ void iota_kernel(int *x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = i;
}

__device__ __forceinline__ float emb_add(float a, float b) { return a + b; }
__device__ __forceinline__ float4 emb_add(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
// grid (N, ceil(C / EMB_THREADS)): block (i, cb) works only when sorted position i starts a segment;
// T: float, or float4 (C counted in float4)
template <class T>
__global__ void embedding_bwd_segments_kernel(T *dwte, const T *dout, const int *keys,
                                              const int *rows, int N, int C) {
    int i = blockIdx.x;
    int v = keys[i];
    if (i > 0 && keys[i - 1] == v) return; // not the start of a segment
    if (v < 0) {
        if (threadIdx.x == 0 && blockIdx.y == 0)
            printf("embedding: negative token %d in the backward\n", v);
        __trap();
    }
    int c = blockIdx.y * EMB_THREADS + threadIdx.x;
    if (c >= C) return;
    int end = i + 1;
    while (end < N && keys[end] == v) end++;
    T *d = dwte + (size_t)v * C + c;
    T acc = *d;
    for (int j = i; j < end; j++) acc = emb_add(acc, dout[(size_t)rows[j] * C + c]);
    *d = acc;
}

static int emb_vec(const void *a, const void *b, int C) {
    return C % 4 == 0 && ((uintptr_t)a & 15) == 0 && ((uintptr_t)b & 15) == 0;
}

template <class T>
static void emb_fwd(T *out, const int *tok, const T *wte, int N, int C) {
    unsigned gx = cdiv_u(C, 256);
    for (int n0 = 0; n0 < N; n0 += 65535) { // grid.y is limited to 65535: several launches
        int nn = N - n0 < 65535 ? N - n0 : 65535;
        embedding_fwd_kernel<T><<<dim3(gx, nn), 256>>>(out + (size_t)n0 * C, tok + n0, wte, nn, C);
        cudaLaunchCheck();
    }
}

void cuda_embedding_fwd(float *out, const int *tok, const float *wte, int N, int C) {
    if (N <= 0 || C <= 0) return;
    if (emb_vec(out, wte, C)) emb_fwd((float4 *)out, tok, (const float4 *)wte, N, C / 4);
    else emb_fwd(out, tok, wte, N, C);
}

void cuda_embedding_bwd(float *dwte, const float *dout, const int *tok, int N, int C) {
    if (N <= 0 || C <= 0) return;
    // scratch: rows_in, keys_out, rows_out (N ints each)
    int *buf = (int *)cuda_scratch(SCRATCH_SORT, (size_t)3 * N * sizeof(int));
    int *rows_in = buf, *keys_out = buf + N, *rows_out = buf + 2 * (size_t)N;
    iota_kernel<<<grid_for(N, 256), 256>>>(rows_in, N);
    cudaLaunchCheck();
    size_t temp_bytes = 0;
    cudaCheck(cub::DeviceRadixSort::SortPairs(NULL, temp_bytes, tok, keys_out, rows_in, rows_out,
                                              N, 0, (int)(sizeof(int) * 8), (cudaStream_t)0));
    void *temp = cuda_scratch(SCRATCH_CUB, temp_bytes);
    cudaCheck(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, tok, keys_out, rows_in, rows_out,
                                              N, 0, (int)(sizeof(int) * 8), (cudaStream_t)0));
    cudaLaunchCheck();
    MS_ASSERT(cdiv_u(C, EMB_THREADS) <= 65535, "embedding_bwd: C = %d too large", C);
    if (emb_vec(dwte, dout, C))
        embedding_bwd_segments_kernel<float4><<<dim3(N, cdiv_u(C / 4, EMB_THREADS)), EMB_THREADS>>>(
            (float4 *)dwte, (const float4 *)dout, keys_out, rows_out, N, C / 4);
    else
        embedding_bwd_segments_kernel<float><<<dim3(N, cdiv_u(C, EMB_THREADS)), EMB_THREADS>>>(
            dwte, dout, keys_out, rows_out, N, C);
    cudaLaunchCheck();
}
