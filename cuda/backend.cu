// backend.cu: the CUDA backend's table, device selection, memory, and the error checks.
//
// backend_cuda() initialises once: picks the device (MSLAB_CUDA_DEVICE, default 0), creates the
// cuBLAS handle (matmul.cu) and fills the table. With no usable device it returns NULL and
// ms_error() says why; nothing aborts, so CPU work in a CUDA build is unaffected.
//
// Memory: cudaMalloc'd device memory (never managed memory), zero-filled on allocation as ops.h
// asks. upload/download are synchronous cudaMemcpy on the default stream: a download waits for
// every op queued before it, which is how the host reads a loss or a gradient norm; it also
// reports an ordered backward's timed-out wait (attn_bf16_ord_check).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
extern "C" {
#include "attn_bf16.h"
}

cublasHandle_t cuda_cublas;

void cuda_check_at(cudaError_t err, const char *what, const char *file, int line) {
    if (err == cudaSuccess) return;
    fprintf(stderr, "%s:%d: CUDA error %d (%s): %s\n  in %s\n", file, line, (int)err,
            cudaGetErrorName(err), cudaGetErrorString(err), what);
    abort();
}

void cublas_check_at(cublasStatus_t st, const char *what, const char *file, int line) {
    if (st == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr, "%s:%d: cuBLAS error %d (%s)\n  in %s\n", file, line, (int)st,
            cublasGetStatusString(st), what);
    abort();
}

static int sync_after_launch = -1;

void cuda_launch_check_at(const char *file, int line) {
    cuda_check_at(cudaGetLastError(), "kernel launch", file, line);
    if (sync_after_launch < 0) {
        const char *s = getenv("MSLAB_CUDA_SYNC");
        sync_after_launch = s && s[0] && strcmp(s, "0") != 0;
    }
    if (sync_after_launch) cuda_check_at(cudaDeviceSynchronize(), "kernel (MSLAB_CUDA_SYNC)", file, line);
}

// ---- scratch ----

static void *scratch_buf[SCRATCH_COUNT];
static size_t scratch_cap[SCRATCH_COUNT];

void *cuda_scratch(int slot, size_t bytes) {
    if (bytes > scratch_cap[slot]) {
        if (scratch_buf[slot]) cudaCheck(cudaFree(scratch_buf[slot])); // waits for the device
        size_t cap = bytes + bytes / 4 + 256;
        cudaCheck(cudaMalloc(&scratch_buf[slot], cap));
        scratch_cap[slot] = cap;
    }
    return scratch_buf[slot];
}

// ---- memory ----

static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    size_t n = bytes ? bytes : 16;
    cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        size_t freeb = 0, total = 0;
        cudaMemGetInfo(&freeb, &total);
        fprintf(stderr, "cuda: out of device memory allocating %zu bytes (%s; %zu of %zu bytes free)\n",
                bytes, cudaGetErrorString(e), freeb, total);
        abort();
    }
    cudaCheck(cudaMemset(p, 0, n));
    return p;
}

static void cu_free(void *p) {
    if (p) cudaCheck(cudaFree(p));
}

static void cu_upload(void *dst, const void *src, size_t bytes) {
    if (bytes) cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

static void cu_download(void *dst, const void *src, size_t bytes) {
    if (bytes) cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
    attn_bf16_ord_check(); // (synchronised: every earlier backward's timed-out wait reported)
}

static void cu_zero(float *x, size_t n) {
    if (n) cudaCheck(cudaMemsetAsync(x, 0, n * sizeof(float), 0));
}

// memmove semantics (as the CPU backend): overlapping ranges go through a temporary.
static void cu_copy(float *dst, const float *src, size_t n) {
    if (!n || dst == src) return;
    size_t bytes = n * sizeof(float);
    if (dst + n <= src || src + n <= dst) {
        cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
        return;
    }
    float *tmp;
    cudaCheck(cudaMalloc(&tmp, bytes));
    cudaCheck(cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, 0));
    cudaCheck(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, 0));
    cudaCheck(cudaFree(tmp));
}

// ---- the table ----

static Backend table; // zero: every op not assigned below stays NULL (unimplemented)
static int init_state; // 0 not tried, 1 ok, -1 failed
static char init_error[512];
static char device_name[400];

static void fill_table(void) {
    table.name = "cuda";
    table.alloc = cu_alloc;
    table.free = cu_free;
    table.upload = cu_upload;
    table.download = cu_download;
    table.zero = cu_zero;
    table.copy = cu_copy;
    table.add = cuda_add;
    table.scale = cuda_scale;
    table.sumsq = cuda_sumsq;
    table.embedding_fwd = cuda_embedding_fwd;
    table.embedding_bwd = cuda_embedding_bwd;
    table.matmul_fwd = cuda_matmul_fwd;
    table.matmul_bwd = cuda_matmul_bwd;
    table.rmsnorm_fwd = cuda_rmsnorm_fwd;
    table.rmsnorm_bwd = cuda_rmsnorm_bwd;
    table.rope_fwd = cuda_rope_fwd;
    table.rope_bwd = cuda_rope_bwd;
    table.attention_fwd = cuda_attention_fwd;
    table.attention_bwd = cuda_attention_bwd;
    table.attention_decode = cuda_attention_decode;
    table.sparse_attention_fwd = cuda_sparse_attention_fwd;
    table.sparse_attention_bwd = cuda_sparse_attention_bwd;
    table.attention_select = cuda_attention_select;
    table.swiglu_fwd = cuda_swiglu_fwd;
    table.swiglu_bwd = cuda_swiglu_bwd;
    table.crossentropy_fwd = cuda_crossentropy_fwd;
    table.crossentropy_bwd = cuda_crossentropy_bwd;
    table.adamw = cuda_adamw;
}

const Backend *backend_cuda(void) {
    if (init_state == 1) return &table;
    if (init_state == -1) {
        ms_fail("%s", init_error);
        return NULL;
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(init_error, sizeof init_error, "no CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError(); // clear the sticky-free error so later runtime calls start clean
        init_state = -1;
        ms_fail("%s", init_error);
        return NULL;
    }
    int dev = 0;
    const char *ds = getenv("MSLAB_CUDA_DEVICE");
    if (ds && ds[0]) dev = atoi(ds);
    if (dev < 0 || dev >= count) {
        snprintf(init_error, sizeof init_error,
                 "no CUDA device %d (MSLAB_CUDA_DEVICE; %d device%s present)", dev, count,
                 count == 1 ? "" : "s");
        init_state = -1;
        ms_fail("%s", init_error);
        return NULL;
    }
    e = cudaSetDevice(dev);
    cudaDeviceProp prop;
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, dev);
    if (e == cudaSuccess) e = cudaFree(0); // create the context now: a broken driver fails here
    if (e != cudaSuccess) {
        snprintf(init_error, sizeof init_error, "no CUDA device (device %d: %s)", dev,
                 cudaGetErrorString(e));
        cudaGetLastError();
        init_state = -1;
        ms_fail("%s", init_error);
        return NULL;
    }
    snprintf(device_name, sizeof device_name, "%.200s, sm_%d%d, %d SMs, %.1f GiB", prop.name,
             prop.major, prop.minor, prop.multiProcessorCount,
             prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    cuda_matmul_init();
    fill_table();
    init_state = 1;
    return &table;
}

const char *backend_cuda_device_name(void) { return device_name; }

// Names of the entries this file knows, by offset: ops added to ops.h later are reported by slot.
#define OP(f) {#f, offsetof(Backend, f)}
static const struct { const char *name; size_t off; } op_names[] = {
    OP(alloc), OP(free), OP(upload), OP(download), OP(zero), OP(copy), OP(add), OP(scale),
    OP(sumsq), OP(embedding_fwd), OP(embedding_bwd), OP(matmul_fwd), OP(matmul_bwd),
    OP(rmsnorm_fwd), OP(rmsnorm_bwd), OP(rope_fwd), OP(rope_bwd), OP(attention_fwd),
    OP(attention_bwd), OP(swiglu_fwd), OP(swiglu_bwd), OP(crossentropy_fwd),
    OP(crossentropy_bwd), OP(adamw), OP(attention_decode), OP(sparse_attention_fwd),
    OP(sparse_attention_bwd), OP(attention_select),
};
#undef OP

const char *backend_cuda_missing(void) {
    static char buf[1024];
    buf[0] = 0;
    // The table is `const char *name` followed by function pointers only: walk it slot by slot
    // against the CPU table (an op the reference has and CUDA lacks is missing).
    const Backend *cpu = backend_cpu();
    typedef void (*Fn)(void);
    size_t first = offsetof(Backend, alloc), nslot = (sizeof(Backend) - first) / sizeof(Fn);
    for (size_t i = 0; i < nslot; i++) {
        size_t off = first + i * sizeof(Fn);
        Fn fa, fc;
        memcpy(&fa, (const char *)&table + off, sizeof fa);
        memcpy(&fc, (const char *)cpu + off, sizeof fc);
        if (fa || !fc) continue;
        char one[96];
        const char *prev = "name"; // the nearest entry before this slot that has a name here
        size_t prev_off = 0;
        snprintf(one, sizeof one, "op#%zu", i);
        for (size_t k = 0; k < sizeof op_names / sizeof op_names[0]; k++) {
            if (op_names[k].off == off) snprintf(one, sizeof one, "%s", op_names[k].name);
            if (op_names[k].off < off && op_names[k].off >= prev_off)
                prev = op_names[k].name, prev_off = op_names[k].off;
        }
        if (!strncmp(one, "op#", 3))
            snprintf(one + strlen(one), sizeof one - strlen(one), " (after %s)", prev);
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, "%s%s", len ? ", " : "", one);
    }
    return buf;
}
