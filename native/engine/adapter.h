// A LoRA adapter over a model's linear layers: the A and B matrices (f32, backend memory),
// their gradients, and AdamW's moments.
//
// Initialised as Hugging Face PEFT does (from a counter-based generator, engine/random.h):
// A ~ Kaiming-uniform with a = sqrt(5), that is
// U(-1/sqrt(in), 1/sqrt(in)); B = 0, so a fresh adapter leaves the model unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/config.h"

namespace diffuse {

struct AdapterOptions {
  int rank = 4;
  float alpha = 8.f;
  std::vector<int> modules;  // Module values; empty means all seven
  uint64_t seed = 0;
};

class Adapter {
 public:
  struct Slot {
    int layer = 0;
    int module = 0;
    int64_t in = 0, out = 0;
    BufferPtr A, B, dA, dB, mA, vA, mB, vB;
    BufferPtr packed;  // Backend::pack_lora of A and B, remade whenever they change
  };

  Adapter(Backend& backend, const ModelConfig& config, const AdapterOptions& options);

  int rank() const { return rank_; }
  float alpha() const { return alpha_; }
  float scale() const { return alpha_ / static_cast<float>(rank_); }
  const std::vector<Slot>& slots() const { return slots_; }

  LoraParams params(int layer, int module) const;
  LoraGrads grads(int layer, int module) const;

  // Tensor access by PEFT-style short name "layers.{i}.{module}.lora_A" / ".lora_B", and the
  // matching gradient and optimiser moments. Throws INVALID_ARGUMENT for an unknown name.
  enum class Part { Param, Grad, Moment1, Moment2 };
  std::vector<float> get(const std::string& name, Part part) const;
  void set(const std::string& name, Part part, const std::vector<float>& values);
  std::vector<std::string> tensor_names() const;

  void zero_grads();
  double grad_sum_squares() const;
  void adamw_step(const AdamWParams& params);
  size_t parameter_count() const;

 private:
  const Slot& slot_for(const std::string& name, bool& is_b) const;
  void repack(Slot& slot);
  float* part_pointer(const Slot& slot, bool is_b, Part part) const;

  Backend& backend_;
  int rank_;
  float alpha_;
  std::vector<Slot> slots_;
  std::vector<std::vector<int>> index_;      // [layer][module] -> slot or -1 (a fused slot for its parts)
  std::vector<std::vector<int64_t>> row_;    // [layer][module] -> first row of B, within a fused slot
  // Every slot's gradients, for the one-pass norm.
  std::vector<const float*> grad_ptrs_;
  std::vector<int64_t> grad_sizes_;
};

}  // namespace diffuse
