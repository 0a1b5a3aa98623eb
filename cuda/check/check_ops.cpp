// Part (a): every backend op on random inputs, CPU (f32) vs CUDA (bf16), relative error within
// bf16 tolerance: 1e-2, or 5e-2 where a long chain of bf16 roundings justifies it (said at
// each such check). Inputs are rounded to bf16 first, so both backends compute on the same
// values and the error measures the GPU's arithmetic, not the input rounding.
#include <cmath>
#include <cstdio>
#include <numeric>

#include "check/check.h"
#include "engine/errors.h"

namespace diffuse {
namespace check {
namespace {

using Outputs = std::vector<std::vector<float>>;

// Runs `op` on both backends and checks each output.
template <typename Op>
void compare(Report& report, Backend& cpu, Backend& gpu, const std::string& name, const std::vector<std::string>& outputs,
             const std::vector<double>& tolerances, Op op) {
  Dev c{cpu}, g{gpu};
  const Outputs ref = op(c);
  const Outputs out = op(g);
  for (size_t i = 0; i < outputs.size(); ++i) report.check(name + ": " + outputs[i], rel_error(out[i], ref[i]), tolerances[i]);
}

// A prompt chain of `prompt` rows, then `nodes` trie rows whose parents are earlier rows
// (mostly the row just before, as a depth-first trie lays them out); key lists root-first,
// as the graph builds them.
struct Forest {
  std::vector<int32_t> parents, depth, offsets, keys;
};
Forest make_forest(Rng& rng, int prompt, int nodes, int first_query_row = 0) {
  Forest f;
  for (int r = 0; r < prompt + nodes; ++r) {
    int32_t parent = r - 1;
    if (r > prompt) {
      const int choice = rng.integer(0, 9);
      if (choice < 3) parent = prompt - 1;                          // a new first token
      else if (choice < 5) parent = rng.integer(prompt - 1, r - 1);  // a sibling branch
    }
    f.parents.push_back(parent);
    f.depth.push_back(parent < 0 ? 0 : f.depth[parent] + 1);
  }
  f.offsets.push_back(0);
  for (int r = first_query_row; r < prompt + nodes; ++r) {
    std::vector<int32_t> path;
    for (int32_t n = r; n >= 0; n = f.parents[n]) path.push_back(n);
    f.keys.insert(f.keys.end(), path.rbegin(), path.rend());
    f.offsets.push_back(static_cast<int32_t>(f.keys.size()));
  }
  return f;
}

void check_attention(Report& report, Backend& cpu, Backend& gpu, Rng& rng, const std::string& label, int prompt, int nodes,
                     int q_heads, int kv_heads, int hd, int first_query_row) {
  const Forest f = make_forest(rng, prompt, nodes, first_query_row);
  AttentionShape s;
  s.kv_rows = prompt + nodes;
  s.q_rows = s.kv_rows - first_query_row;
  s.q_heads = q_heads;
  s.kv_heads = kv_heads;
  s.head_dim = hd;
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  const size_t nq = s.q_rows * q_heads * hd, nkv = s.kv_rows * kv_heads * hd;
  const auto q = rng.normal(nq), k = rng.normal(nkv), v = rng.normal(nkv), dout = rng.normal(nq);
  const std::string name = "attention " + label;
  compare(report, cpu, gpu, name + " forward", {"out", "lse"}, {1e-2, 1e-2}, [&](Dev& d) -> Outputs {
    auto Q = d.act(q), K = d.act(k), V = d.act(v), off = d.i32(f.offsets), keys = d.i32(f.keys);
    auto out = d.act_zeros(nq);
    auto lse = d.f32_zeros(s.q_rows * q_heads);
    d.be.attention_forward(Q->data(), K->data(), V->data(), off->as<int32_t>(), keys->as<int32_t>(), s, out->data(),
                           lse->as<float>());
    return {d.read_act(out, nq), d.read_f32(lse, s.q_rows * q_heads)};
  });
  // The backward's dk / dv sum ds_j q over many queries, and ds = p (dp - D) cancels: 5e-2.
  compare(report, cpu, gpu, name + " backward", {"dq", "dk", "dv"}, {5e-2, 5e-2, 1e-2}, [&](Dev& d) -> Outputs {
    auto Q = d.act(q), K = d.act(k), V = d.act(v), dO = d.act(dout), off = d.i32(f.offsets), keys = d.i32(f.keys);
    auto out = d.act_zeros(nq);
    auto lse = d.f32_zeros(s.q_rows * q_heads);
    d.be.attention_forward(Q->data(), K->data(), V->data(), off->as<int32_t>(), keys->as<int32_t>(), s, out->data(),
                           lse->as<float>());
    auto dq = d.act_zeros(nq), dk = d.act_zeros(nkv), dv = d.act_zeros(nkv);
    d.be.attention_backward(dO->data(), Q->data(), K->data(), V->data(), out->data(), lse->as<float>(), off->as<int32_t>(),
                            keys->as<int32_t>(), s, dq->data(), dk->data(), dv->data());
    return {d.read_act(dq, nq), d.read_act(dk, nkv), d.read_act(dv, nkv)};
  });
}

void check_linear(Report& report, Backend& cpu, Backend& gpu, Rng& rng, const char* kernel, int64_t rows, int64_t in,
                  int64_t out, int rank, float scale, bool bias, bool accumulate, bool packed = false) {
  const std::string name = std::string("linear[") + kernel + "] " + std::to_string(rows) + "x" + std::to_string(in) + "->" +
                           std::to_string(out) + " r=" + std::to_string(rank) + (bias ? " +bias" : "") +
                           (packed ? " (A, B packed once)" : "");
  const auto x = rng.normal(rows * in), w = rng.normal(out * in, 0.05f), b = rng.normal(out, 0.5f);
  const float bound = 1.f / std::sqrt(static_cast<float>(in));
  const auto A = rng.uniform(std::max(rank, 1) * in, -bound, bound), B = rng.normal(out * std::max(rank, 1), 0.2f);
  const auto dy = rng.normal(rows * out), dx0 = rng.normal(rows * in);
  const auto dA0 = rng.normal(std::max(rank, 1) * in, 0.1f), dB0 = rng.normal(out * std::max(rank, 1), 0.1f);
  // With `packed`, A and B go through Backend::pack_lora as an adapter's do (held in pk).
  BufferPtr pk;
  auto lora = [&](Dev& d, BufferPtr& a, BufferPtr& bb) {
    if (rank == 0) return LoraParams{};
    a = d.f32(A);
    bb = d.f32(B);
    pk.reset();
    if (packed) d.be.pack_lora(a->as<float>(), bb->as<float>(), in, out, rank, pk);
    return LoraParams{a->as<float>(), bb->as<float>(), rank, scale, pk ? pk->data() : nullptr};
  };
  std::vector<std::string> names = {"y"};
  std::vector<double> tols = {1e-2};
  if (rank > 0) names.push_back("u"), tols.push_back(1e-2);
  compare(report, cpu, gpu, name + " forward", names, tols, [&](Dev& d) -> Outputs {
    auto X = d.act(x), W = d.weight(w), Bias = d.weight(b);
    BufferPtr a, bb;
    const LoraParams lp = lora(d, a, bb);
    auto Y = d.act_zeros(rows * out), U = d.f32_zeros(rows * std::max(rank, 1));
    d.be.linear_forward(X->data(), LinearWeight{W->data(), bias ? Bias->data() : nullptr, out, in}, lp, Y->data(),
                        rank > 0 ? U->as<float>() : nullptr, rows);
    Outputs o{d.read_act(Y, rows * out)};
    if (rank > 0) o.push_back(d.read_f32(U, rows * rank));
    return o;
  });
  names = {"dx"};
  tols = {1e-2};
  if (rank > 0) names.insert(names.end(), {"dA", "dB"}), tols.insert(tols.end(), {1e-2, 1e-2});
  compare(report, cpu, gpu, name + (accumulate ? " backward (dx +=)" : " backward"), names, tols, [&](Dev& d) -> Outputs {
    auto X = d.act(x), W = d.weight(w), DY = d.act(dy);
    BufferPtr a, bb;
    const LoraParams lp = lora(d, a, bb);
    const LinearWeight lw{W->data(), nullptr, out, in};
    // u as the forward makes it
    auto Y = d.act_zeros(rows * out), U = d.f32_zeros(rows * std::max(rank, 1));
    d.be.linear_forward(X->data(), lw, lp, Y->data(), rank > 0 ? U->as<float>() : nullptr, rows);
    auto DX = accumulate ? d.act(dx0) : d.act_zeros(rows * in);
    auto dA = d.f32(dA0), dB = d.f32(dB0);
    const LoraGrads grads = rank > 0 ? LoraGrads{dA->as<float>(), dB->as<float>()} : LoraGrads{};
    d.be.linear_backward(DY->data(), X->data(), lw, lp, rank > 0 ? U->as<float>() : nullptr, DX->data(), accumulate, grads, rows);
    Outputs o{d.read_act(DX, rows * in)};
    if (rank > 0) o.push_back(d.read_f32(dA, rank * in)), o.push_back(d.read_f32(dB, out * rank));
    return o;
  });
}

void check_logprobs(Report& report, Backend& cpu, Backend& gpu, Rng& rng, ObjectiveKind kind, const char* label) {
  const int64_t rows = 30, dim = 64, vocab = 3000;
  const auto hidden = rng.normal(rows * dim), head = rng.normal(vocab * dim, 0.3f);
  std::vector<int32_t> parent_rows = {0, 3, 4, 7, 9, 12, 15, 16, 20, 22, 27, 29};
  std::vector<int32_t> edge_parent, edge_token;
  const int32_t special[] = {0, 255, 256, 2999, 2816, 1024};  // chunk edges when chunks are 256 wide
  for (int e = 0; e < 40; ++e) {
    edge_parent.push_back(e < static_cast<int>(parent_rows.size()) ? e : rng.integer(0, static_cast<int32_t>(parent_rows.size()) - 1));
    edge_token.push_back(e < 6 ? special[e] : rng.integer(0, vocab - 1));
  }
  // A repeated (parent, token) pair: a trie never makes one, the op allows it.
  edge_parent.push_back(edge_parent[1]);
  edge_token.push_back(edge_token[1]);
  const auto weights = rng.uniform(edge_token.size(), 0.1f, 1.f);
  const auto dhidden0 = rng.normal(rows * dim, 0.01f);
  Objective obj;
  obj.kind = kind;
  obj.beta = 0.7f;
  const int64_t P = parent_rows.size(), E = edge_token.size();
  auto run = [&](Dev& d, bool backward) -> Outputs {
    auto H = d.act(hidden), W = d.weight(head), pr = d.i32(parent_rows), ep = d.i32(edge_parent), et = d.i32(edge_token),
         ew = d.f32(weights);
    EdgeSet es{pr->as<int32_t>(), static_cast<int32_t>(P), ep->as<int32_t>(), et->as<int32_t>(), ew->as<float>(),
               static_cast<int32_t>(E)};
    const LinearWeight lw{W->data(), nullptr, vocab, dim};
    auto logp = d.f32_zeros(E), loss = d.f32_zeros(E), ps = d.f32_zeros(P * kLogprobStats), est = d.f32_zeros(E * kEdgeStats);
    d.be.logprobs_forward(H->data(), lw, es, obj, logp->as<float>(), loss->as<float>(), ps->as<float>(), est->as<float>());
    if (!backward) return {d.read_f32(logp, E), d.read_f32(loss, E), d.read_f32(ps, P * kLogprobStats), d.read_f32(est, E * kEdgeStats)};
    auto dH = d.act(dhidden0);
    d.be.logprobs_backward(H->data(), lw, es, obj, ps->as<float>(), est->as<float>(), dH->data());
    return {d.read_act(dH, rows * dim)};
  };
  const std::string name = std::string("logprobs ") + label + " (V 3000 in 256-wide chunks)";
  compare(report, cpu, gpu, name + " forward", {"edge logp", "edge loss", "parent stats", "edge stats"}, {1e-2, 1e-2, 1e-2, 1e-2},
          [&](Dev& d) { return run(d, false); });
  compare(report, cpu, gpu, name + " backward", {"dhidden"}, {1e-2}, [&](Dev& d) { return run(d, true); });
}

void check_sampling(Report& report, Backend& cpu, Backend& gpu, Rng& rng) {
  const int64_t rows = 6, dim = 64, vocab = 3000;
  const auto hidden = rng.normal(rows * dim), head = rng.normal(vocab * dim, 0.3f);
  const std::vector<int32_t> sample_rows = {0, 1, 2, 3, 4, 5, 5, 2, 0, 1};
  std::vector<uint64_t> streams;
  for (size_t i = 0; i < sample_rows.size(); ++i) streams.push_back(1000 + 17 * i);
  struct Config {
    const char* name;
    float temperature;
    int top_k;
    float top_p;
  };
  const Config configs[] = {{"greedy", 0.f, 0, 1.f},
                            {"T=1", 1.f, 0, 1.f},
                            {"T=0.8 top-k 40", 0.8f, 40, 1.f},
                            {"T=1 top-p 0.9", 1.f, 0, 0.9f},
                            {"T=0.7 top-k 100 top-p 0.8", 0.7f, 100, 0.8f}};
  const int64_t n = sample_rows.size();
  for (const Config& c : configs) {
    SampleParams sp;
    sp.temperature = c.temperature;
    sp.top_k = c.top_k;
    sp.top_p = c.top_p;
    sp.seed = 42;
    auto run = [&](Dev& d, std::vector<int32_t>& tokens) {
      auto H = d.act(hidden), W = d.weight(head), r = d.i32(sample_rows), st = d.u64(streams);
      auto tok = d.be.alloc(n * sizeof(int32_t), "tokens");
      auto lp = d.f32_zeros(n);
      d.be.sample(H->data(), LinearWeight{W->data(), nullptr, vocab, dim}, r->as<int32_t>(), st->as<uint64_t>(), n, sp, 3,
                  tok->as<int32_t>(), lp->as<float>());
      tokens = d.read_i32(tok, n);
      return d.read_f32(lp, n);
    };
    Dev cd{cpu}, gd{gpu};
    std::vector<int32_t> ct, gt;
    const auto clp = run(cd, ct);
    const auto glp = run(gd, gt);
    int same = 0;
    for (int64_t i = 0; i < n; ++i) same += ct[i] == gt[i];
    const std::string name = std::string("sample ") + c.name;
    report.expect(name + ": same tokens as the CPU", same == n, std::to_string(same) + "/" + std::to_string(n) + " equal");
    report.check(name + ": logp", rel_error(glp, clp), 1e-2);
  }
}

}  // namespace

void check_ops(Backend& cpu, Backend& gpu, Report& report) {
  Rng rng(20240611);
  std::printf("(a) ops, CPU f32 vs %s\n", gpu.name().c_str());
  // Small chunks, so the log-prob and sampling kernels cross many chunk / group boundaries.
  CudaExtras::set_chunk_logits(gpu, 12 * 256);

  {
    const int64_t vocab = 1000, dim = 576;
    const auto table = rng.normal(vocab * dim);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 64; ++i) tokens.push_back(rng.integer(0, vocab - 1));
    compare(report, cpu, gpu, "embedding 64 x 576", {"out"}, {1e-6}, [&](Dev& d) -> Outputs {
      auto T = d.weight(table), tok = d.i32(tokens), out = d.act_zeros(tokens.size() * dim);
      d.be.embedding_forward(tok->as<int32_t>(), T->data(), out->data(), tokens.size(), dim);
      return {d.read_act(out, tokens.size() * dim)};
    });
  }
  for (int64_t dim : {576, 100}) {
    const int64_t rows = 33;
    const auto x = rng.normal(rows * dim, 2.f), w = rng.normal(dim, 0.1f), dy = rng.normal(rows * dim), dx0 = rng.normal(rows * dim);
    std::vector<float> wt(w);
    for (float& v : wt) v = round_bf16(1.f + v);
    const std::string name = "rmsnorm 33 x " + std::to_string(dim);
    compare(report, cpu, gpu, name + " forward", {"y", "rstd"}, {1e-2, 1e-2}, [&](Dev& d) -> Outputs {
      auto X = d.act(x), W = d.weight(wt), Y = d.act_zeros(rows * dim), r = d.f32_zeros(rows);
      d.be.rmsnorm_forward(X->data(), W->data(), Y->data(), r->as<float>(), rows, dim, 1e-5f);
      return {d.read_act(Y, rows * dim), d.read_f32(r, rows)};
    });
    compare(report, cpu, gpu, name + " backward (dx +=)", {"dx"}, {1e-2}, [&](Dev& d) -> Outputs {
      auto X = d.act(x), W = d.weight(wt), Y = d.act_zeros(rows * dim), r = d.f32_zeros(rows), DY = d.act(dy), DX = d.act(dx0);
      d.be.rmsnorm_forward(X->data(), W->data(), Y->data(), r->as<float>(), rows, dim, 1e-5f);
      d.be.rmsnorm_backward(DY->data(), X->data(), W->data(), r->as<float>(), DX->data(), rows, dim);
      return {d.read_act(DX, rows * dim)};
    });
  }
  for (const char* kernel : {"cublaslt", "fused"}) {
    CudaExtras::set_linear_kernel(gpu, kernel);
    check_linear(report, cpu, gpu, rng, kernel, 50, 256, 160, 0, 1.f, true, false);
    check_linear(report, cpu, gpu, rng, kernel, 50, 256, 160, 4, 2.f, true, false);
    check_linear(report, cpu, gpu, rng, kernel, 130, 192, 264, 16, 0.5f, false, true);
    check_linear(report, cpu, gpu, rng, kernel, 7, 100, 60, 3, 1.f, true, true);  // no fused fit: the fallback
    check_linear(report, cpu, gpu, rng, kernel, 50, 256, 160, 4, 2.f, true, false, true);
    check_linear(report, cpu, gpu, rng, kernel, 130, 192, 264, 16, 0.5f, false, true, true);
    check_linear(report, cpu, gpu, rng, kernel, 7, 100, 60, 3, 1.f, true, true, true);
  }
  CudaExtras::set_linear_kernel(gpu, "cublaslt");
  {
    const int64_t rows = 40;
    const int heads = 9, hd = 64;
    const auto x = rng.normal(rows * heads * hd);
    std::vector<int32_t> pos;
    for (int i = 0; i < rows; ++i) pos.push_back(rng.integer(0, 5000));
    std::vector<float> inv_freq;
    for (int i = 0; i < hd / 2; ++i) inv_freq.push_back(static_cast<float>(std::pow(10000.0, -2.0 * i / hd)));
    // Whole heads, and Phi-4-mini's partial rotary (48 of 64 dims) with LongRoPE's scaled cos/sin.
    for (const RopeShape shape : {RopeShape{heads, hd, hd, 1.f}, RopeShape{heads, hd, 48, 1.19f}})
      for (bool forward : {true, false}) {
        compare(report, cpu, gpu, "rope 40 x 9 x 64, rot " + std::to_string(shape.rot_dim) + (forward ? " forward" : " backward"), {"x"}, {1e-2},
                [&](Dev& d) -> Outputs {
                  auto X = d.act(x), P = d.i32(pos), F = d.f32(inv_freq);
                  if (forward) d.be.rope_forward(X->data(), P->as<int32_t>(), F->as<float>(), rows, shape);
                  else d.be.rope_backward(X->data(), P->as<int32_t>(), F->as<float>(), rows, shape);
                  return {d.read_act(X, rows * heads * hd)};
                });
      }
  }
  check_attention(report, cpu, gpu, rng, "prompt 45 + trie 60, GQA 6/2, hd 64", 45, 60, 6, 2, 64, 0);
  check_attention(report, cpu, gpu, rng, "prompt 70 + trie 40, MHA 4, hd 128", 70, 40, 4, 4, 128, 0);
  check_attention(report, cpu, gpu, rng, "session: last 20 of 90 rows, GQA 32/1, hd 64", 50, 40, 32, 1, 64, 70);
  check_attention(report, cpu, gpu, rng, "prompt 33 + trie 20, GQA 4/2, hd 256", 33, 20, 4, 2, 256, 0);
  // Many query rows per key tile and more than one chunk of rows (the key-major dk / dv pass).
  check_attention(report, cpu, gpu, rng, "long prompt 300 + trie 30, GQA 8/2, hd 128", 300, 30, 8, 2, 128, 0);
  for (int64_t n : {10000, 999}) {
    const auto g = rng.normal(n, 2.f), u = rng.normal(n), dh = rng.normal(n);
    const std::string name = "swiglu " + std::to_string(n);
    compare(report, cpu, gpu, name + " forward", {"h"}, {1e-2}, [&](Dev& d) -> Outputs {
      auto G = d.act(g), U = d.act(u), H = d.act_zeros(n);
      d.be.swiglu_forward(G->data(), U->data(), H->data(), n);
      return {d.read_act(H, n)};
    });
    compare(report, cpu, gpu, name + " backward", {"dgate", "dup"}, {1e-2, 1e-2}, [&](Dev& d) -> Outputs {
      auto G = d.act(g), U = d.act(u), DH = d.act(dh), DG = d.act_zeros(n), DU = d.act_zeros(n);
      d.be.swiglu_backward(DH->data(), G->data(), U->data(), DG->data(), DU->data(), n);
      return {d.read_act(DG, n), d.read_act(DU, n)};
    });
  }
  {
    const int64_t n = 4099;
    const auto y = rng.normal(n), x = rng.normal(n);
    compare(report, cpu, gpu, "residual add 4099", {"y"}, {1e-2}, [&](Dev& d) -> Outputs {
      auto Y = d.act(y), X = d.act(x);
      d.be.add_inplace(Y->data(), X->data(), n);
      return {d.read_act(Y, n)};
    });
  }
  check_logprobs(report, cpu, gpu, rng, ObjectiveKind::CE, "CE");
  check_logprobs(report, cpu, gpu, rng, ObjectiveKind::GEM_LINEAR, "GEM linear");
  check_logprobs(report, cpu, gpu, rng, ObjectiveKind::GEM_LOGSIGMOID, "GEM logsigmoid");
  check_sampling(report, cpu, gpu, rng);
  {
    const int64_t n = 10007;
    const auto p0 = rng.normal(n), g = rng.normal(n, 0.1f), m0 = rng.normal(n, 0.01f);
    std::vector<float> v0 = rng.normal(n, 0.01f);
    for (float& v : v0) v = v * v;
    // Both f32: the tolerance is f32's.
    compare(report, cpu, gpu, "adamw 10007 x 3 steps", {"param", "m", "v"}, {1e-5, 1e-5, 1e-5}, [&](Dev& d) -> Outputs {
      auto P = d.f32(p0), G = d.f32(g), M = d.f32(m0), V = d.f32(v0);
      for (int step = 1; step <= 3; ++step) {
        AdamWParams hp;
        hp.lr = 1e-3f;
        hp.step = step;
        hp.grad_scale = 0.5f;
        d.be.adamw_update(P->as<float>(), G->as<float>(), M->as<float>(), V->as<float>(), n, hp);
      }
      return {d.read_f32(P, n), d.read_f32(M, n), d.read_f32(V, n)};
    });
    Dev c{cpu}, gd{gpu};
    auto gc = c.f32(g), gg = gd.f32(g);
    const double sc = cpu.sum_squares(gc->as<float>(), n), sg = gpu.sum_squares(gg->as<float>(), n);
    report.check("sum of squares 10007 (double accumulation)", std::abs(sg - sc) / sc, 1e-9);
    // Many tensors in one pass: more than one launch's 128, empty ones among them.
    std::vector<BufferPtr> cb, gb;
    std::vector<const float*> cx, gx;
    std::vector<int64_t> ns;
    for (int i = 0; i < 300; ++i) {
      const auto x = rng.normal(i % 7 == 0 ? 0 : 1 + (i * 37) % 5000, 1.f + i % 5);
      cb.push_back(c.f32(x));
      gb.push_back(gd.f32(x));
      cx.push_back(cb.back()->as<float>());
      gx.push_back(gb.back()->as<float>());
      ns.push_back(static_cast<int64_t>(x.size()));
    }
    const double mc = cpu.sum_squares_many(cx.data(), ns.data(), 300), mg = gpu.sum_squares_many(gx.data(), ns.data(), 300);
    report.check("sum of squares of 300 tensors in one pass", std::abs(mg - mc) / mc, 1e-9);
  }
  {
    // Out of memory: a typed error naming the allocation, and the backend still works after.
    bool typed = false;
    std::string message;
    try {
      gpu.alloc(size_t{1} << 50, "a 1 PiB test buffer");
    } catch (const Error& e) {
      typed = e.code() == ErrorCode::OUT_OF_MEMORY;
      message = e.what();
    }
    report.expect("a 1 PiB allocation throws OUT_OF_MEMORY naming it",
                  typed && message.find("a 1 PiB test buffer") != std::string::npos, message.substr(0, 90));
    Dev g{gpu};
    const std::vector<float> values = {1.f, 2.f, 3.f};
    auto b = g.f32(values);
    report.expect("the backend works after running out of memory", g.read_f32(b, 3) == values);
  }
  CudaExtras::set_chunk_logits(gpu, int64_t{1} << 23);
}

}  // namespace check
}  // namespace diffuse
