#include "engine/config.h"

#include <cmath>

#include "engine/errors.h"

namespace diffuse {

void ModelConfig::validate() const {
  require(hidden > 0 && intermediate > 0 && layers > 0 && vocab > 0, "model config: hidden, intermediate, layers and vocab must be positive");
  require(heads > 0 && kv_heads > 0 && heads % kv_heads == 0, "model config: heads must be a positive multiple of kv_heads");
  require(head_dim > 0 && head_dim % 2 == 0, "model config: head_dim must be positive and even");
  require(rms_eps > 0 && rope_theta > 0, "model config: rms_eps and rope_theta must be positive");
  require(rope_scaling.type == "none" || rope_scaling.type == "linear" || rope_scaling.type == "llama3" || rope_scaling.type == "longrope",
          "model config: unsupported rope scaling '" + rope_scaling.type + "' (none, linear, llama3 and longrope are supported)");
  require(rope_dim >= 0 && rope_dim <= head_dim && rope_dim % 2 == 0, "model config: rotaryDim must be even and at most headDim (0 for headDim)");
  if (longrope()) {
    const size_t half = static_cast<size_t>(rotary_dim() / 2);
    require(rope_scaling.short_factor.size() == half && rope_scaling.long_factor.size() == half,
            "model config: longrope needs shortFactor and longFactor of rotaryDim / 2 = " + std::to_string(half) + " values each");
    for (const auto* v : {&rope_scaling.short_factor, &rope_scaling.long_factor})
      for (double f : *v) require(std::isfinite(f) && f > 0, "model config: longrope factors must be positive finite numbers");
    require(std::isfinite(rope_scaling.attention_factor) && rope_scaling.attention_factor > 0 &&
                std::isfinite(rope_scaling.original_max_position_embeddings) && rope_scaling.original_max_position_embeddings > 0,
            "model config: longrope needs a positive attentionFactor and originalMaxPositionEmbeddings");
  }
  require(norm_offset == 0.f || norm_offset == 1.f, "model config: normWeightOffset must be 0 or 1");
  require(std::isfinite(embed_scale) && embed_scale > 0, "model config: embeddingScale must be a positive number");
  require(std::isfinite(attn_scale) && attn_scale >= 0, "model config: attentionScale must be a positive number (or 0 for 1/sqrt(head_dim))");
  require(std::isfinite(attn_softcap) && attn_softcap >= 0 && std::isfinite(final_softcap) && final_softcap >= 0,
          "model config: soft-caps must be positive numbers (or 0 for none)");
  require(sliding_window >= 0, "model config: slidingWindow must be >= 0");
  require(sliding_layers.empty() || static_cast<int64_t>(sliding_layers.size()) == layers,
          "model config: layerTypes must name one type per layer");
  require(std::isfinite(local_rope_theta) && local_rope_theta >= 0, "model config: localRopeTheta must be a positive number (or 0)");
}

std::vector<float> ModelConfig::rope_inv_freq(bool local, bool long_factors) const {
  const int64_t dim = rotary_dim(), half = dim / 2;
  std::vector<float> inv(half);
  const double pi = 3.14159265358979323846;
  const double theta = local && has_local_rope() ? local_rope_theta : rope_theta;
  const RopeScaling none;
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(dim));
    const RopeScaling& s = local && has_local_rope() ? none : rope_scaling;
    if (s.type == "linear") {
      f /= s.factor;
    } else if (s.type == "longrope") {
      f /= (long_factors ? s.long_factor : s.short_factor)[i];
    } else if (s.type == "llama3") {
      // Long wavelengths are interpolated by `factor`, short ones kept, the band between blended.
      const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
      const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
      const double wavelen = 2 * pi / f;
      if (wavelen > low_wavelen) {
        f /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[i] = static_cast<float>(f);
  }
  return inv;
}

const char* module_name(int module) {
  static const char* names[kAdapterModules] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj"};
  return module >= 0 && module < kAdapterModules ? names[module] : "?";
}

int module_from_name(const std::string& name) {
  for (int m = 0; m < kAdapterModules; ++m)
    if (name == module_name(m)) return m;
  return -1;
}

bool module_is_attention(int module) { return module <= O_PROJ || module == QKV_PROJ; }

}  // namespace diffuse
