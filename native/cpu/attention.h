// Tree-masked attention on the CPU (see AttentionShape in engine/backend.h): each query row
// attends to its own list of key rows — its prompt, its ancestors in the target trie and
// itself — so one pass serves a causal prompt, a trie of targets and a KV-cached decode.
//
//   forward:  s_j = scale q . k_j over the row's keys;  p = softmax(s);  out = sum_j p_j v_j
//             lse = log sum_j exp(s_j)  (saved)
//   backward: dp_j = dout . v_j;  D = dout . out;  ds_j = p_j (dp_j - D)
//             dq = scale sum_j ds_j k_j;  dk_j += scale ds_j q;  dv_j += p_j dout
//   soft-cap (shape.softcap = c > 0): s_j = c tanh(scale q . k_j / c), and ds_j gains the
//             factor 1 - tanh^2 on its way back to q . k_j.
#pragma once

#include <cstdint>

#include "engine/backend.h"

namespace diffuse {

void attention_forward(const float* q, const float* k, const float* v, const int32_t* key_offsets,
                       const int32_t* key_rows, const AttentionShape& shape, float* out,
                       float* lse);
void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                        const float* out, const float* lse, const int32_t* key_offsets,
                        const int32_t* key_rows, const AttentionShape& shape, float* dq,
                        float* dk, float* dv);

// Bytes attention_forward (or, with `backward`, attention_backward) allocates for itself on
// `shape` when no query row reads more than `max_keys` keys: the transposed k (and v) tiles,
// the zero-padded copies a head dim that is not a multiple of 16 runs on, the tasks' score
// rows (one task per thread at a time) and the backward's per-block dk / dv copies. An upper
// estimate: the same sizes the kernels compute, taking the transposes as made.
uint64_t attention_scratch_bytes(const AttentionShape& shape, int64_t max_keys, bool backward);

}  // namespace diffuse
