// The C entry points of libdiffuse_cuda.so. engine/devices.cpp loads the library with dlopen
// and uses the first three; the benchmark and check program (cuda/check) links it and uses the
// rest, which take a Backend made by diffuse_cuda_create_backend.
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/backend.h"

extern "C" {

// A CUDA backend on device `device`, or null with the reason written to `error`.
diffuse::Backend* diffuse_cuda_create_backend(int device, char* error, size_t error_len);
// The number of visible devices: 0 when there are none, -1 with the reason in `error` when
// the runtime cannot tell (no driver, a driver older than the runtime).
int diffuse_cuda_device_count(char* error, size_t error_len);
// The device's name; returns 0 on success.
int diffuse_cuda_device_name(int device, char* name, size_t len);

// Which kernel computes the LoRA linear layers' big products: "cublaslt" (cuBLASLt, then the
// rank-r term as a second accumulating GEMM) or "fused" (one custom tensor-core kernel over
// [x | s u] . [W | B]^T). Returns 0 when the name is known. A new backend starts with
// "cublaslt", or with the value of the environment variable DIFFUSE_CUDA_LINEAR when set.
int diffuse_cuda_set_linear_kernel(diffuse::Backend* backend, const char* name);
// How many logits the chunked LM-head kernels (log-probs, sampling) hold at once (default
// 2^23, 32 MiB of f32): a smaller value forces many chunks, for checks on small vocabularies.
void diffuse_cuda_set_chunk_logits(diffuse::Backend* backend, int64_t logits);
// Device memory held by the backend's allocator: in use by live buffers, the most ever in use
// since the last reset, and in use plus cached for reuse.
void diffuse_cuda_memory(diffuse::Backend* backend, size_t* in_use, size_t* peak, size_t* reserved);
void diffuse_cuda_reset_peak(diffuse::Backend* backend);
// Versions for reports: the driver's and the runtime's CUDA versions (e.g. 13000) and cuBLASLt's.
void diffuse_cuda_versions(int* driver, int* runtime, size_t* cublaslt);
}
