#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include "engine/errors.h"
#include "engine/memory.h"

namespace diffuse {

// ------------------------------------------------------------------------------------ plan
// Host-side preparation of a batch: positions, key lists, edge grouping, uploaded once.
struct Model::Plan {
  int64_t rows = 0;
  BufferPtr tokens, positions, key_offsets, key_rows;
  BufferPtr window_offsets, window_rows;  // the key lists cut to the sliding window, when one is set
  std::vector<RopeRun> rope_runs;  // rows by LongRoPE factor set (one run of all rows without LongRoPE)
  EdgeSet edges;  // device pointers below
  BufferPtr parent_rows, edge_parent, edge_token, edge_weight;
  int64_t n_edges = 0;
  int64_t max_keys = 0;  // the longest key list of a row
  std::vector<float> edge_weights_host;
};

namespace {

// Validates the forest and returns each row's depth.
std::vector<int32_t> row_depths(const Batch& b, int64_t vocab) {
  const size_t T = b.tokens.size();
  require(b.parents.size() == T, "batch: tokens and parents differ in length");
  std::vector<int32_t> depth(T);
  for (size_t r = 0; r < T; ++r) {
    require(b.tokens[r] >= 0 && b.tokens[r] < vocab,
            "batch: token " + std::to_string(b.tokens[r]) + " at row " + std::to_string(r) + " is outside the vocabulary");
    const int32_t p = b.parents[r];
    require(p >= -1 && p < static_cast<int32_t>(r),
            "batch: row " + std::to_string(r) + " has parent " + std::to_string(p) + " (must be -1 or an earlier row)");
    depth[r] = p < 0 ? 0 : depth[p] + 1;
  }
  return depth;
}

// CSR key lists: row r attends to its ancestors (root first) and itself. With a window w > 0,
// only to those at most w - 1 positions back (positions are depths): the last min(w, depth + 1)
// of them, as transformers' sliding-window mask keeps key j for query i when i - w < j <= i.
void key_lists(const std::vector<int32_t>& parents, const std::vector<int32_t>& depth, size_t first,
               int64_t window, std::vector<int32_t>& offsets, std::vector<int32_t>& keys) {
  offsets.assign(1, 0);
  keys.clear();
  for (size_t r = first; r < parents.size(); ++r) {
    const int32_t n = window > 0 ? static_cast<int32_t>(std::min<int64_t>(window, depth[r] + 1)) : depth[r] + 1;
    const size_t start = keys.size();
    keys.resize(start + n);
    int32_t node = static_cast<int32_t>(r);
    for (int32_t i = n - 1; i >= 0; --i, node = parents[node]) keys[start + i] = node;
    offsets.push_back(static_cast<int32_t>(keys.size()));
  }
}

// LongRoPE's factor set per row, as transformers picks it for a forward of each sequence:
// long when the sequence's largest position + 1 (its last token's, which has an edge but no
// row) exceeds the original context. A tree of the forest (one root and its descendants) is
// one choice: its deepest position, edges included. Trie batches that straddle the original
// context put their short and long sequences in separate trees (buildTrieBatch's ropeSplit),
// so each sequence gets its own. Returns maximal runs of rows with the same choice.
std::vector<RopeRun> rope_runs_of(const ModelConfig& c, const Batch& b, const std::vector<int32_t>& depth) {
  const int64_t T = static_cast<int64_t>(depth.size());
  if (!c.longrope()) return {{0, T, false}};
  std::vector<int32_t> root(T), deepest(T, 0);
  for (int64_t r = 0; r < T; ++r) {
    root[r] = b.parents[r] < 0 ? static_cast<int32_t>(r) : root[b.parents[r]];
    deepest[root[r]] = std::max(deepest[root[r]], depth[r]);
  }
  for (size_t e = 0; e < b.edge_rows.size(); ++e) {
    const int32_t r = b.edge_rows[e];
    deepest[root[r]] = std::max(deepest[root[r]], depth[r] + 1);
  }
  std::vector<RopeRun> runs;
  for (int64_t r = 0; r < T; ++r) {
    const bool long_factors = c.rope_long(deepest[root[r]]);
    if (runs.empty() || runs.back().long_factors != long_factors) runs.push_back({r, r + 1, long_factors});
    else runs.back().end = r + 1;
  }
  return runs;
}

// The bytes key_lists() makes for rows [first, end) and their uploaded copy: with a window,
// the windowed lists too. Every row lists all its ancestors, so a long chain costs its
// length squared over 2; checked before the lists are made.
uint64_t key_list_bytes(const std::vector<int32_t>& depth, size_t first, int64_t window) {
  uint64_t keys = 0, windowed = 0;
  for (size_t r = first; r < depth.size(); ++r) {
    keys += static_cast<uint64_t>(depth[r]) + 1;
    if (window > 0) windowed += static_cast<uint64_t>(std::min<int64_t>(window, depth[r] + 1));
  }
  const uint64_t offsets = depth.size() - first + 1;
  return 2 * sizeof(int32_t) * (keys + offsets + (window > 0 ? windowed + offsets : 0));
}

void check_key_lists(const Backend& be, const std::vector<int32_t>& depth, size_t first, int64_t window) {
  if (be.name() != "cpu") return;
  const uint64_t need = key_list_bytes(depth, first, window);
  check_memory(need, "the attention key lists of " + std::to_string(depth.size() - first) + " rows (each lists its ancestors: " + gib(need) + ")",
               "try shorter prompts or fewer rows per call (long chains cost their length squared)");
}

template <typename T>
BufferPtr upload_vector(Backend& be, const std::vector<T>& v, const char* what) {
  BufferPtr buf = be.alloc(std::max<size_t>(1, v.size()) * sizeof(T), what);
  if (!v.empty()) be.upload(buf->data(), v.data(), v.size() * sizeof(T));
  return buf;
}

}  // namespace

Model::Plan Model::plan(const Batch& b, bool with_weights) const {
  Backend& be = *backend_;
  Plan p;
  p.rows = static_cast<int64_t>(b.tokens.size());
  require(p.rows > 0, "batch: no rows");
  const std::vector<int32_t> depth = row_depths(b, config_.vocab);
  check_key_lists(be, depth, 0, config_.sliding_window);
  std::vector<int32_t> offsets, keys;
  key_lists(b.parents, depth, 0, 0, offsets, keys);
  require(keys.size() < (size_t{1} << 31), "batch: attention key lists exceed 2^31 entries; split the batch");
  if (config_.sliding_window > 0) {
    std::vector<int32_t> w_offsets, w_keys;
    key_lists(b.parents, depth, 0, config_.sliding_window, w_offsets, w_keys);
    p.window_offsets = upload_vector(be, w_offsets, "windowed attention key offsets");
    p.window_rows = upload_vector(be, w_keys, "windowed attention key lists");
  }

  const size_t E = b.edge_rows.size();
  require(b.edge_tokens.size() == E, "batch: edge rows and edge tokens differ in length");
  require(!with_weights || b.edge_weights.size() == E, "batch: edge weights and edges differ in length");
  std::vector<int32_t> parent_rows, edge_parent(E);
  std::unordered_map<int32_t, int32_t> parent_index;
  for (size_t e = 0; e < E; ++e) {
    const int32_t row = b.edge_rows[e];
    require(row >= 0 && row < p.rows, "batch: edge " + std::to_string(e) + " names row " + std::to_string(row) + ", which does not exist");
    require(b.edge_tokens[e] >= 0 && b.edge_tokens[e] < config_.vocab, "batch: edge " + std::to_string(e) + " has a token outside the vocabulary");
    if (with_weights) require(std::isfinite(b.edge_weights[e]), "batch: edge " + std::to_string(e) + " has a non-finite weight");
    auto [it, added] = parent_index.emplace(row, static_cast<int32_t>(parent_rows.size()));
    if (added) parent_rows.push_back(row);
    edge_parent[e] = it->second;
  }

  p.tokens = upload_vector(be, b.tokens, "batch tokens");
  p.positions = upload_vector(be, depth, "batch positions");
  p.rope_runs = rope_runs_of(config_, b, depth);
  for (size_t r = 0; r + 1 < offsets.size(); ++r) p.max_keys = std::max<int64_t>(p.max_keys, offsets[r + 1] - offsets[r]);
  p.key_offsets = upload_vector(be, offsets, "attention key offsets");
  p.key_rows = upload_vector(be, keys, "attention key lists");
  p.parent_rows = upload_vector(be, parent_rows, "edge parents");
  p.edge_parent = upload_vector(be, edge_parent, "edge parents");
  p.edge_token = upload_vector(be, b.edge_tokens, "edge tokens");
  if (with_weights) {
    p.edge_weight = upload_vector(be, b.edge_weights, "edge weights");
    p.edge_weights_host = b.edge_weights;
  }
  p.n_edges = static_cast<int64_t>(E);
  p.edges.parent_rows = p.parent_rows->as<int32_t>();
  p.edges.n_parents = static_cast<int32_t>(parent_rows.size());
  p.edges.edge_parent = p.edge_parent->as<int32_t>();
  p.edges.edge_token = p.edge_token->as<int32_t>();
  p.edges.edge_weight = with_weights ? p.edge_weight->as<float>() : nullptr;
  p.edges.n_edges = static_cast<int32_t>(E);
  p.edges.logit_softcap = static_cast<float>(config_.final_softcap);
  return p;
}

// ------------------------------------------------------------------------------ activations
// What a layer's forward produces that its backward reads. u_[m] is x A^T of module m.
struct Model::LayerActs {
  BufferPtr x_in, xn1, rstd1, q, k, v, attn, lse, x_mid, xn2, rstd2, gate, up, h;
  BufferPtr q_in, k_in, rstd_q, rstd_k;     // q/k before their norms (qk_norm)
  BufferPtr attn_o, rstd_ao, mlp_o, rstd_mo;  // block outputs before their norms (sandwich_norms)
  BufferPtr u[kModules];

  static size_t bytes_per_row(const ModelConfig& c, size_t act, int rank) {
    const size_t qk = c.qk_norm ? act * (c.q_dim() + c.kv_dim()) + sizeof(float) * (c.heads + c.kv_heads) : 0;
    const size_t post = c.sandwich_norms ? act * 2 * c.hidden + sizeof(float) * 2 : 0;
    return act * (4 * c.hidden + 2 * c.q_dim() + 2 * c.kv_dim() + 3 * c.intermediate) +
           sizeof(float) * (2 + c.heads + static_cast<size_t>(kModules) * rank) + qk + post;
  }

  void allocate(Backend& be, const ModelConfig& c, int64_t T, const Adapter* adapter, bool keep_input) {
    const size_t a = be.act_elem_size();
    auto act = [&](BufferPtr& buf, int64_t cols, const char* what) {
      if (!buf) buf = be.alloc(static_cast<size_t>(T) * cols * a, what);
    };
    auto f32 = [&](BufferPtr& buf, int64_t cols, const char* what) {
      if (!buf) buf = be.alloc(static_cast<size_t>(T) * cols * sizeof(float), what);
    };
    if (keep_input) act(x_in, c.hidden, "layer input");
    act(xn1, c.hidden, "attention norm output");
    f32(rstd1, 1, "attention norm statistics");
    act(q, c.q_dim(), "queries");
    act(k, c.kv_dim(), "keys");
    act(v, c.kv_dim(), "values");
    act(attn, c.q_dim(), "attention output");
    f32(lse, c.heads, "attention log-sum-exp");
    act(x_mid, c.hidden, "residual stream");
    act(xn2, c.hidden, "MLP norm output");
    f32(rstd2, 1, "MLP norm statistics");
    act(gate, c.intermediate, "MLP gate");
    act(up, c.intermediate, "MLP up projection");
    act(h, c.intermediate, "MLP hidden");
    if (c.qk_norm) {
      act(q_in, c.q_dim(), "queries before their norm");
      act(k_in, c.kv_dim(), "keys before their norm");
      f32(rstd_q, c.heads, "query norm statistics");
      f32(rstd_k, c.kv_heads, "key norm statistics");
    }
    if (c.sandwich_norms) {
      act(attn_o, c.hidden, "attention output before its norm");
      act(mlp_o, c.hidden, "MLP output before its norm");
      f32(rstd_ao, 1, "attention output norm statistics");
      f32(rstd_mo, 1, "MLP output norm statistics");
    }
    if (adapter)
      for (int m = 0; m < kModules; ++m) f32(u[m], adapter->rank(), "LoRA projections");
  }
};

struct Model::Scratch {
  BufferPtr o;  // [T x hidden] projection outputs before the residual add
};

LinearWeight Model::head() const {
  const Buffer& w = weights_.lm_head ? *weights_.lm_head : *weights_.embed;
  return {const_cast<Buffer&>(w).data(), nullptr, config_.vocab, config_.hidden, w.storage()};
}

LinearWeight Model::embedding() const {
  return {weights_.embed->data(), nullptr, config_.vocab, config_.hidden, weights_.embed->storage()};
}

LinearWeight Model::linear(int layer, int module) const {
  const LayerWeights& lw = weights_.layers[layer];
  const ModelConfig& c = config_;
  const int64_t in_of[kModules] = {c.hidden, c.hidden, c.hidden, c.q_dim(), c.hidden, c.hidden, c.intermediate};
  const int64_t out_of[kModules] = {c.q_dim(), c.kv_dim(), c.kv_dim(), c.hidden, c.intermediate, c.intermediate, c.hidden};
  const void* bias = module <= V_PROJ && lw.qkv_bias[module] ? lw.qkv_bias[module]->data() : nullptr;
  return {lw.linear[module]->data(), bias, out_of[module], in_of[module], lw.linear[module]->storage()};
}

size_t default_activation_budget(size_t available) {
  constexpr size_t kReserve = size_t{2} << 30, kFloor = size_t{512} << 20;
  return std::max(kFloor, available > kReserve ? (available - kReserve) / 2 : 0);
}

size_t Model::activation_budget() {
  return budget_set_ ? activation_budget_ : default_activation_budget(backend_->available_memory());
}

Model::Model(std::unique_ptr<Backend> backend, const ModelConfig& config,
             const std::vector<TensorSource>& sources)
    : backend_(std::move(backend)), config_(config) {
  config_.validate();
  weights_ = load_weights(*backend_, config_, sources);
  inv_freq_ = upload_vector(*backend_, config_.rope_inv_freq(), "rope frequencies");
  if (config_.has_local_rope()) inv_freq_local_ = upload_vector(*backend_, config_.rope_inv_freq(true), "local rope frequencies");
  if (config_.longrope()) inv_freq_long_ = upload_vector(*backend_, config_.rope_inv_freq(false, true), "long rope frequencies");
}

void Model::rope(int layer, const std::vector<RopeRun>& runs, void* x, const int32_t* pos, int64_t heads, bool backward) {
  const bool local = config_.layer_sliding(layer) && inv_freq_local_;
  const RopeShape shape{static_cast<int>(heads), static_cast<int>(config_.head_dim), static_cast<int>(config_.rotary_dim()),
                        config_.rope_scale(local)};
  for (const RopeRun& run : runs) {
    const float* inv = (local ? inv_freq_local_ : run.long_factors && inv_freq_long_ ? inv_freq_long_ : inv_freq_)->as<float>();
    void* xr = backend_->act_offset(x, run.begin * heads * config_.head_dim);
    if (backward) backend_->rope_backward(xr, pos + run.begin, inv, run.end - run.begin, shape);
    else backend_->rope_forward(xr, pos + run.begin, inv, run.end - run.begin, shape);
  }
}

AttentionShape Model::attention_shape(int64_t q_rows, int64_t kv_rows) const {
  const ModelConfig& c = config_;
  return {q_rows, kv_rows, static_cast<int>(c.heads), static_cast<int>(c.kv_heads), static_cast<int>(c.head_dim),
          static_cast<float>(c.attention_scale()), static_cast<float>(c.attn_softcap)};
}

void Model::gate_forward(const void* gate, const void* up, void* h, int64_t n) {
  if (config_.activation == ModelConfig::Activation::GELU_TANH) backend_->geglu_forward(gate, up, h, n);
  else backend_->swiglu_forward(gate, up, h, n);
}

void Model::gate_backward(const void* dh, const void* gate, const void* up, void* dgate, void* dup, int64_t n) {
  if (config_.activation == ModelConfig::Activation::GELU_TANH) backend_->geglu_backward(dh, gate, up, dgate, dup, n);
  else backend_->swiglu_backward(dh, gate, up, dgate, dup, n);
}

void Model::embed(const int32_t* tokens, void* x, int64_t rows) {
  backend_->embedding_lookup(tokens, embedding(), x, rows);
  if (config_.embed_scale != 1.0) backend_->scale_inplace(x, static_cast<float>(config_.embed_scale), rows * config_.hidden);
}

// x [T x hidden] is the layer input on entry and its output on return. When acts.x_in is
// set, the input is copied there first.
void Model::layer_forward(int l, const Plan& p, const Adapter* adapter, void* x, LayerActs& a,
                          Scratch& s) {
  Backend& be = *backend_;
  const ModelConfig& c = config_;
  const LayerWeights& lw = weights_.layers[l];
  const int64_t T = p.rows;
  auto lora = [&](int m) { return adapter ? adapter->params(l, m) : LoraParams{}; };
  auto u = [&](int m) { return adapter && a.u[m] ? a.u[m]->as<float>() : nullptr; };
  if (a.x_in) be.copy(a.x_in->data(), x, T * c.hidden * be.act_elem_size());

  const float eps = static_cast<float>(c.rms_eps);
  be.rmsnorm_forward(x, lw.attn_norm->data(), a.xn1->data(), a.rstd1->as<float>(), T, c.hidden, eps);
  be.linear_forward(a.xn1->data(), linear(l, Q_PROJ), lora(Q_PROJ), (c.qk_norm ? a.q_in : a.q)->data(), u(Q_PROJ), T);
  be.linear_forward(a.xn1->data(), linear(l, K_PROJ), lora(K_PROJ), (c.qk_norm ? a.k_in : a.k)->data(), u(K_PROJ), T);
  be.linear_forward(a.xn1->data(), linear(l, V_PROJ), lora(V_PROJ), a.v->data(), u(V_PROJ), T);
  if (c.qk_norm) {  // one RMSNorm per head: rows of head_dim
    be.rmsnorm_forward(a.q_in->data(), lw.q_norm->data(), a.q->data(), a.rstd_q->as<float>(), T * c.heads, c.head_dim, eps);
    be.rmsnorm_forward(a.k_in->data(), lw.k_norm->data(), a.k->data(), a.rstd_k->as<float>(), T * c.kv_heads, c.head_dim, eps);
  }
  rope(l, p.rope_runs, a.q->data(), p.positions->as<int32_t>(), c.heads, false);
  rope(l, p.rope_runs, a.k->data(), p.positions->as<int32_t>(), c.kv_heads, false);
  const bool windowed = c.layer_sliding(l);
  be.attention_forward(a.q->data(), a.k->data(), a.v->data(), (windowed ? p.window_offsets : p.key_offsets)->as<int32_t>(),
                       (windowed ? p.window_rows : p.key_rows)->as<int32_t>(), attention_shape(T, T), a.attn->data(), a.lse->as<float>());
  be.linear_forward(a.attn->data(), linear(l, O_PROJ), lora(O_PROJ), (c.sandwich_norms ? a.attn_o : s.o)->data(), u(O_PROJ), T);
  if (c.sandwich_norms) be.rmsnorm_forward(a.attn_o->data(), lw.attn_post_norm->data(), s.o->data(), a.rstd_ao->as<float>(), T, c.hidden, eps);
  be.add_inplace(x, s.o->data(), T * c.hidden);
  be.copy(a.x_mid->data(), x, T * c.hidden * be.act_elem_size());

  be.rmsnorm_forward(x, lw.ffn_norm->data(), a.xn2->data(), a.rstd2->as<float>(), T, c.hidden, eps);
  be.linear_forward(a.xn2->data(), linear(l, GATE_PROJ), lora(GATE_PROJ), a.gate->data(), u(GATE_PROJ), T);
  be.linear_forward(a.xn2->data(), linear(l, UP_PROJ), lora(UP_PROJ), a.up->data(), u(UP_PROJ), T);
  gate_forward(a.gate->data(), a.up->data(), a.h->data(), T * c.intermediate);
  be.linear_forward(a.h->data(), linear(l, DOWN_PROJ), lora(DOWN_PROJ), (c.sandwich_norms ? a.mlp_o : s.o)->data(), u(DOWN_PROJ), T);
  if (c.sandwich_norms) be.rmsnorm_forward(a.mlp_o->data(), lw.ffn_post_norm->data(), s.o->data(), a.rstd_mo->as<float>(), T, c.hidden, eps);
  be.add_inplace(x, s.o->data(), T * c.hidden);
}

// ---------------------------------------------------------------------------------- forward
ForwardResult Model::forward(const Batch& batch, const Adapter* adapter) {
  Backend& be = *backend_;
  const ModelConfig& c = config_;
  const Plan p = plan(batch, false);
  const int64_t T = p.rows;
  const size_t a = be.act_elem_size();
  if (be.name() == "cpu") {
    // One layer's activations (no kept input), the residual stream, projection and final-norm
    // outputs, the head's statistics and the kernels' scratch.
    const uint64_t acts = LayerActs::bytes_per_row(c, a, adapter ? adapter->rank() : 0) * static_cast<uint64_t>(T) - T * c.hidden * a;
    const uint64_t others = T * a * 3 * c.hidden + head_bytes(p);
    const uint64_t kernels = be.kernel_scratch_bytes(pass_shape(p, adapter ? adapter->rank() : 0, false));
    check_memory(acts + others + kernels,
                 "evaluating " + std::to_string(T) + " rows (" + std::to_string(p.edges.n_parents) + " parent positions, " +
                     std::to_string(p.n_edges) + " target tokens; " + gib(acts) + " of layer activations, " + gib(others) + " of outputs, " +
                     gib(kernels) + " of kernel scratch)",
                 "try fewer prompts or targets per call (a smaller batch), fewer threads, or weights in a compact dtype to free memory");
  }
  BufferPtr x = be.alloc(T * c.hidden * a, "residual stream");
  embed(p.tokens->as<int32_t>(), x->data(), T);
  LayerActs acts;
  acts.allocate(be, c, T, adapter, false);
  Scratch s{be.alloc(T * c.hidden * a, "projection output")};
  for (int l = 0; l < c.layers; ++l) layer_forward(l, p, adapter, x->data(), acts, s);

  ForwardResult r;
  r.edge_logp.resize(p.n_edges);
  if (p.n_edges == 0) return r;
  BufferPtr xf = be.alloc(T * c.hidden * a, "final norm output");
  BufferPtr rstd = be.alloc(T * sizeof(float), "final norm statistics");
  be.rmsnorm_forward(x->data(), weights_.final_norm->data(), xf->data(), rstd->as<float>(), T, c.hidden, static_cast<float>(c.rms_eps));
  BufferPtr logp = be.alloc(p.n_edges * sizeof(float), "edge log-probabilities");
  BufferPtr loss = be.alloc(p.n_edges * sizeof(float), "edge losses");
  BufferPtr pstats = be.alloc(std::max<int64_t>(1, p.edges.n_parents) * kLogprobStats * sizeof(float), "log-prob statistics");
  BufferPtr estats = be.alloc(p.n_edges * kEdgeStats * sizeof(float), "log-prob statistics");
  be.logprobs_forward(xf->data(), head(), p.edges, Objective{}, logp->as<float>(), loss->as<float>(), pstats->as<float>(), estats->as<float>());
  be.download(r.edge_logp.data(), logp->data(), p.n_edges * sizeof(float));
  return r;
}

// ------------------------------------------------------------------------------------- step
// What a pass over `p` hands the kernels, for Backend::kernel_scratch_bytes.
PassShape Model::pass_shape(const Plan& p, int rank, bool backward) const {
  const ModelConfig& c = config_;
  PassShape s;
  s.attention = attention_shape(p.rows, p.rows);
  s.max_keys = p.max_keys;
  s.max_in = std::max({c.hidden, c.q_dim(), c.kv_dim(), c.intermediate});
  s.rank = rank;
  s.parents = p.edges.n_parents;
  s.edges = p.n_edges;
  s.vocab = c.vocab;
  s.hidden = c.hidden;
  s.backward = backward;
  return s;
}

// The final norm's statistics and the head's per-edge and per-parent outputs.
uint64_t Model::head_bytes(const Plan& p) const {
  return sizeof(float) * (static_cast<uint64_t>(p.rows) + p.n_edges * (2 + kEdgeStats) +
                          static_cast<uint64_t>(std::max<int64_t>(1, p.edges.n_parents)) * kLogprobStats);
}

// The activation budget a step over `p` can have on the CPU. First come the step's other
// buffers, each sized as step() allocates it: the residual stream, projection output,
// final-norm output and gradient, residual and norm gradients ([T x hidden] each; a block
// output gradient more under sandwich norms), three MLP gradients [T x intermediate], query,
// attention, key and value gradients (their pre-norm copies under qk_norm), the head's
// statistics, and the kernels' own scratch (Backend::kernel_scratch_bytes); then every
// layer's input, then one layer's full activations for recomputing. What memory is left
// after those, up to activation_budget(), keeps layers. Throws OUT_OF_MEMORY when even the
// all-recomputed step does not fit. Sets `planned` to the bytes the step will allocate.
size_t Model::step_activation_room(const Plan& p, size_t per_layer, int rank, uint64_t& planned) {
  const ModelConfig& c = config_;
  const uint64_t a = backend_->act_elem_size(), rows = static_cast<uint64_t>(p.rows);
  const uint64_t widths = (6 + (c.sandwich_norms ? 1 : 0)) * c.hidden + 3 * c.intermediate + 2 * c.q_dim() + 2 * c.kv_dim() +
                          (c.qk_norm ? c.q_dim() + c.kv_dim() : 0);
  const uint64_t kernels = backend_->kernel_scratch_bytes(pass_shape(p, rank, true));
  const uint64_t others = rows * a * widths + head_bytes(p) + kernels;
  const uint64_t inputs = rows * a * c.hidden * static_cast<uint64_t>(c.layers);
  const uint64_t least = others + inputs + per_layer;
  const MemoryAvailable m = available_memory();
  if (least > m.bytes)
    throw Error(ErrorCode::OUT_OF_MEMORY,
                "a training step over " + std::to_string(p.rows) + " rows needs at least " + gib(least) + " (" + gib(per_layer) +
                    " of activations per layer, recomputed; " + gib(inputs) + " of layer inputs; " + gib(others - kernels) +
                    " of gradients and outputs; " + gib(kernels) + " of kernel scratch) but " + gib(m.bytes) + " is available (" +
                    m.source + "); try fewer rows per step (fewer prompts or targets per batch), fewer threads, or weights in a compact dtype");
  const size_t room = static_cast<size_t>(std::min<uint64_t>(activation_budget(), m.bytes - least + per_layer));
  const int64_t kept = std::min<int64_t>(c.layers, static_cast<int64_t>(room / std::max<size_t>(1, per_layer)));
  // Kept layers hold their own input; recomputed ones share one set of activations.
  const uint64_t layer_acts = per_layer - rows * a * c.hidden;
  planned = others + inputs + static_cast<uint64_t>(kept) * layer_acts + (kept < c.layers ? layer_acts : 0);
  return room;
}

StepResult Model::step(const Batch& batch, Adapter& adapter, const Objective& objective) {
  Backend& be = *backend_;
  const ModelConfig& c = config_;
  require(objective.beta > 0 && std::isfinite(objective.beta), "objective: beta must be a positive number");
  const Plan p = plan(batch, true);
  const int64_t T = p.rows, d = c.hidden;
  const size_t a = be.act_elem_size();
  StepResult r;
  r.edge_logp.resize(p.n_edges);
  r.edge_loss.resize(p.n_edges);
  if (p.n_edges == 0) return r;

  // Layers keep their full activations while the budget lasts (the last ones first, since the
  // backward starts there); the others keep only their input and are recomputed. On the CPU
  // the budget also stays within the memory available, checked before anything is allocated.
  const size_t per_layer = LayerActs::bytes_per_row(c, a, adapter.rank()) * static_cast<size_t>(T);
  const size_t budget = be.name() == "cpu" ? step_activation_room(p, per_layer, adapter.rank(), r.planned_bytes) : activation_budget();
  const int64_t kept = std::min<int64_t>(c.layers, static_cast<int64_t>(budget / std::max<size_t>(1, per_layer)));
  const int64_t first_kept = c.layers - kept;
  r.recomputed_layers = first_kept;

  BufferPtr x = be.alloc(T * d * a, "residual stream");
  embed(p.tokens->as<int32_t>(), x->data(), T);
  std::vector<LayerActs> acts(c.layers);
  LayerActs recompute;  // shared by recomputed layers
  if (first_kept > 0) recompute.allocate(be, c, T, &adapter, false);
  Scratch s{be.alloc(T * d * a, "projection output")};
  for (int l = 0; l < c.layers; ++l) {
    if (l >= first_kept) {
      acts[l].allocate(be, c, T, &adapter, true);
      layer_forward(l, p, &adapter, x->data(), acts[l], s);
    } else {
      acts[l].x_in = be.alloc(T * d * a, "layer input");
      be.copy(acts[l].x_in->data(), x->data(), T * d * a);
      layer_forward(l, p, &adapter, x->data(), recompute, s);
    }
  }

  // Head: final norm and the edge log-probabilities.
  BufferPtr xf = be.alloc(T * d * a, "final norm output");
  BufferPtr rstd = be.alloc(T * sizeof(float), "final norm statistics");
  be.rmsnorm_forward(x->data(), weights_.final_norm->data(), xf->data(), rstd->as<float>(), T, d, static_cast<float>(c.rms_eps));
  BufferPtr logp = be.alloc(p.n_edges * sizeof(float), "edge log-probabilities");
  BufferPtr loss = be.alloc(p.n_edges * sizeof(float), "edge losses");
  BufferPtr pstats = be.alloc(p.edges.n_parents * kLogprobStats * sizeof(float), "log-prob statistics");
  BufferPtr estats = be.alloc(p.n_edges * kEdgeStats * sizeof(float), "log-prob statistics");
  be.logprobs_forward(xf->data(), head(), p.edges, objective, logp->as<float>(), loss->as<float>(), pstats->as<float>(), estats->as<float>());

  // Backward: dxf from the head, through the final norm, then the layers in reverse.
  BufferPtr dxf = be.alloc(T * d * a, "final norm gradient");
  be.zero(dxf->data(), T * d * a);
  be.logprobs_backward(xf->data(), head(), p.edges, objective, pstats->as<float>(), estats->as<float>(), dxf->data());
  BufferPtr dx = be.alloc(T * d * a, "residual gradient");
  be.zero(dx->data(), T * d * a);
  be.rmsnorm_backward(dxf->data(), x->data(), weights_.final_norm->data(), rstd->as<float>(), dx->data(), T, d);
  xf.reset();
  dxf.reset();

  BufferPtr d_inter1 = be.alloc(T * c.intermediate * a, "MLP gradient");
  BufferPtr d_inter2 = be.alloc(T * c.intermediate * a, "MLP gradient");
  BufferPtr d_inter3 = be.alloc(T * c.intermediate * a, "MLP gradient");
  BufferPtr d_norm = be.alloc(T * d * a, "norm gradient");
  BufferPtr dq = be.alloc(T * c.q_dim() * a, "query gradient");
  BufferPtr dattn = be.alloc(T * c.q_dim() * a, "attention gradient");
  BufferPtr dk = be.alloc(T * c.kv_dim() * a, "key gradient");
  BufferPtr dv = be.alloc(T * c.kv_dim() * a, "value gradient");
  BufferPtr dq_in = c.qk_norm ? be.alloc(T * c.q_dim() * a, "query gradient before its norm") : nullptr;
  BufferPtr dk_in = c.qk_norm ? be.alloc(T * c.kv_dim() * a, "key gradient before its norm") : nullptr;
  BufferPtr d_out = c.sandwich_norms ? be.alloc(T * d * a, "block output gradient") : nullptr;
  const AttentionShape shape = attention_shape(T, T);
  // The gradient of a block's output before its post-norm (sandwich_norms), from dx.
  auto through_post_norm = [&](const BufferPtr& o, const BufferPtr& w, const BufferPtr& rstd) -> void* {
    if (!c.sandwich_norms) return dx->data();
    be.zero(d_out->data(), T * d * a);
    be.rmsnorm_backward(dx->data(), o->data(), w->data(), rstd->as<float>(), d_out->data(), T, d);
    return d_out->data();
  };
  for (int l = static_cast<int>(c.layers) - 1; l >= 0; --l) {
    LayerActs* A = &acts[l];
    if (l < first_kept) {
      be.copy(x->data(), acts[l].x_in->data(), T * d * a);
      recompute.x_in.reset();
      layer_forward(l, p, &adapter, x->data(), recompute, s);
      recompute.x_in = std::move(acts[l].x_in);
      A = &recompute;
    }
    const LayerWeights& lw = weights_.layers[l];
    auto lora = [&](int m) { return adapter.params(l, m); };
    auto grads = [&](int m) { return adapter.grads(l, m); };
    auto u = [&](int m) { return A->u[m] ? A->u[m]->as<float>() : nullptr; };

    // MLP: out = x_mid + [post-norm] down(act(gate(xn2)) * up(xn2)), xn2 = norm(x_mid)
    void* d_mlp = through_post_norm(A->mlp_o, lw.ffn_post_norm, A->rstd_mo);
    be.linear_backward(d_mlp, A->h->data(), linear(l, DOWN_PROJ), lora(DOWN_PROJ), u(DOWN_PROJ), d_inter1->data(), false, grads(DOWN_PROJ), T);
    gate_backward(d_inter1->data(), A->gate->data(), A->up->data(), d_inter2->data(), d_inter3->data(), T * c.intermediate);
    be.linear_backward(d_inter2->data(), A->xn2->data(), linear(l, GATE_PROJ), lora(GATE_PROJ), u(GATE_PROJ), d_norm->data(), false, grads(GATE_PROJ), T);
    be.linear_backward(d_inter3->data(), A->xn2->data(), linear(l, UP_PROJ), lora(UP_PROJ), u(UP_PROJ), d_norm->data(), true, grads(UP_PROJ), T);
    be.rmsnorm_backward(d_norm->data(), A->x_mid->data(), lw.ffn_norm->data(), A->rstd2->as<float>(), dx->data(), T, d);

    // Attention: x_mid = x_in + [post-norm] o(attention(rope([norm] q(xn1)), rope([norm] k(xn1)), v(xn1))),
    // xn1 = norm(x_in)
    void* d_attn = through_post_norm(A->attn_o, lw.attn_post_norm, A->rstd_ao);
    be.linear_backward(d_attn, A->attn->data(), linear(l, O_PROJ), lora(O_PROJ), u(O_PROJ), dattn->data(), false, grads(O_PROJ), T);
    const bool windowed = c.layer_sliding(l);
    be.attention_backward(dattn->data(), A->q->data(), A->k->data(), A->v->data(), A->attn->data(), A->lse->as<float>(),
                          (windowed ? p.window_offsets : p.key_offsets)->as<int32_t>(), (windowed ? p.window_rows : p.key_rows)->as<int32_t>(),
                          shape, dq->data(), dk->data(), dv->data());
    rope(l, p.rope_runs, dq->data(), p.positions->as<int32_t>(), c.heads, true);
    rope(l, p.rope_runs, dk->data(), p.positions->as<int32_t>(), c.kv_heads, true);
    if (c.qk_norm) {
      be.zero(dq_in->data(), T * c.q_dim() * a);
      be.zero(dk_in->data(), T * c.kv_dim() * a);
      be.rmsnorm_backward(dq->data(), A->q_in->data(), lw.q_norm->data(), A->rstd_q->as<float>(), dq_in->data(), T * c.heads, c.head_dim);
      be.rmsnorm_backward(dk->data(), A->k_in->data(), lw.k_norm->data(), A->rstd_k->as<float>(), dk_in->data(), T * c.kv_heads, c.head_dim);
    }
    be.linear_backward((c.qk_norm ? dq_in : dq)->data(), A->xn1->data(), linear(l, Q_PROJ), lora(Q_PROJ), u(Q_PROJ), d_norm->data(), false, grads(Q_PROJ), T);
    be.linear_backward((c.qk_norm ? dk_in : dk)->data(), A->xn1->data(), linear(l, K_PROJ), lora(K_PROJ), u(K_PROJ), d_norm->data(), true, grads(K_PROJ), T);
    be.linear_backward(dv->data(), A->xn1->data(), linear(l, V_PROJ), lora(V_PROJ), u(V_PROJ), d_norm->data(), true, grads(V_PROJ), T);
    be.rmsnorm_backward(d_norm->data(), A->x_in->data(), lw.attn_norm->data(), A->rstd1->as<float>(), dx->data(), T, d);
    if (l >= first_kept) acts[l] = LayerActs{};  // free as we go
  }

  be.download(r.edge_logp.data(), logp->data(), p.n_edges * sizeof(float));
  be.download(r.edge_loss.data(), loss->data(), p.n_edges * sizeof(float));
  for (int64_t e = 0; e < p.n_edges; ++e) r.loss += static_cast<double>(p.edge_weights_host[e]) * r.edge_loss[e];
  return r;
}

// ---------------------------------------------------------------------------------- session
Session::Session(Model& model, const Adapter* adapter, int64_t capacity)
    : model_(model), adapter_(adapter) {
  k_cache_.resize(model.config().layers);
  v_cache_.resize(model.config().layers);
  reserve(std::max<int64_t>(capacity, 16));
}

void Session::reserve(int64_t rows) {
  if (rows <= capacity_) return;
  Backend& be = model_.backend();
  const ModelConfig& c = model_.config();
  const size_t a = be.act_elem_size();
  const int64_t cap = std::max(rows, capacity_ * 2);
  if (be.name() == "cpu") {
    const uint64_t need = growth_bytes(rows);
    check_memory(need, "a sampling session's cache of " + std::to_string(cap) + " rows (keys and values of " + std::to_string(c.layers) +
                           " layers and the final hidden states, " + gib(need) + ")",
                 "try fewer samples per call, shorter prompts or a lower max tokens, or weights in a compact dtype to free memory");
  }
  for (int64_t l = 0; l < c.layers; ++l) {
    for (auto* cache : {&k_cache_[l], &v_cache_[l]}) {
      BufferPtr grown = be.alloc(cap * c.kv_dim() * a, "KV cache");
      if (*cache && rows_ > 0) be.copy(grown->data(), (*cache)->data(), rows_ * c.kv_dim() * a);
      *cache = std::move(grown);
    }
  }
  BufferPtr hidden = be.alloc(cap * c.hidden * a, "session hidden states");
  if (hidden_ && rows_ > 0) be.copy(hidden->data(), hidden_->data(), rows_ * c.hidden * a);
  hidden_ = std::move(hidden);
  capacity_ = cap;
}

// What growing the cache to hold `rows` allocates: the new cache (made layer by layer, each
// old buffer freed once copied, so one old buffer more at the worst); 0 when it holds them.
uint64_t Session::growth_bytes(int64_t rows) const {
  if (rows <= capacity_) return 0;
  const ModelConfig& c = model_.config();
  const uint64_t a = model_.backend().act_elem_size(), cap = static_cast<uint64_t>(std::max(rows, capacity_ * 2));
  return cap * a * (2 * c.layers * c.kv_dim() + c.hidden) + static_cast<uint64_t>(capacity_) * a * std::max(c.kv_dim(), c.hidden);
}

void Session::reset() { truncate(0); }

void Session::truncate(int64_t rows) {
  require(rows >= 0 && rows <= rows_, "session: cannot truncate to " + std::to_string(rows) + " rows; it has " + std::to_string(rows_));
  rows_ = rows;
  parents_.resize(static_cast<size_t>(rows));
  depth_.resize(static_cast<size_t>(rows));
  tokens_.resize(static_cast<size_t>(rows));
  roots_.resize(static_cast<size_t>(rows));
  row_long_.resize(static_cast<size_t>(rows));
}

int64_t Session::append(const std::vector<int32_t>& tokens, const std::vector<int32_t>& parents) {
  Backend& be = model_.backend();
  const ModelConfig& c = model_.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  require(n > 0, "session: nothing to append");
  require(static_cast<int64_t>(parents.size()) == n, "session: tokens and parents differ in length");
  const int64_t base = rows_;
  for (int64_t i = 0; i < n; ++i) {
    require(tokens[i] >= 0 && tokens[i] < c.vocab, "session: token " + std::to_string(tokens[i]) + " is outside the vocabulary");
    require(parents[i] >= -1 && parents[i] < base + i, "session: parent " + std::to_string(parents[i]) + " of appended row " + std::to_string(i) + " does not exist");
  }
  std::vector<int32_t> all_parents = parents_;
  std::vector<int32_t> depth = depth_;
  all_parents.insert(all_parents.end(), parents.begin(), parents.end());
  for (int64_t i = 0; i < n; ++i) depth.push_back(parents[i] < 0 ? 0 : depth[parents[i]] + 1);
  // LongRoPE picks its factor set per tree of the session (a root and its descendants) by the
  // tree's deepest row, as transformers' generation picks it by the input's length (its largest
  // position + 1). When a tree's choice changes, the keys cached for it were rotated with the
  // other set: the whole session is recomputed, as transformers' Phi-3 drops its cache on
  // crossing the original context (Phi3ForCausalLM.prepare_inputs_for_generation).
  std::vector<int32_t> roots = roots_;
  for (int64_t i = 0; i < n; ++i) roots.push_back(parents[i] < 0 ? static_cast<int32_t>(base + i) : roots[parents[i]]);
  std::vector<uint8_t> row_long(static_cast<size_t>(base + n), 0);
  if (c.longrope()) {
    std::vector<int32_t> deepest(static_cast<size_t>(base + n), 0);  // by root row
    for (int64_t r = 0; r < base + n; ++r) deepest[roots[r]] = std::max(deepest[roots[r]], depth[r]);
    for (int64_t r = 0; r < base + n; ++r) row_long[r] = c.rope_long(deepest[roots[r]]) ? 1 : 0;
    if (!std::equal(row_long_.begin(), row_long_.end(), row_long.begin())) {
      std::vector<int32_t> all_tokens = tokens_;
      all_tokens.insert(all_tokens.end(), tokens.begin(), tokens.end());
      truncate(0);
      append(all_tokens, all_parents);
      return base;
    }
  }
  std::vector<RopeRun> rope_runs;
  for (int64_t i = 0; i < n; ++i) {
    const bool long_factors = row_long[base + i] != 0;
    if (rope_runs.empty() || rope_runs.back().long_factors != long_factors) rope_runs.push_back({i, i + 1, long_factors});
    else rope_runs.back().end = i + 1;
  }
  check_key_lists(be, depth, static_cast<size_t>(base), c.sliding_window);
  std::vector<int32_t> offsets, keys, w_offsets, w_keys;
  key_lists(all_parents, depth, static_cast<size_t>(base), 0, offsets, keys);
  if (c.sliding_window > 0) key_lists(all_parents, depth, static_cast<size_t>(base), c.sliding_window, w_offsets, w_keys);
  std::vector<int32_t> positions(depth.begin() + base, depth.end());

  const size_t a = be.act_elem_size();
  if (be.name() == "cpu") {
    // This append's buffers (as allocated below; the key lists, made and checked above, are
    // resident already), the kernels' scratch and the cache's growth.
    const uint64_t rank = adapter_ ? adapter_->rank() : 0;
    const uint64_t widths = 3 * c.hidden + 2 * c.q_dim() + 2 * c.intermediate + (c.qk_norm ? c.q_dim() + c.kv_dim() : 0) + (c.sandwich_norms ? c.hidden : 0);
    const uint64_t buffers = n * (a * widths + sizeof(float) * (1 + c.heads + rank + (c.qk_norm ? c.heads : 0)) + 2 * sizeof(int32_t));
    PassShape s;
    s.attention = model_.attention_shape(n, base + n);
    for (size_t r = 0; r + 1 < offsets.size(); ++r) s.max_keys = std::max<int64_t>(s.max_keys, offsets[r + 1] - offsets[r]);
    s.max_in = std::max({c.hidden, c.q_dim(), c.kv_dim(), c.intermediate});
    s.rank = static_cast<int>(rank);
    s.vocab = c.vocab, s.hidden = c.hidden;
    const uint64_t kernels = be.kernel_scratch_bytes(s), growth = growth_bytes(base + n);
    check_memory(buffers + kernels + growth,
                 "appending " + std::to_string(n) + " rows to a sampling session of " + std::to_string(base) + " rows (" + gib(buffers) +
                     " of activations, " + gib(kernels) + " of kernel scratch, " + gib(growth) + " for its cache to grow)",
                 "try fewer samples per call, shorter prompts, or weights in a compact dtype to free memory");
  }
  reserve(base + n);
  BufferPtr tok = upload_vector(be, tokens, "session tokens");
  BufferPtr pos = upload_vector(be, positions, "session positions");
  BufferPtr koff = upload_vector(be, offsets, "attention key offsets");
  BufferPtr krows = upload_vector(be, keys, "attention key lists");
  BufferPtr wkoff = c.sliding_window > 0 ? upload_vector(be, w_offsets, "windowed attention key offsets") : nullptr;
  BufferPtr wkrows = c.sliding_window > 0 ? upload_vector(be, w_keys, "windowed attention key lists") : nullptr;
  BufferPtr x = be.alloc(n * c.hidden * a, "residual stream");
  BufferPtr xn = be.alloc(n * c.hidden * a, "norm output");
  BufferPtr rstd = be.alloc(n * sizeof(float), "norm statistics");
  BufferPtr q = be.alloc(n * c.q_dim() * a, "queries");
  BufferPtr attn = be.alloc(n * c.q_dim() * a, "attention output");
  BufferPtr lse = be.alloc(n * c.heads * sizeof(float), "attention log-sum-exp");
  BufferPtr o = be.alloc(n * c.hidden * a, "projection output");
  BufferPtr gate = be.alloc(n * c.intermediate * a, "MLP gate");
  BufferPtr up = be.alloc(n * c.intermediate * a, "MLP up projection");
  BufferPtr u = adapter_ ? be.alloc(n * adapter_->rank() * sizeof(float), "LoRA projections") : nullptr;
  BufferPtr q_in = c.qk_norm ? be.alloc(n * c.q_dim() * a, "queries before their norm") : nullptr;
  BufferPtr k_in = c.qk_norm ? be.alloc(n * c.kv_dim() * a, "keys before their norm") : nullptr;
  BufferPtr qk_rstd = c.qk_norm ? be.alloc(n * c.heads * sizeof(float), "query/key norm statistics") : nullptr;
  BufferPtr block_o = c.sandwich_norms ? be.alloc(n * c.hidden * a, "block output before its norm") : nullptr;
  float* uptr = u ? u->as<float>() : nullptr;
  const AttentionShape shape = model_.attention_shape(n, base + n);
  const float eps = static_cast<float>(c.rms_eps);
  model_.embed(tok->as<int32_t>(), x->data(), n);
  // A block's output o: normed into `o` itself through block_o under sandwich_norms.
  auto post_norm = [&](const BufferPtr& w) {
    if (!c.sandwich_norms) return;
    be.copy(block_o->data(), o->data(), n * c.hidden * a);
    be.rmsnorm_forward(block_o->data(), w->data(), o->data(), rstd->as<float>(), n, c.hidden, eps);
  };
  for (int l = 0; l < c.layers; ++l) {
    const LayerWeights& lw = model_.weights_.layers[l];
    auto lora = [&](int m) { return adapter_ ? adapter_->params(l, m) : LoraParams{}; };
    void* k_new = be.act_offset(k_cache_[l]->data(), base * c.kv_dim());
    void* v_new = be.act_offset(v_cache_[l]->data(), base * c.kv_dim());
    be.rmsnorm_forward(x->data(), lw.attn_norm->data(), xn->data(), rstd->as<float>(), n, c.hidden, eps);
    be.linear_forward(xn->data(), model_.linear(l, Q_PROJ), lora(Q_PROJ), c.qk_norm ? q_in->data() : q->data(), uptr, n);
    be.linear_forward(xn->data(), model_.linear(l, K_PROJ), lora(K_PROJ), c.qk_norm ? k_in->data() : k_new, uptr, n);
    be.linear_forward(xn->data(), model_.linear(l, V_PROJ), lora(V_PROJ), v_new, uptr, n);
    if (c.qk_norm) {
      be.rmsnorm_forward(q_in->data(), lw.q_norm->data(), q->data(), qk_rstd->as<float>(), n * c.heads, c.head_dim, eps);
      be.rmsnorm_forward(k_in->data(), lw.k_norm->data(), k_new, qk_rstd->as<float>(), n * c.kv_heads, c.head_dim, eps);
    }
    model_.rope(l, rope_runs, q->data(), pos->as<int32_t>(), c.heads, false);
    model_.rope(l, rope_runs, k_new, pos->as<int32_t>(), c.kv_heads, false);
    const bool windowed = c.layer_sliding(l);
    be.attention_forward(q->data(), k_cache_[l]->data(), v_cache_[l]->data(), (windowed ? wkoff : koff)->as<int32_t>(),
                         (windowed ? wkrows : krows)->as<int32_t>(), shape, attn->data(), lse->as<float>());
    be.linear_forward(attn->data(), model_.linear(l, O_PROJ), lora(O_PROJ), o->data(), uptr, n);
    post_norm(lw.attn_post_norm);
    be.add_inplace(x->data(), o->data(), n * c.hidden);
    be.rmsnorm_forward(x->data(), lw.ffn_norm->data(), xn->data(), rstd->as<float>(), n, c.hidden, eps);
    be.linear_forward(xn->data(), model_.linear(l, GATE_PROJ), lora(GATE_PROJ), gate->data(), uptr, n);
    be.linear_forward(xn->data(), model_.linear(l, UP_PROJ), lora(UP_PROJ), up->data(), uptr, n);
    model_.gate_forward(gate->data(), up->data(), gate->data(), n * c.intermediate);
    be.linear_forward(gate->data(), model_.linear(l, DOWN_PROJ), lora(DOWN_PROJ), o->data(), uptr, n);
    post_norm(lw.ffn_post_norm);
    be.add_inplace(x->data(), o->data(), n * c.hidden);
  }
  be.rmsnorm_forward(x->data(), model_.weights_.final_norm->data(), be.act_offset(hidden_->data(), base * c.hidden), rstd->as<float>(), n,
                     c.hidden, static_cast<float>(c.rms_eps));
  parents_ = std::move(all_parents);
  depth_ = std::move(depth);
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  roots_ = std::move(roots);
  row_long_ = std::move(row_long);
  rows_ = base + n;
  return base;
}

void Session::sample(const std::vector<int32_t>& rows, const std::vector<uint64_t>& streams,
                     const SampleParams& params, uint64_t step, std::vector<int32_t>& tokens,
                     std::vector<float>& logp) {
  Backend& be = model_.backend();
  const int64_t n = static_cast<int64_t>(rows.size());
  require(static_cast<int64_t>(streams.size()) == n, "session: rows and streams differ in length");
  require(params.temperature >= 0 && std::isfinite(params.temperature), "sampling: temperature must be a finite number >= 0");
  require(params.top_k >= 0, "sampling: top_k must be >= 0");
  require(params.top_p > 0 && params.top_p <= 1, "sampling: top_p must be in (0, 1]");
  for (int32_t r : rows) require(r >= 0 && r < rows_, "session: row " + std::to_string(r) + " does not exist");
  tokens.assign(n, 0);
  logp.assign(n, 0.f);
  if (n == 0) return;
  if (be.name() == "cpu") {
    const ModelConfig& c = model_.config();
    PassShape s;
    s.samples = n;
    s.vocab = c.vocab, s.hidden = c.hidden;
    const uint64_t kernels = be.kernel_scratch_bytes(s);
    check_memory(kernels + n * (sizeof(int32_t) * 2 + sizeof(uint64_t) + sizeof(float)),
                 "drawing " + std::to_string(n) + " next tokens over a vocabulary of " + std::to_string(c.vocab) + " (" + gib(kernels) + " of logits and scratch)",
                 "try fewer samples per call, or weights in a compact dtype to free memory");
  }
  BufferPtr r = upload_vector(be, rows, "sample rows");
  BufferPtr st = upload_vector(be, streams, "sample streams");
  BufferPtr tok = be.alloc(n * sizeof(int32_t), "sampled tokens");
  BufferPtr lp = be.alloc(n * sizeof(float), "sampled log-probabilities");
  SampleParams capped = params;
  capped.logit_softcap = static_cast<float>(model_.config().final_softcap);
  be.sample(hidden_->data(), model_.head(), r->as<int32_t>(), st->as<uint64_t>(), n, capped, step, tok->as<int32_t>(), lp->as<float>());
  be.download(tokens.data(), tok->data(), n * sizeof(int32_t));
  be.download(logp.data(), lp->data(), n * sizeof(float));
}

}  // namespace diffuse
