// sparse_wgmma_fwd_tests.c: the Hopper wgmma block-sparse fwd (cuda/attn_bf16.h sparse_wgmma_fwd)
// against the CPU reference on bf16-rounded inputs. Not written yet.
#include "gpu_check.h"

void t_sparse_wgmma_fwd_all(void) {}
