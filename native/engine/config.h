// The shape of a decoder, as the engine needs it: the Llama graph and the named switches by
// which Gemma, Gemma 2/3, Qwen2/3 and Mistral differ from it (defaults are Llama's).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

// RoPE frequency scaling: "none", "linear" (positions / factor), "llama3" (Meta's
// wavelength-dependent interpolation) or "longrope" (Phi-3: each frequency divided by its
// short_factor, or by its long_factor once a forward reaches past
// original_max_position_embeddings; cos and sin times attention_factor).
struct RopeScaling {
  std::string type = "none";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
  std::vector<double> short_factor, long_factor;  // longrope: rot_dim / 2 each
  double attention_factor = 1.0;                  // longrope: scales cos and sin
};

struct ModelConfig {
  int64_t hidden = 0;        // d
  int64_t intermediate = 0;  // SwiGLU width
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab = 0;
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tied_embeddings = false;
  bool attention_bias = false;  // q/k/v carry a bias (Qwen2)

  // Family switches.
  enum class Activation { SILU, GELU_TANH };
  Activation activation = Activation::SILU;  // MLP gate: SwiGLU or GeGLU with tanh-GELU (Gemma)
  float norm_offset = 0.f;      // every RMSNorm weight is w + norm_offset, added at load (Gemma's 1 + w)
  double embed_scale = 1.0;     // embeddings times this (Gemma: sqrt(hidden), rounded to f32)
  double attn_scale = 0.0;      // attention score scale; 0 means 1/sqrt(head_dim)
  double attn_softcap = 0.0;    // scores -> cap tanh(scores / cap) (Gemma 2); 0 means none
  double final_softcap = 0.0;   // logits -> cap tanh(logits / cap) (Gemma 2); 0 means none
  bool qk_norm = false;         // RMSNorm per head on q and k before RoPE (Qwen3, Gemma 3)
  bool sandwich_norms = false;  // norms after attention and after the MLP too (Gemma 2/3)
  int64_t sliding_window = 0;   // a windowed layer's query at position i sees keys at i - w < j <= i
  std::vector<uint8_t> sliding_layers;  // [layers] 1 = windowed; empty = all (when a window is set)
  double local_rope_theta = 0;  // RoPE base of windowed layers (Gemma 3); 0 means rope_theta
  bool fused_projections = false;  // the checkpoint fuses q/k/v and gate/up (Phi-3)
  int64_t rope_dim = 0;         // dimensions of each head RoPE rotates (Phi-4-mini: 3/4); 0 means head_dim

  bool layer_sliding(int64_t layer) const {
    return sliding_window > 0 && (sliding_layers.empty() || sliding_layers[layer] != 0);
  }
  double attention_scale() const { return attn_scale > 0 ? attn_scale : 1.0 / std::sqrt(static_cast<double>(head_dim)); }

  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
  void validate() const;
  int64_t rotary_dim() const { return rope_dim > 0 ? rope_dim : head_dim; }
  // inv_freq[i] for i < rotary_dim / 2, with the scaling applied; `local` gives the windowed
  // layers' frequencies (local_rope_theta, unscaled) when they have their own base; `long_factors`
  // LongRoPE's long set (else its short one).
  std::vector<float> rope_inv_freq(bool local = false, bool long_factors = false) const;
  bool has_local_rope() const { return local_rope_theta > 0; }
  bool longrope() const { return rope_scaling.type == "longrope"; }
  // LongRoPE's choice, as transformers' longrope_frequency_update makes it for one forward:
  // the long factors when the forward's largest position + 1 exceeds the original context.
  bool rope_long(int64_t max_position) const {
    return longrope() && static_cast<double>(max_position + 1) > rope_scaling.original_max_position_embeddings;
  }
  // The cos/sin scale of a global layer's RoPE (LongRoPE's attention factor; else 1).
  float rope_scale(bool local) const { return longrope() && !(local && has_local_rope()) ? static_cast<float>(rope_scaling.attention_factor) : 1.f; }
};

// The adaptable linear layers of a block, in PEFT's names.
enum Module : int { Q_PROJ = 0, K_PROJ, V_PROJ, O_PROJ, GATE_PROJ, UP_PROJ, DOWN_PROJ, kModules };
// Adapter modules of a fused checkpoint (Phi-3): one LoRA over q/k/v, one over gate/up.
constexpr int QKV_PROJ = kModules, GATE_UP_PROJ = kModules + 1, kAdapterModules = kModules + 2;
const char* module_name(int module);
int module_from_name(const std::string& name);  // -1 when unknown (any of kAdapterModules)
bool module_is_attention(int module);           // q/k/v/o live under self_attn, the rest under mlp

}  // namespace diffuse
