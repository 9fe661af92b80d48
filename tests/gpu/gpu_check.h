// gpu_check.h: what the GPU parity test files share (defined in gpu_tests.c): both backends, the
// random generator, the filter and the report line `op | shape | err | tol | ok`.
#ifndef MSLAB_GPU_CHECK_H
#define MSLAB_GPU_CHECK_H

#include "../../core/common.h"
#include "../../core/model.h"
#include "../../core/ops.h"

extern const Backend *cpu, *gpu; // the CPU reference and the fp32 CUDA backend
extern int quick;                // --quick: small shapes only (compute-sanitizer)
extern Rng rng;

int wanted(const char *op); // FILTER (argv) matches op
// One table row; det: 1 = two CUDA runs gave the same bits, 0 = not (fails), -1 = not checked.
// The row also fails where an ordered backward's wait timed out since the previous row
// (attn_bf16_ord_check; s13).
void report(const char *op, const char *shape, double err, double tol, int det);
// the ordered backward's timed-out waits since the last row or call (a test that provokes them
// takes them here, so that its row can assert them and the next row does not fail on them)
long ord_taken(void);

// A learnable token stream (mostly next = prev + 1 mod V, random restarts): tok/tgt [B*T].
void batch_tokens(Rng *r, int *tok, int *tgt, int B, int T, int V);
// `steps` AdamW steps of a model of cfg on be (seed 3, lr 2e-3, warm-up 5, batch_tokens with seed
// 5): losses[steps], the final parameters into params_out (if not NULL); returns tokens/s over
// steps 2.. .
double train(const Backend *be, ModelConfig cfg, int B, int T, int steps, float *losses,
             float *params_out);

// The test groups of the other files, called from main in this order.
void t_flash_bf16_all(void);   // tests/gpu/flash_bf16_tests.c
void t_sparse_bf16_all(void);  // tests/gpu/sparse_bf16_tests.c
void t_backend_bf16_all(void); // tests/gpu/backend_bf16_tests.c
void t_select_bf16_all(void);  // tests/gpu/select_bf16_tests.c
void t_flash_wgmma_all(void);  // tests/gpu/flash_wgmma_tests.c
void t_sparse_wgmma_fwd_all(void); // tests/gpu/sparse_wgmma_fwd_tests.c
void t_sparse_wgmma_bwd_all(void); // tests/gpu/sparse_wgmma_bwd_tests.c

#endif
