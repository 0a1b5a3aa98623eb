// Model weights: where each tensor comes from (a mapped file region, host data, or a seeded
// initialiser) and the loaded set in backend memory, under Hugging Face names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/config.h"

namespace diffuse {

struct TensorSource {
  enum class Kind { File, Data, Init };
  std::string name;             // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;   // outermost first, e.g. [out, in]
  Kind kind = Kind::File;
  // Kind::File: a region of a file in a stored type (see io/dequant.h).
  std::string file;
  uint64_t offset = 0;
  // The stored type: of the file region (Kind::File), or the type a normal initialiser's
  // values are rounded to (Kind::Init; see quantize_row).
  std::string storage = "F32";
  // A matrix [rows x cols] whose rows are whole blocks stays in its stored type where the
  // backend keeps that type (Backend::keeps_stored), unless `widen` asks for f32 (the
  // backend's own weight type) at load. Vectors (norms, biases) are always widened.
  bool widen = false;
  // Kind::Data: the values themselves.
  std::vector<float> data;
  // Kind::Init: "normal" (mean 0, `std`), "ones" or "zeros", from `seed`.
  std::string init;
  double std = 0.02;
  uint64_t seed = 0;
  // GGUF stores Q and K rows interleaved for its RoPE; > 0 undoes that for this many heads.
  int64_t unpermute_heads = 0;
};

struct LayerWeights {
  BufferPtr attn_norm, ffn_norm;
  BufferPtr q_norm, k_norm;                // [head_dim], with qk_norm
  BufferPtr attn_post_norm, ffn_post_norm;  // [hidden], with sandwich_norms
  BufferPtr linear[kModules];
  BufferPtr qkv_bias[3];
};

struct Weights {
  BufferPtr embed;       // [vocab x hidden]
  BufferPtr final_norm;  // [hidden]
  BufferPtr lm_head;     // [vocab x hidden]; null when tied to embed
  std::vector<LayerWeights> layers;
  size_t bytes = 0;      // backend memory held
};

// Loads every tensor the config calls for. Throws Error naming the tensor (and file) when one
// is missing, misshapen, out of its file's bounds, or of an unsupported type.
Weights load_weights(Backend& backend, const ModelConfig& config,
                     const std::vector<TensorSource>& sources);

}  // namespace diffuse
