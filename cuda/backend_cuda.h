// backend_cuda.h: the CUDA backend, seen from C. Only builds with MSLAB_CUDA defined (the Makefile
// defines it when nvcc is found and CUDA=0 is not given) link cuda/*.o; C code guards its calls:
//
//   #ifdef MSLAB_CUDA
//   #include "../cuda/backend_cuda.h"
//   #endif
//
// backend_cuda() returns the table (fp32 storage, device memory, every pointer argument of every op
// is a device pointer) or NULL when no CUDA device can be used, with ms_error() saying why, e.g.
// "no CUDA device (cudaGetDeviceCount: CUDA driver version is insufficient ...)". It never aborts
// for a missing device, so a CUDA build runs its CPU work unchanged on a machine without a GPU.
//
// Unimplemented ops: every entry of ops.h that this backend does not implement is NULL in the
// table (the table is filled by assignment from a zeroed struct, so an op added to ops.h later is
// NULL here until a kernel exists). A caller detects them with `be->op == NULL`;
// backend_cuda_missing() names them for messages.
#ifndef MSLAB_BACKEND_CUDA_H
#define MSLAB_BACKEND_CUDA_H

#include "../core/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// The CUDA backend on device 0 (MSLAB_CUDA_DEVICE=i picks another), or NULL with ms_error() set.
const Backend *backend_cuda(void);

// Comma-separated names of the ops.h entries that the CUDA table leaves NULL; "" when the table is
// complete. Entries are compared against the CPU table, so an op added to ops.h and to the CPU
// backend but not here is reported as "op#<slot>" until it is named in cuda/backend.cu.
const char *backend_cuda_missing(void);

// The device in words ("NVIDIA H200, sm_90, 132 SMs, 139.8 GiB"), for logs; "" before
// backend_cuda() succeeded.
const char *backend_cuda_device_name(void);

#ifdef __cplusplus
}
#endif

#endif
