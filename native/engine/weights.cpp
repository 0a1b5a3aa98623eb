#include "engine/weights.h"

#include <cmath>
#include <map>
#include <memory>

#include "engine/errors.h"
#include "io/dequant.h"
#include "io/mapped_file.h"

namespace diffuse {
namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t element_count(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Rows of a [heads * head_dim x in] matrix are stored per head as (i, j) -> 2i + j, where the
// Hugging Face layout has (j, i) -> j * head_dim/2 + i. Puts them back.
std::vector<float> unpermute_rows(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t heads) {
  std::vector<float> out(w.size());
  const int64_t head_dim = rows / heads, half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const float* src = w.data() + (h * head_dim + 2 * i + j) * cols;
        float* dst = out.data() + (h * head_dim + j * half + i) * cols;
        std::copy(src, src + cols, dst);
      }
  return out;
}

// Weights are checked as they are read: one NaN or Inf would make every log-probability NaN.
void refuse_non_finite(int64_t at, const std::vector<int64_t>& shape, const std::string& where, const std::string& what_to_do) {
  if (at < 0) return;
  std::string index;
  for (size_t i = shape.size(), rest = static_cast<size_t>(at); i-- > 0;) {
    index = std::to_string(rest % shape[i]) + (index.empty() ? "" : ", ") + index;
    rest /= shape[i];
  }
  throw Error(ErrorCode::FORMAT, where + " holds a non-finite value (NaN or Inf) at [" + index + "]; " + what_to_do);
}

class Loader {
 public:
  Loader(Backend& backend, const std::vector<TensorSource>& sources) : backend_(backend) {
    for (const auto& s : sources) by_name_[s.name] = &s;
  }

  bool has(const std::string& name) const { return by_name_.count(name) != 0; }

  // `offset` is added to every value (Gemma's RMSNorm weights, stored as w - 1 in HF files).
  BufferPtr load(const std::string& name, const std::vector<int64_t>& shape, float offset = 0.f) {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) throw Error(ErrorCode::FORMAT, "weights: tensor '" + name + "' is missing");
    const TensorSource& s = *it->second;
    const std::string where = s.kind == TensorSource::Kind::File ? s.file + ": tensor '" + name + "'" : "tensor '" + name + "'";
    if (s.shape != shape)
      throw Error(ErrorCode::FORMAT, where + " has shape " + shape_text(s.shape) + " but the config needs " + shape_text(shape));
    const int64_t n = element_count(shape);
    if (s.kind == TensorSource::Kind::Init) {
      require(offset == 0.f, where + ": a norm weight offset cannot apply to an initialiser; give the norm's own values");
      BufferPtr buf = backend_.make_weight_init(s.init, n, static_cast<float>(s.std), s.seed, name.c_str());
      bytes_ += buf->bytes();
      return buf;
    }
    std::vector<float> values = read(s, n, where);
    if (s.unpermute_heads > 0) {
      require(shape.size() == 2 && shape[0] % (2 * s.unpermute_heads) == 0, where + ": cannot undo the Q/K permutation for this shape");
      values = unpermute_rows(values, shape[0], shape[1], s.unpermute_heads);
    }
    if (offset != 0.f)
      for (float& v : values) v += offset;
    BufferPtr buf = backend_.make_weight(values.data(), n, name.c_str());
    bytes_ += buf->bytes();
    return buf;
  }

  size_t bytes() const { return bytes_; }

 private:
  std::vector<float> read(const TensorSource& s, int64_t n, const std::string& where) {
    std::vector<float> values(n);
    switch (s.kind) {
      case TensorSource::Kind::Data:
        if (static_cast<int64_t>(s.data.size()) != n)
          throw Error(ErrorCode::INVALID_ARGUMENT, where + ": " + std::to_string(s.data.size()) + " values given for " + std::to_string(n) + " elements");
        refuse_non_finite(first_non_finite(StorageType::F32, s.data.data(), n), s.shape, where, "give finite values");
        std::copy(s.data.begin(), s.data.end(), values.begin());
        break;
      case TensorSource::Kind::Init:
        break;  // made on the backend, see load()
      case TensorSource::Kind::File: {
        const StorageType type = storage_type_from_name(s.storage);
        if (n % storage_block_values(type) != 0)
          throw Error(ErrorCode::FORMAT, where + ": " + std::to_string(n) + " elements do not fill whole " + s.storage + " blocks");
        const MappedFile& file = map(s.file);
        const uint64_t need = static_cast<uint64_t>(storage_bytes(type, n));
        if (s.offset > file.size() || need > file.size() - s.offset)
          throw Error(ErrorCode::FORMAT, where + " (" + s.storage + ", " + std::to_string(need) + " bytes at offset " + std::to_string(s.offset) +
                                             ") runs past the end of the file (" + std::to_string(file.size()) + " bytes); the file is truncated or corrupt");
        refuse_non_finite(first_non_finite(type, file.data() + s.offset, n), s.shape, where,
                          "the file is damaged or was written from a diverged model; re-download or re-convert it");
        dequantize(type, file.data() + s.offset, values.data(), n);
        break;
      }
    }
    return values;
  }

  const MappedFile& map(const std::string& path) {
    auto it = files_.find(path);
    if (it == files_.end()) it = files_.emplace(path, std::make_unique<MappedFile>(path)).first;
    return *it->second;
  }

  Backend& backend_;
  std::map<std::string, const TensorSource*> by_name_;
  std::map<std::string, std::unique_ptr<MappedFile>> files_;
  size_t bytes_ = 0;
};

}  // namespace

Weights load_weights(Backend& backend, const ModelConfig& c, const std::vector<TensorSource>& sources) {
  c.validate();
  Loader loader(backend, sources);
  Weights w;
  const int64_t d = c.hidden, I = c.intermediate;
  w.embed = loader.load("model.embed_tokens.weight", {c.vocab, d});
  const float off = c.norm_offset;
  w.final_norm = loader.load("model.norm.weight", {d}, off);
  if (!c.tied_embeddings) w.lm_head = loader.load("lm_head.weight", {c.vocab, d});
  const std::vector<int64_t> linear_shapes[kModules] = {
      {c.q_dim(), d}, {c.kv_dim(), d}, {c.kv_dim(), d}, {d, c.q_dim()}, {I, d}, {I, d}, {d, I}};
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights lw;
    lw.attn_norm = loader.load(p + "input_layernorm.weight", {d}, off);
    if (c.sandwich_norms) {  // Gemma 2/3: post_attention_layernorm normalises the attention output
      lw.attn_post_norm = loader.load(p + "post_attention_layernorm.weight", {d}, off);
      lw.ffn_norm = loader.load(p + "pre_feedforward_layernorm.weight", {d}, off);
      lw.ffn_post_norm = loader.load(p + "post_feedforward_layernorm.weight", {d}, off);
    } else {
      lw.ffn_norm = loader.load(p + "post_attention_layernorm.weight", {d}, off);
    }
    if (c.qk_norm) {
      lw.q_norm = loader.load(p + "self_attn.q_norm.weight", {c.head_dim}, off);
      lw.k_norm = loader.load(p + "self_attn.k_norm.weight", {c.head_dim}, off);
    }
    for (int m = 0; m < kModules; ++m) {
      const std::string name = p + (module_is_attention(m) ? "self_attn." : "mlp.") + module_name(m) + ".weight";
      lw.linear[m] = loader.load(name, linear_shapes[m]);
    }
    if (c.attention_bias)
      for (int m = Q_PROJ; m <= V_PROJ; ++m)
        lw.qkv_bias[m] = loader.load(p + "self_attn." + module_name(m) + ".bias", {linear_shapes[m][0]});
    w.layers.push_back(std::move(lw));
  }
  w.bytes = loader.bytes();
  return w;
}

}  // namespace diffuse
