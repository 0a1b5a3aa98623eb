// Log-probabilities of trie edges through the LM head on the CPU, in vocabulary chunks: the
// parents' logits are formed chunk by chunk (a GEMM of the parent rows against a slice of the
// head), reduced with an online log-sum-exp and gathered at the child tokens, so rows x vocab
// floats are never stored. The backward recomputes each chunk and forms dz from the saved
// statistics (formulas with Objective in engine/backend.h), accumulating dhidden only. With a
// logit soft-cap c (EdgeSet::logit_softcap) every logit is c tanh(z / c) before all of that,
// and the backward multiplies dz by 1 - tanh^2 before the second GEMM.
#pragma once

#include <cstdint>

#include "engine/backend.h"

namespace diffuse {

void logprobs_forward(const float* hidden, int64_t dim, const LinearWeight& head,
                      const EdgeSet& edges, const Objective& objective, float* edge_logp,
                      float* edge_loss, float* parent_stats, float* edge_stats);
void logprobs_backward(const float* hidden, int64_t dim, const LinearWeight& head,
                       const EdgeSet& edges, const Objective& objective,
                       const float* parent_stats, const float* edge_stats, float* dhidden);

// Bytes logprobs_forward (or logprobs_backward) allocates for itself over `parents` parent
// rows and `edges` edges of a [vocab x dim] head: the gathered parent rows, the child lists,
// the per-chunk statistics, each running task's chunk of logits (one task per thread at a
// time) and the backward's per-thread dhidden. Not the GEMMs' own packing (gemm.h).
uint64_t logprobs_scratch_bytes(int64_t parents, int64_t edges, int64_t vocab, int64_t dim, bool backward);

}  // namespace diffuse
