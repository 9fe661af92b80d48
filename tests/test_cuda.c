// test_cuda.c: what the CPU suite can check of the CUDA backend (docs/cuda.md). The GPU parity
// tests are tests/gpu/ (make test-gpu, on a GPU machine). Here: a CUDA build on a machine without a
// GPU reports "no CUDA device" cleanly instead of aborting, and a run asking for device "cuda" is
// refused with that reason; on a machine with a GPU, a memory round trip.
#include <string.h>

#include "../core/common.h"
#include "../core/run.h"
#include "test.h"
#ifdef MSLAB_CUDA
#include "../cuda/backend_cuda.h"
#endif

TEST(cuda_backend_absent_or_usable) {
#ifndef MSLAB_CUDA
    RunConfig rc;
    run_config_default(&rc);
    rc.device = "cuda";
    CHECK(run_config_check(&rc) != 0);
    CHECK(strstr(ms_error(), "cuda") != NULL);
    SKIP("built without CUDA (CUDA=0 or no nvcc)");
#else
    const Backend *be = backend_cuda();
    RunConfig rc;
    run_config_default(&rc);
    rc.device = "cuda";
    if (!be) {
        CHECK(strstr(ms_error(), "no CUDA device") != NULL);
        CHECK(backend_cuda() == NULL); // asking again is just as clean
        CHECK(run_config_check(&rc) != 0);
        CHECK(strstr(ms_error(), "device \"cuda\": no CUDA device") != NULL);
        printf("    (no GPU here: %s)\n", ms_error());
        return;
    }
    CHECK(run_config_check(&rc) == 0);
    float host[5] = {1, 2, 3, 4, 5}, back[5] = {0};
    float *d = be->alloc(sizeof host);
    be->upload(d, host, sizeof host);
    be->scale(d, 2.0f, 5);
    be->download(back, d, sizeof back);
    for (int i = 0; i < 5; i++) CHECK(back[i] == 2 * host[i]);
    be->free(d);
#endif
}
