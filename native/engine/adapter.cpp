#include "engine/adapter.h"

#include <cmath>

#include "engine/errors.h"
#include "engine/random.h"

namespace diffuse {

Adapter::Adapter(Backend& backend, const ModelConfig& c, const AdapterOptions& o)
    : backend_(backend), rank_(o.rank), alpha_(o.alpha) {
  require(o.rank > 0 && o.rank <= 4096, "adapter rank must be between 1 and 4096");
  require(std::isfinite(o.alpha) && o.alpha > 0, "adapter alpha must be a positive number");
  std::vector<int> modules = o.modules;
  if (modules.empty()) {
    if (c.fused_projections) modules = {QKV_PROJ, O_PROJ, GATE_UP_PROJ, DOWN_PROJ};
    else
      for (int m = 0; m < kModules; ++m) modules.push_back(m);
  }
  const int64_t in_of[kAdapterModules] = {c.hidden, c.hidden, c.hidden, c.q_dim(), c.hidden, c.hidden, c.intermediate, c.hidden, c.hidden};
  const int64_t out_of[kAdapterModules] = {c.q_dim(),      c.kv_dim(),       c.kv_dim(), c.hidden,
                                           c.intermediate, c.intermediate,   c.hidden,   c.q_dim() + 2 * c.kv_dim(),
                                           2 * c.intermediate};
  // A fused module's LoRA serves its parts: they share A and each has its rows of B (and dB),
  // so their three (two) linear backwards add up to the fused layer's dA.
  struct Piece {
    int module;
    int64_t row;
  };
  auto parts = [&](int m) -> std::vector<Piece> {
    if (m == QKV_PROJ) return {{Q_PROJ, 0}, {K_PROJ, c.q_dim()}, {V_PROJ, c.q_dim() + c.kv_dim()}};
    if (m == GATE_UP_PROJ) return {{GATE_PROJ, 0}, {UP_PROJ, c.intermediate}};
    return {{m, 0}};
  };
  index_.assign(c.layers, std::vector<int>(kModules, -1));
  row_.assign(c.layers, std::vector<int64_t>(kModules, 0));
  for (int64_t l = 0; l < c.layers; ++l) {
    for (int m : modules) {
      require(m >= 0 && m < kAdapterModules, "adapter: unknown module index");
      const bool fused_part = m == Q_PROJ || m == K_PROJ || m == V_PROJ || m == GATE_PROJ || m == UP_PROJ;
      if (c.fused_projections && fused_part)
        throw Error(ErrorCode::INVALID_ARGUMENT, std::string("adapter: this model fuses q/k/v and gate/up (Phi-3); adapt qkv_proj or gate_up_proj instead of ") + module_name(m));
      if (!c.fused_projections && m >= kModules)
        throw Error(ErrorCode::INVALID_ARGUMENT, std::string("adapter: ") + module_name(m) + " exists only in checkpoints that fuse their projections (Phi-3)");
      if (index_[l][parts(m)[0].module] >= 0) continue;
      Slot s;
      s.layer = static_cast<int>(l);
      s.module = m;
      s.in = in_of[m];
      s.out = out_of[m];
      const std::string what = "LoRA layer " + std::to_string(l) + " " + module_name(m);
      const size_t a_bytes = s.in * rank_ * sizeof(float), b_bytes = s.out * rank_ * sizeof(float);
      s.A = backend.alloc(a_bytes, what.c_str());
      s.B = backend.alloc(b_bytes, what.c_str());
      s.dA = backend.alloc(a_bytes, what.c_str());
      s.dB = backend.alloc(b_bytes, what.c_str());
      s.mA = backend.alloc(a_bytes, what.c_str());
      s.vA = backend.alloc(a_bytes, what.c_str());
      s.mB = backend.alloc(b_bytes, what.c_str());
      s.vB = backend.alloc(b_bytes, what.c_str());
      // Element i of layer l's module m draws from stream (l, m), so an init does not depend
      // on which other modules are adapted, nor on the backend.
      std::vector<float> a(s.in * rank_);
      const double bound = 1.0 / std::sqrt(static_cast<double>(s.in));
      const uint64_t stream = static_cast<uint64_t>(l) * kModules + static_cast<uint64_t>(m);
      for (size_t i = 0; i < a.size(); ++i)
        a[i] = static_cast<float>(bound * (2.0 * uniform_from_counter(o.seed, stream, i) - 1.0));
      backend.upload(s.A->data(), a.data(), a_bytes);
      for (BufferPtr* zeroed : {&s.B, &s.dA, &s.dB, &s.mA, &s.vA, &s.mB, &s.vB})
        backend.zero((*zeroed)->data(), (*zeroed)->bytes());
      repack(s);
      grad_ptrs_.push_back(s.dA->as<float>());
      grad_sizes_.push_back(s.in * rank_);
      grad_ptrs_.push_back(s.dB->as<float>());
      grad_sizes_.push_back(s.out * rank_);
      for (const Piece& piece : parts(m)) {
        index_[l][piece.module] = static_cast<int>(slots_.size());
        row_[l][piece.module] = piece.row;
      }
      slots_.push_back(std::move(s));
    }
  }
}

LoraParams Adapter::params(int layer, int module) const {
  const int i = index_[layer][module];
  if (i < 0) return {};
  const Slot& s = slots_[i];
  // A part of a fused module reads its rows of B; the packed copy covers whole modules only.
  const bool part = s.module >= kModules;
  return {s.A->as<float>(), s.B->as<float>() + row_[layer][module] * rank_, rank_, scale(),
          s.packed && !part ? s.packed->data() : nullptr};
}

LoraGrads Adapter::grads(int layer, int module) const {
  const int i = index_[layer][module];
  if (i < 0) return {};
  return {slots_[i].dA->as<float>(), slots_[i].dB->as<float>() + row_[layer][module] * rank_};
}

const Adapter::Slot& Adapter::slot_for(const std::string& name, bool& is_b) const {
  // layers.{i}.{module}.lora_A | lora_B
  const std::string bad = "adapter: no tensor named '" + name + "' (expected layers.<i>.<module>.lora_A or .lora_B)";
  if (name.rfind("layers.", 0) != 0) throw Error(ErrorCode::INVALID_ARGUMENT, bad);
  const size_t dot1 = name.find('.', 7), dot2 = dot1 == std::string::npos ? dot1 : name.find('.', dot1 + 1);
  if (dot2 == std::string::npos) throw Error(ErrorCode::INVALID_ARGUMENT, bad);
  const std::string layer_text = name.substr(7, dot1 - 7), module = name.substr(dot1 + 1, dot2 - dot1 - 1), part = name.substr(dot2 + 1);
  if (layer_text.empty() || layer_text.find_first_not_of("0123456789") != std::string::npos || (part != "lora_A" && part != "lora_B"))
    throw Error(ErrorCode::INVALID_ARGUMENT, bad);
  const long layer = std::stol(layer_text);
  const int m = module_from_name(module);
  // A fused module's slot is found through its first part, and answers to its own name only.
  const int first = m == QKV_PROJ ? Q_PROJ : m == GATE_UP_PROJ ? GATE_PROJ : m;
  if (m < 0 || layer >= static_cast<long>(index_.size()) || index_[layer][first] < 0 || slots_[index_[layer][first]].module != m)
    throw Error(ErrorCode::INVALID_ARGUMENT, bad);
  is_b = part == "lora_B";
  return slots_[index_[layer][first]];
}

float* Adapter::part_pointer(const Slot& s, bool is_b, Part part) const {
  switch (part) {
    case Part::Param: return (is_b ? s.B : s.A)->as<float>();
    case Part::Grad: return (is_b ? s.dB : s.dA)->as<float>();
    case Part::Moment1: return (is_b ? s.mB : s.mA)->as<float>();
    case Part::Moment2: return (is_b ? s.vB : s.vA)->as<float>();
  }
  return nullptr;
}

std::vector<float> Adapter::get(const std::string& name, Part part) const {
  bool is_b = false;
  const Slot& s = slot_for(name, is_b);
  std::vector<float> out((is_b ? s.out : s.in) * rank_);
  backend_.download(out.data(), part_pointer(s, is_b, part), out.size() * sizeof(float));
  return out;
}

void Adapter::set(const std::string& name, Part part, const std::vector<float>& values) {
  bool is_b = false;
  const Slot& s = slot_for(name, is_b);
  const size_t n = (is_b ? s.out : s.in) * rank_;
  require(values.size() == n, "adapter: tensor '" + name + "' needs " + std::to_string(n) + " values, got " + std::to_string(values.size()));
  for (float x : values) require(std::isfinite(x), "adapter: tensor '" + name + "' contains a non-finite value");
  backend_.upload(part_pointer(s, is_b, part), values.data(), n * sizeof(float));
  if (part == Part::Param) repack(slots_[static_cast<size_t>(&s - slots_.data())]);
}

void Adapter::repack(Slot& s) {
  backend_.pack_lora(s.A->as<float>(), s.B->as<float>(), s.in, s.out, rank_, s.packed);
}

std::vector<std::string> Adapter::tensor_names() const {
  std::vector<std::string> names;
  for (const Slot& s : slots_) {
    const std::string base = "layers." + std::to_string(s.layer) + "." + module_name(s.module);
    names.push_back(base + ".lora_A");
    names.push_back(base + ".lora_B");
  }
  return names;
}

void Adapter::zero_grads() {
  for (Slot& s : slots_) {
    backend_.zero(s.dA->data(), s.dA->bytes());
    backend_.zero(s.dB->data(), s.dB->bytes());
  }
}

double Adapter::grad_sum_squares() const {
  return backend_.sum_squares_many(grad_ptrs_.data(), grad_sizes_.data(), static_cast<int>(grad_ptrs_.size()));
}

void Adapter::adamw_step(const AdamWParams& p) {
  for (Slot& s : slots_) {
    backend_.adamw_update(s.A->as<float>(), s.dA->as<float>(), s.mA->as<float>(), s.vA->as<float>(), s.in * rank_, p);
    backend_.adamw_update(s.B->as<float>(), s.dB->as<float>(), s.mB->as<float>(), s.vB->as<float>(), s.out * rank_, p);
    repack(s);
  }
}

size_t Adapter::parameter_count() const {
  size_t n = 0;
  for (const Slot& s : slots_) n += (s.in + s.out) * rank_;
  return n;
}

}  // namespace diffuse
