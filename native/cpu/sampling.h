// Sampling the next token from full-vocabulary logits on the CPU: temperature, top-k, top-p,
// one uniform draw per (seed, stream, step) from a counter-based generator, so the same seed
// gives the same samples however the draws are batched.
#pragma once

#include <cstdint>

#include "engine/backend.h"

namespace diffuse {

// A uniform double in [0, 1) from (seed, stream, step): splitmix64 over a mixed counter.
double uniform_draw(uint64_t seed, uint64_t stream, uint64_t step);

void sample_tokens(const float* hidden, int64_t dim, const LinearWeight& head, const int32_t* rows,
                   const uint64_t* streams, int64_t n, const SampleParams& params, uint64_t step,
                   int32_t* tokens, float* logp);

// Bytes sample_tokens allocates for itself drawing n rows from a [vocab x dim] head: a block
// of gathered rows and their logits, and each thread's draw scratch. Not the GEMM's packing.
uint64_t sample_scratch_bytes(int64_t n, int64_t vocab, int64_t dim);

}  // namespace diffuse
