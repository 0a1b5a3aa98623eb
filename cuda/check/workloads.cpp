#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "check/check.h"
#include "engine/config.h"
#include "engine/errors.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace diffuse {
namespace check {

std::vector<TensorSource> init_sources(const ModelConfig& c, uint64_t seed, double std) {
  std::vector<TensorSource> out;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, const char* init) {
    TensorSource s;
    s.name = name;
    s.shape = std::move(shape);
    s.kind = TensorSource::Kind::Init;
    s.init = init;
    s.std = std;
    s.seed = seed + 7919 * out.size();
    out.push_back(std::move(s));
  };
  const int64_t d = c.hidden, I = c.intermediate;
  add("model.embed_tokens.weight", {c.vocab, d}, "normal");
  add("model.norm.weight", {d}, "ones");
  if (!c.tied_embeddings) add("lm_head.weight", {c.vocab, d}, "normal");
  const std::vector<int64_t> shapes[kModules] = {{c.q_dim(), d}, {c.kv_dim(), d}, {c.kv_dim(), d}, {d, c.q_dim()},
                                                 {I, d},         {I, d},          {d, I}};
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {d}, "ones");
    add(p + "post_attention_layernorm.weight", {d}, "ones");
    for (int m = 0; m < kModules; ++m)
      add(p + (module_is_attention(m) ? "self_attn." : "mlp.") + module_name(m) + ".weight", shapes[m], "normal");
    if (c.attention_bias)
      for (int m = Q_PROJ; m <= V_PROJ; ++m) add(p + "self_attn." + module_name(m) + ".bias", {shapes[m][0]}, "normal");
  }
  return out;
}

Batch trie_batch(const std::vector<int32_t>& prompt, const std::vector<std::vector<int32_t>>& targets,
                 const std::vector<float>& weights) {
  struct Node {
    int32_t token = 0, parent = -1;  // parent node, -1 for the prompt's last row
    double weight = 0;
    std::vector<int32_t> children;
  };
  std::vector<Node> nodes;
  std::map<std::pair<int32_t, int32_t>, int32_t> index;  // (parent node, token) -> node
  std::vector<int32_t> roots;
  for (size_t t = 0; t < targets.size(); ++t) {
    int32_t parent = -1;
    for (int32_t tok : targets[t]) {
      auto [it, added] = index.emplace(std::make_pair(parent, tok), static_cast<int32_t>(nodes.size()));
      if (added) {
        nodes.push_back({tok, parent, 0, {}});
        (parent < 0 ? roots : nodes[parent].children).push_back(it->second);
      }
      nodes[it->second].weight += weights[t];
      parent = it->second;
    }
  }
  Batch b;
  for (size_t i = 0; i < prompt.size(); ++i) {
    b.tokens.push_back(prompt[i]);
    b.parents.push_back(static_cast<int32_t>(i) - 1);
  }
  const int32_t last = static_cast<int32_t>(prompt.size()) - 1;
  // Depth-first: a node's row right after its parent's, as the TypeScript trie lays them out.
  std::vector<int32_t> row_of(nodes.size(), -1);
  std::function<void(int32_t, int32_t)> visit = [&](int32_t n, int32_t parent_row) {
    b.edge_rows.push_back(parent_row);
    b.edge_tokens.push_back(nodes[n].token);
    b.edge_weights.push_back(static_cast<float>(nodes[n].weight));
    if (nodes[n].children.empty()) return;  // a leaf needs an edge, not a row
    row_of[n] = static_cast<int32_t>(b.tokens.size());
    b.tokens.push_back(nodes[n].token);
    b.parents.push_back(parent_row);
    for (int32_t c : nodes[n].children) visit(c, row_of[n]);
  };
  for (int32_t r : roots) visit(r, last);
  return b;
}

std::vector<std::vector<int32_t>> random_targets(Rng& rng, int count, int max_len, int first_choices, int32_t vocab,
                                                 int32_t eos) {
  std::vector<int32_t> firsts;
  for (int i = 0; i < first_choices; ++i) firsts.push_back(rng.integer(3, vocab - 1));
  std::set<std::vector<int32_t>> seen;
  std::vector<std::vector<int32_t>> out;
  while (static_cast<int>(out.size()) < count) {
    std::vector<int32_t> t = {firsts[rng.integer(0, first_choices - 1)]};
    const int len = rng.integer(1, max_len);
    while (static_cast<int>(t.size()) < len) t.push_back(rng.integer(3, vocab - 1));
    t.push_back(eos);
    if (seen.insert(t).second) out.push_back(t);
  }
  return out;
}

TokenTask read_token_task(const std::string& path) {
  std::ifstream in(path);
  auto bad = [&](const std::string& what) {
    return Error(ErrorCode::INVALID_ARGUMENT, "token task " + path + ": " + what + " (see TokenTask in cuda/check/check.h)");
  };
  if (!in) throw bad("cannot be read");
  std::string magic, key;
  int version = 0;
  if (!(in >> magic >> version) || magic != "diffuse-token-task" || version != 1) throw bad("does not start with 'diffuse-token-task 1'");
  TokenTask t;
  auto ids = [&](std::vector<int32_t>& out) {
    int64_t n = 0;
    if (!(in >> n) || n <= 0 || n > 1'000'000) throw bad("a token count is missing or out of range");
    out.resize(static_cast<size_t>(n));
    for (int32_t& id : out)
      if (!(in >> id) || id < 0) throw bad("a token id is missing or negative");
  };
  while (in >> key) {
    if (key == "name") {
      if (!(in >> t.name)) throw bad("'name' has no value");
    } else if (key == "prompt") {
      ids(t.prompt);
    } else if (key == "target") {
      float w = 0;
      if (!(in >> w) || !(w > 0) || !std::isfinite(w)) throw bad("a target weight is missing or not positive");
      t.targets.emplace_back();
      ids(t.targets.back());
      t.weights.push_back(w);
    } else {
      throw bad("unknown key '" + key + "'");
    }
  }
  if (t.prompt.empty() || t.targets.empty()) throw bad("needs a prompt and at least one target");
  double total = 0;
  for (float w : t.weights) total += w;
  for (float& w : t.weights) w = static_cast<float>(w / total);
  if (t.name.empty()) t.name = path;
  return t;
}

}  // namespace check
}  // namespace diffuse
