// ord_watch.cuh: the ordered (deterministic) backward's wait watchdog (s13; attn_bf16.h:
// attn_bf16_ord_check). The ordered kernels add in a fixed order by waiting for their turn on
// counters (flash_bf16's and the dense wgmma fused kernel's dQ tiles, the keys backward's dK / dV
// chains, sq_fused_kernel's and sparse_bf16's regions). Each wait is bounded (~0.5-1 s), so a
// broken launch-order assumption cannot hang the process; but a wait that gives up breaks the
// order: that call's gradients are not repeatable and may be wrong (an add that lands before its
// chain's first store is lost). The kernel then stores 1 into its family's word of a flag in
// pinned host memory mapped into the device: a store on the timeout path only (the loops and
// every other path unchanged, no copy, no synchronisation). The host reads the words with plain
// loads at the next backward call's entry and where it synchronises already (the backends'
// downloads, the GPU tests' rows), warns on stderr and counts (attn_bf16_ord_check).
#ifndef MSLAB_ORD_WATCH_CUH
#define MSLAB_ORD_WATCH_CUH
#include "cuda_common.cuh" // ld_acquire_gpu
extern "C" {
#include "attn_bf16.h" // the families ATTN_ORD_* (bit f of attn_bf16_ord_check's value)
}

struct OrdWatch {
    int *flag;     // this family's word (null: not watched)
    long long tmo; // the wait's bound in cycles
};
__device__ __forceinline__ void ord_timed_out(const OrdWatch &w) {
    if (w.flag) *(volatile int *)w.flag = 1;
}
// the bound (a zero-initialised watch, i.e. a caller that set none: 2^31 cycles, ~1 s)
__device__ __forceinline__ long long ord_tmo(const OrdWatch &w) { return w.tmo > 0 ? w.tmo : 1ll << 31; }
// Thread-level wait until *cnt == v by acquire polls, NS ns apart; bounded (ord_tmo): a broken
// ordering assumption gives a wrong result rather than a hung process, and the timeout is
// flagged for the host. flash_bf16's dQ tiles (NS 32) and the wgmma backwards' dQ tiles / dK-dV
// chains (NS 20) share it; sparse_bf16 / sq_fused_kernel poll relaxed and fence themselves.
template <int NS>
__device__ __forceinline__ void ord_wait(const int *cnt, int v, const OrdWatch &w) {
    long long t0 = clock64();
    while (ld_acquire_gpu(cnt) != v) {
        __nanosleep(NS);
        if (clock64() - t0 > ord_tmo(w)) {
            ord_timed_out(w);
            break;
        }
    }
}
// (attn_mode.cu) family fam's watch, bound dflt cycles unless a test set one
// (attn_bf16_ord_test); stall (tests): the host starts the ordered counters where no turn comes,
// so that every chain's first wait times out
OrdWatch ord_watch(int fam, long long dflt);
int ord_stall(void);

#endif
