// The Llama-family decoder as one graph over a Backend: forward for exact log-probabilities,
// the training step (forward + backward to LoRA parameters), and a KV-cached session for
// sampling. Which backend runs it is not its business.
//
// Every call takes a forest of token rows. Row r has a token and a parent row (or -1): a
// prompt is a chain, a target trie hangs off the prompt's last row, a padded batch is several
// chains. Row r sits at RoPE position depth(r) and attends to its ancestors and itself — the
// tree mask, which is causal attention along every root-to-leaf path.
//
// Edges are the (parent row, child token, weight) triples whose log-probabilities are wanted:
// log p(token | path to parent row). Trie leaves need no row of their own, only an edge.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/adapter.h"
#include "engine/backend.h"
#include "engine/config.h"
#include "engine/weights.h"

namespace diffuse {

struct Batch {
  std::vector<int32_t> tokens;        // [rows]
  std::vector<int32_t> parents;       // [rows], parent row < row, or -1 for a root
  std::vector<int32_t> edge_rows;     // [edges], the parent row of each edge
  std::vector<int32_t> edge_tokens;   // [edges]
  std::vector<float> edge_weights;    // [edges], the loss weights (step only)
};

struct ForwardResult {
  std::vector<float> edge_logp;       // log p(edge token | parent row)
};

// The activation budget for a step when memory `available` is free: half of what is left after
// a 2 GiB reserve (the step's other buffers -- gradients, one recomputed layer, the log-prob
// chunk -- the allocator's rounding and other users of the device), and at least 512 MiB. A
// fixed budget either recomputes most layers of a large model on a large GPU or runs a small
// one out of memory.
size_t default_activation_budget(size_t available);

struct StepResult {
  std::vector<float> edge_logp;
  std::vector<float> edge_loss;       // the objective's per-edge loss, before the weight
  double loss = 0;                    // sum_e weight_e * edge_loss_e
  int64_t recomputed_layers = 0;      // layers whose activations were recomputed in backward
  uint64_t planned_bytes = 0;         // CPU: what the plan expected the step to allocate (its peak)
};

// Rows [begin, end) of a batch rotated with LongRoPE's long (or short) factors.
struct RopeRun {
  int64_t begin, end;
  bool long_factors;
};

class Model {
 public:
  Model(std::unique_ptr<Backend> backend, const ModelConfig& config,
        const std::vector<TensorSource>& sources);

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return *backend_; }
  size_t weight_bytes() const { return weights_.bytes; }

  // Activations kept for the backward are limited to this many bytes; past it, layers keep
  // only their input and are recomputed during the backward. Unless set, each step takes
  // default_activation_budget(the backend's available memory) at its start.
  void set_activation_budget(size_t bytes) { activation_budget_ = bytes, budget_set_ = true; }
  void use_default_activation_budget() { budget_set_ = false; }
  size_t activation_budget();

  ForwardResult forward(const Batch& batch, const Adapter* adapter);
  // Accumulates the gradients of sum_e weight_e * loss_e into the adapter.
  StepResult step(const Batch& batch, Adapter& adapter, const Objective& objective);

  LinearWeight head() const;
  LinearWeight embedding() const;
  LinearWeight linear(int layer, int module) const;

  // One model runs one call at a time; the addon holds this while a call runs.
  std::mutex& mutex() { return mutex_; }

 private:
  friend class Session;
  struct Plan;
  struct LayerActs;
  struct Scratch;

  size_t step_activation_room(const Plan& p, size_t per_layer, int rank, uint64_t& planned);
  PassShape pass_shape(const Plan& p, int rank, bool backward) const;
  uint64_t head_bytes(const Plan& p) const;

  Plan plan(const Batch& batch, bool with_weights) const;
  void layer_forward(int layer, const Plan& plan, const Adapter* adapter, void* x,
                     LayerActs& acts, Scratch& scratch);
  // The family switches, in one place each.
  // RoPE (or its backward) on rows of `heads` heads of q or k in a layer: the layer's
  // frequencies (local or global), rotary dims and scale; each run of rows with LongRoPE's
  // long or short set as the run says.
  void rope(int layer, const std::vector<RopeRun>& runs, void* x, const int32_t* pos, int64_t heads, bool backward);
  AttentionShape attention_shape(int64_t q_rows, int64_t kv_rows) const;
  void gate_forward(const void* gate, const void* up, void* h, int64_t n);  // SwiGLU or GeGLU
  void gate_backward(const void* dh, const void* gate, const void* up, void* dgate, void* dup, int64_t n);
  void embed(const int32_t* tokens, void* x, int64_t rows);                 // lookup, then scale

  std::unique_ptr<Backend> backend_;
  ModelConfig config_;
  Weights weights_;
  BufferPtr inv_freq_;
  BufferPtr inv_freq_local_;  // windowed layers' RoPE frequencies, when they have their own base
  BufferPtr inv_freq_long_;   // LongRoPE's long-factor frequencies, when it is set
  size_t activation_budget_ = 0;
  bool budget_set_ = false;
  std::mutex mutex_;
};

// A KV cache for sampling: rows are appended (each with a parent row of the session, or -1),
// their keys and values stay cached, and next tokens are drawn from any row's final hidden
// state. Attention of an appended row reads its cached ancestors.
class Session {
 public:
  Session(Model& model, const Adapter* adapter, int64_t capacity);

  int64_t rows() const { return rows_; }
  // Appends rows and returns the index of the first one.
  int64_t append(const std::vector<int32_t>& tokens, const std::vector<int32_t>& parents);
  void sample(const std::vector<int32_t>& rows, const std::vector<uint64_t>& streams,
              const SampleParams& params, uint64_t step, std::vector<int32_t>& tokens,
              std::vector<float>& logp);
  void reset();
  // Drops every row from `rows` on, keeping the cached rows before it (a shared prompt, say).
  void truncate(int64_t rows);

 private:
  void reserve(int64_t rows);
  uint64_t growth_bytes(int64_t rows) const;

  Model& model_;
  const Adapter* adapter_;
  int64_t rows_ = 0;
  int64_t capacity_ = 0;
  std::vector<int32_t> parents_;  // host copy, for walking ancestors
  std::vector<int32_t> depth_;
  std::vector<int32_t> tokens_;   // host copy, to recompute the cache when LongRoPE switches
  std::vector<int32_t> roots_;    // each row's tree (its root row)
  std::vector<uint8_t> row_long_; // 1: the row's cached key was rotated with LongRoPE's long factors
  std::vector<BufferPtr> k_cache_, v_cache_;  // per layer [capacity x kv_dim]
  BufferPtr hidden_;                          // final-normed hidden [capacity x hidden]
};

}  // namespace diffuse
