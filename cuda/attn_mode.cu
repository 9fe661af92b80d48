// attn_mode.cu: the bf16 attention kernels' process-wide modes (attn_bf16.h): the backward's
// accumulation mode, the ordered mode's wait watchdog (ord_watch.cuh), and which kernel family
// runs a call (Hopper wgmma where it can, else mma.sync).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "ord_watch.cuh"

extern "C" {
#include "attn_bf16.h"
}

static int mode = -1; // -1: not read from the environment yet

extern "C" int attn_bf16_deterministic(void) {
    if (mode < 0) {
        const char *e = getenv("MSLAB_DETERMINISTIC");
        mode = !(e && !strcmp(e, "0"));
    }
    return mode;
}

extern "C" int attn_bf16_set_deterministic(int on) {
    int old = attn_bf16_deterministic();
    mode = on ? 1 : 0;
    return old;
}

// The ordered waits' watchdog (ord_watch.cuh): ATTN_ORD_NFAM words of pinned host memory mapped into
// the device (UVA: the same address), allocated at the first ordered call
static int *ord_words;
static long long ord_test_tmo;
static int ord_stall_on;
static long ord_events;
static const char *ord_names[ATTN_ORD_NFAM] = {
    "flash_wgmma_bwd's fused dQ order", "sparse_wgmma_keys_bwd's dK / dV chains",
    "sq_fused_kernel's region order", "sparse_bf16_bwd's region order",
    "flash_bf16_bwd's dQ order"};

OrdWatch ord_watch(int fam, long long dflt) {
    static int *dev, failed;
    if (!dev && !failed) {
        if (cudaHostAlloc((void **)&ord_words, 64, cudaHostAllocMapped | cudaHostAllocPortable) != cudaSuccess ||
            (memset(ord_words, 0, 64), cudaHostGetDevicePointer((void **)&dev, ord_words, 0)) !=
                cudaSuccess) {
            cudaGetLastError(), dev = nullptr, failed = 1;
            fprintf(stderr, "mslab: warning: no pinned flag for the ordered backward's waits: a "
                            "timed-out wait will not be reported\n");
        }
    }
    return OrdWatch{dev ? dev + fam : nullptr, ord_test_tmo > 0 ? ord_test_tmo : dflt};
}
int ord_stall(void) { return ord_stall_on; }
extern "C" void attn_bf16_ord_test(long long tmo, int stall) { ord_test_tmo = tmo, ord_stall_on = stall; }
static int ord_fams; // the families seen since the last attn_bf16_ord_timeouts(fams) (bits)
extern "C" long attn_bf16_ord_timeouts(int *fams) {
    if (fams) *fams = ord_fams, ord_fams = 0;
    return ord_events;
}
extern "C" int attn_bf16_ord_check(void) {
    if (!ord_words) return 0;
    int bits = 0;
    for (int f = 0; f < ATTN_ORD_NFAM; f++)
        if (__atomic_exchange_n(ord_words + f, 0, __ATOMIC_ACQ_REL)) { // (a device store between
            bits |= 1 << f, ord_events++, ord_fams |= 1 << f;              // a read and a clear: kept)
            fprintf(stderr, "mslab: ERROR: a deterministic attention backward's ordered-add wait "
                            "timed out (%s): the fixed summation order was broken, so that "
                            "call's dq / dk / dv are not bitwise repeatable and may be wrong "
                            "(adds lost or out of order)\n", ord_names[f]);
        }
    return bits;
}

// MSLAB_FLASH_WGMMA=0 keeps the mma.sync kernels (for comparisons). The wgmma and mma.sync kernels
// share their contract (attn_bf16.h), so a wgmma forward may pair with an mma.sync backward when
// only one of them handles a shape.
static int use_wgmma(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("MSLAB_FLASH_WGMMA");
        on = !(e && !strcmp(e, "0"));
    }
    return on;
}

extern "C" int attn_bf16_dense_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                                   const uint16_t *v, int B, int T, int H, int KVH, int D) {
    if (use_wgmma() && flash_wgmma_fwd(out, lse, q, k, v, B, T, H, KVH, D) == 0) return 0;
    return flash_bf16_fwd(out, lse, q, k, v, B, T, H, KVH, D);
}

extern "C" int attn_bf16_dense_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                                   const uint16_t *out, const float *lse, const uint16_t *q,
                                   const uint16_t *k, const uint16_t *v, int B, int T, int H,
                                   int KVH, int D) {
    attn_bf16_ord_check(); // earlier calls' timed-out waits (no synchronisation)
    if (use_wgmma() && flash_wgmma_bwd(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KVH, D) == 0)
        return 0;
    return flash_bf16_bwd(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KVH, D);
}

extern "C" int attn_bf16_sparse_fwd(uint16_t *out, float *lse, const uint16_t *q,
                                    const uint16_t *k, const uint16_t *v, const AttnIndex *ix,
                                    int B, int T, int H, int KVH, int D) {
    if (use_wgmma() && sparse_wgmma_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D) == 0) return 0;
    return sparse_bf16_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D);
}

extern "C" int attn_bf16_sparse_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv,
                                    const uint16_t *dout, const uint16_t *out, const float *lse,
                                    const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                    const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    attn_bf16_ord_check();
    if (use_wgmma() &&
        sparse_wgmma_bwd(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D) == 0)
        return 0;
    return sparse_bf16_bwd(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D);
}
