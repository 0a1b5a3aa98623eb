// The launchers of every CUDA op, one group per kernel file, in the order of engine/backend.h.
// Activations and weights are bf16; LoRA parameters, gradients, moments and statistics f32.
// Each launcher enqueues its kernels on ctx.stream and returns without waiting.
#pragma once

#include "common.cuh"

namespace diffuse {
namespace cuda {

// convert.cu: host-facing conversions and on-device weight initialisation.
void f32_to_bf16(const Context& ctx, const float* src, bf16* dst, int64_t n);
void bf16_to_f32(const Context& ctx, const bf16* src, float* dst, int64_t n);
// dst[i] = std * normal_from_counter(seed, i) (engine/random.h), rounded to bf16.
void fill_normal(const Context& ctx, bf16* dst, int64_t n, float std, uint64_t seed);
void fill_constant(const Context& ctx, bf16* dst, int64_t n, float value);

// embedding.cu
void embedding_forward(const Context& ctx, const int32_t* tokens, const bf16* table, bf16* out, int64_t rows,
                       int64_t dim);

// rmsnorm.cu
void rmsnorm_forward(const Context& ctx, const bf16* x, const bf16* w, bf16* y, float* rstd, int64_t rows,
                     int64_t dim, float eps);
void rmsnorm_backward(const Context& ctx, const bf16* dy, const bf16* x, const bf16* w, const float* rstd,
                      bf16* dx, int64_t rows, int64_t dim);

// lora_linear.cu
void linear_forward(const Context& ctx, const bf16* x, const LinearWeight& W, const LoraParams& lora, bf16* y,
                    float* u, int64_t rows);
void linear_backward(const Context& ctx, const bf16* dy, const bf16* x, const LinearWeight& W,
                     const LoraParams& lora, const float* u, bf16* dx, bool accumulate, const LoraGrads& grads,
                     int64_t rows);
// LoraParams::packed: A [lora_pad(r) x in] then B [out x lora_pad(r)], bf16, zero-padded.
int64_t lora_pad(int rank);
void pack_lora(const Context& ctx, const float* A, const float* B, int64_t in, int64_t out, int rank, bf16* packed);

// rope.cu
void rope_forward(const Context& ctx, bf16* x, const int32_t* pos, const float* inv_freq, int64_t rows,
                  const RopeShape& shape);
void rope_backward(const Context& ctx, bf16* dx, const int32_t* pos, const float* inv_freq, int64_t rows,
                   const RopeShape& shape);

// attention.cu
void attention_forward(const Context& ctx, const bf16* q, const bf16* k, const bf16* v, const int32_t* key_offsets,
                       const int32_t* key_rows, const AttentionShape& shape, bf16* out, float* lse);
void attention_backward(const Context& ctx, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                        const bf16* out, const float* lse, const int32_t* key_offsets, const int32_t* key_rows,
                        const AttentionShape& shape, bf16* dq, bf16* dk, bf16* dv);

// swiglu.cu
void swiglu_forward(const Context& ctx, const bf16* gate, const bf16* up, bf16* h, int64_t n);
void swiglu_backward(const Context& ctx, const bf16* dh, const bf16* gate, const bf16* up, bf16* dgate, bf16* dup,
                     int64_t n);

// geglu.cu
void geglu_forward(const Context& ctx, const bf16* gate, const bf16* up, bf16* h, int64_t n);
void geglu_backward(const Context& ctx, const bf16* dh, const bf16* gate, const bf16* up, bf16* dgate, bf16* dup,
                    int64_t n);

// residual.cu
void add_inplace(const Context& ctx, bf16* y, const bf16* x, int64_t n);
void scale_inplace(const Context& ctx, bf16* x, float s, int64_t n);

// logprobs.cu
void logprobs_forward(const Context& ctx, const bf16* hidden, const LinearWeight& head, const EdgeSet& edges,
                      const Objective& objective, float* edge_logp, float* edge_loss, float* parent_stats,
                      float* edge_stats);
void logprobs_backward(const Context& ctx, const bf16* hidden, const LinearWeight& head, const EdgeSet& edges,
                       const Objective& objective, const float* parent_stats, const float* edge_stats,
                       bf16* dhidden);

// sampling.cu
void sample(const Context& ctx, const bf16* hidden, const LinearWeight& head, const int32_t* rows,
            const uint64_t* streams, int64_t n, const SampleParams& params, uint64_t step, int32_t* tokens,
            float* logp);

// adamw.cu
void adamw_update(const Context& ctx, float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWParams& params);
double sum_squares_many(const Context& ctx, const float* const* xs, const int64_t* ns, int count);

}  // namespace cuda
}  // namespace diffuse
