// attn_mode.cu: the bf16 attention kernels' backward accumulation mode (attn_bf16.h).
#include <stdlib.h>
#include <string.h>

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
