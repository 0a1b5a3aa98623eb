#include "engine/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>

#include "cpu/thread_pool.h"
#include "engine/errors.h"
#include "engine/memory.h"
#include "engine/random.h"
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

// The same on stored rows of row_bytes each.
std::vector<uint8_t> unpermute_rows(const uint8_t* w, int64_t rows, int64_t row_bytes, int64_t heads) {
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  const int64_t head_dim = rows / heads, half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)
        std::memcpy(out.data() + (h * head_dim + j * half + i) * row_bytes, w + (h * head_dim + 2 * i + j) * row_bytes, row_bytes);
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
    const StorageType type = storage_type_from_name(s.storage);
    const bool whole_rows = shape.size() == 2 && shape[1] % storage_block_values(type) == 0;
    const bool keep = keeps(s) && offset == 0.f;
    BufferPtr buf;
    if (s.kind == TensorSource::Kind::Init)
      require(offset == 0.f, where + ": a norm weight offset cannot apply to an initialiser; give the norm's own values");
    if (s.kind == TensorSource::Kind::Init && type == StorageType::F32) {
      buf = backend_.make_weight_init(s.init, n, static_cast<float>(s.std), s.seed, name.c_str());
    } else if (s.kind == TensorSource::Kind::Init) {
      if (s.init != "normal" || !whole_rows)
        throw Error(ErrorCode::INVALID_ARGUMENT,
                    where + ": only normal-initialised matrices whose rows are whole " + s.storage + " blocks can be stored as " + s.storage +
                        (s.init == "normal" ? " (its rows hold " + std::to_string(shape.back()) + " values, not a multiple of " +
                                                  std::to_string(storage_block_values(type)) + "); pick a type with smaller blocks (q8_0, q5_0, q4_0: 32 values)"
                                            : ""));
      const std::vector<uint8_t> raw = init_stored(s, type, n);
      buf = keep ? backend_.make_weight_stored(type, raw.data(), n, name.c_str()) : widened(type, raw.data(), n, name);
    } else if (s.kind == TensorSource::Kind::File && keep) {
      const uint8_t* raw = file_region(s, type, n, where);
      if (s.unpermute_heads > 0) {
        require(shape[0] % (2 * s.unpermute_heads) == 0, where + ": cannot undo the Q/K permutation for this shape");
        const std::vector<uint8_t> rows = unpermute_rows(raw, shape[0], storage_bytes(type, shape[1]), s.unpermute_heads);
        buf = backend_.make_weight_stored(type, rows.data(), n, name.c_str());
      } else {
        buf = backend_.make_weight_stored(type, raw, n, name.c_str());
      }
    }
    if (buf) {
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
    buf = backend_.make_weight(values.data(), n, name.c_str());
    bytes_ += buf->bytes();
    return buf;
  }

  size_t bytes() const { return bytes_; }

  // Whether the tensor stays in its stored type.
  bool keeps(const TensorSource& s) const {
    const StorageType type = storage_type_from_name(s.storage);
    const bool whole_rows = s.shape.size() == 2 && s.shape[1] % storage_block_values(type) == 0;
    return type != StorageType::F32 && whole_rows && !s.widen && backend_.keeps_stored(type);
  }

  // Before anything is loaded (CPU backends, whose weights live in this process): the bytes
  // every source will hold plus the largest transient copy one of them needs while loading,
  // against available_memory(). The error names the total and what compact types would need.
  void check_fits() const {
    if (backend_.name() != "cpu") return;
    uint64_t total = 0, transient = 0, matrix_values = 0, vector_bytes = 0;
    for (const auto& [name, src] : by_name_) {
      const TensorSource& s = *src;
      const StorageType type = storage_type_from_name(s.storage);
      const uint64_t n = static_cast<uint64_t>(element_count(s.shape)), f32 = n * backend_.weight_elem_size();
      const bool keep = keeps(s), init = s.kind == TensorSource::Kind::Init;
      const uint64_t stored = n % storage_block_values(type) == 0 ? static_cast<uint64_t>(storage_bytes(type, static_cast<int64_t>(n))) : f32;
      total += keep ? stored : f32;
      uint64_t extra = 0;
      if (init && type != StorageType::F32) extra = stored + (keep ? 0 : n * sizeof(float));
      else if (!init && keep) extra = s.unpermute_heads > 0 ? stored : 0;
      else if (!init) extra = n * sizeof(float) * (s.unpermute_heads > 0 ? 2 : 1);
      transient = std::max(transient, extra);
      if (s.shape.size() == 2) matrix_values += n;
      else vector_bytes += f32;
    }
    auto as = [&](double bytes_per_value) { return gib(static_cast<uint64_t>(matrix_values * bytes_per_value) + vector_bytes); };
    check_memory(total + transient, "loading the model's weights (" + gib(total) + " kept, " + gib(transient) + " while loading)",
                 "try weights in a compact type, which the CPU keeps as they are (bf16: " + as(2) + ", q8_0: " + as(34.0 / 32) +
                     ", q4_0: " + as(18.0 / 32) + ", q4_k: " + as(144.0 / 256) + "; a GGUF file of that type, or dtype for random weights), not weights: 'f32', or a smaller model");
  }

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
        dequantize(type, file_region(s, type, n, where), values.data(), n);
        break;
      }
    }
    return values;
  }

  // The bytes of a file tensor, checked against the file's size.
  const uint8_t* file_region(const TensorSource& s, StorageType type, int64_t n, const std::string& where) {
    if (n % storage_block_values(type) != 0)
      throw Error(ErrorCode::FORMAT, where + ": " + std::to_string(n) + " elements do not fill whole " + s.storage + " blocks");
    const MappedFile& file = map(s.file);
    const uint64_t need = static_cast<uint64_t>(storage_bytes(type, n));
    if (s.offset > file.size() || need > file.size() - s.offset)
      throw Error(ErrorCode::FORMAT, where + " (" + s.storage + ", " + std::to_string(need) + " bytes at offset " + std::to_string(s.offset) +
                                         ") runs past the end of the file (" + std::to_string(file.size()) + " bytes); the file is truncated or corrupt");
    refuse_non_finite(first_non_finite(type, file.data() + s.offset, n), s.shape, where,
                      "the file is damaged or was written from a diverged model; re-download or re-convert it");
    return file.data() + s.offset;
  }

  // A normal initialiser's values (the CPU's make_weight_init: std * normal_from_counter(seed,
  // i) in f32) stored as `type`, block by block over the thread pool.
  static std::vector<uint8_t> init_stored(const TensorSource& s, StorageType type, int64_t n) {
    std::vector<uint8_t> raw(static_cast<size_t>(storage_bytes(type, n)));
    const int64_t bv = storage_block_values(type), chunk = 4096 / bv * bv;
    const float stdf = static_cast<float>(s.std);
    parallel_for((n + chunk - 1) / chunk, 16, [&](int64_t c0, int64_t c1) {
      std::vector<float> v(static_cast<size_t>(chunk));
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t i0 = c * chunk, m = std::min(chunk, n - i0);
        for (int64_t i = 0; i < m; ++i) v[i] = stdf * normal_from_counter(s.seed, static_cast<uint64_t>(i0 + i));
        quantize_row(type, v.data(), raw.data() + storage_bytes(type, i0), m);
      }
    });
    return raw;
  }

  // Stored values widened on the host, for a backend that does not keep `type`.
  BufferPtr widened(StorageType type, const uint8_t* raw, int64_t n, const std::string& name) {
    std::vector<float> values(static_cast<size_t>(n));
    dequantize(type, raw, values.data(), n);
    return backend_.make_weight(values.data(), n, name.c_str());
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
  loader.check_fits();
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
