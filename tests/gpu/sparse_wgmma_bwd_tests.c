// sparse_wgmma_bwd_tests.c: the Hopper wgmma block-sparse bwd (cuda/attn_bf16.h sparse_wgmma_bwd)
// against the CPU reference on bf16-rounded inputs. Not written yet.
#include "gpu_check.h"

void t_sparse_wgmma_bwd_all(void) {}
