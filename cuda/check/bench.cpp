// Part (c): throughput. Peaks first (an 8192^3 bf16 GEMM on cuBLASLt and a 2 GiB
// device-to-device copy), then each kernel's achieved rate as a fraction of them, the LoRA
// linear layer against the plain GEMM of the same shape, the fused log-probs against the
// LM-head GEMM alone, and whole training steps on Llama-2-13B shapes (random init).
// Times are medians of host-clocked runs that end in a synchronize; each run is long enough
// (or repeated enough) that launch overhead is small against it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "check/check.h"
#include "engine/adapter.h"
#include "engine/config.h"
#include "engine/errors.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace diffuse {
namespace check {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

ModelConfig llama2(bool big) {
  ModelConfig c;
  c.hidden = big ? 5120 : 4096;
  c.intermediate = big ? 13824 : 11008;
  c.layers = big ? 40 : 32;
  c.heads = big ? 40 : 32;
  c.kv_heads = c.heads;
  c.head_dim = 128;
  c.vocab = 32000;
  c.rms_eps = 1e-5;
  c.rope_theta = 10000;
  return c;
}

BufferPtr normal_act(Backend& be, int64_t n, uint64_t seed, float std = 1.f) {
  return be.make_weight_init("normal", n, std, seed, "benchmark input");
}

Json rate(const std::string& name, double seconds, double flops, double bytes, const Peaks& peaks) {
  Json o = Json::object();
  o.add("name", name).add("ms", seconds * 1e3);
  if (flops > 0) {
    const double tflops = flops / seconds / 1e12;
    o.add("tflops", tflops).add("fraction_of_gemm_peak", tflops / peaks.gemm_tflops);
    std::printf("  %-58s %9.3f ms  %7.1f TFLOP/s  (%4.1f%% of GEMM peak)\n", name.c_str(), seconds * 1e3, tflops,
                100 * tflops / peaks.gemm_tflops);
  } else {
    const double gbs = bytes / seconds / 1e9;
    o.add("gbs", gbs).add("fraction_of_copy_peak", gbs / peaks.copy_gbs);
    std::printf("  %-58s %9.3f ms  %7.0f GB/s     (%4.1f%% of copy peak)\n", name.c_str(), seconds * 1e3, gbs,
                100 * gbs / peaks.copy_gbs);
  }
  std::fflush(stdout);
  return o;
}

// A realistic tree: a 40-token prompt and a trie of `targets` answers.
Batch workload(Rng& rng, int targets, int max_len, int first_choices, int32_t vocab) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(rng.integer(3, vocab - 1));
  const auto t = random_targets(rng, targets, max_len, first_choices, vocab, 2);
  return trie_batch(prompt, t, std::vector<float>(t.size(), 1.f / t.size()));
}

// Key lists of a batch (root-first ancestors and self), as the graph makes them.
void key_lists(const Batch& b, std::vector<int32_t>& offsets, std::vector<int32_t>& keys) {
  offsets.assign(1, 0);
  keys.clear();
  for (size_t r = 0; r < b.parents.size(); ++r) {
    std::vector<int32_t> path;
    for (int32_t n = static_cast<int32_t>(r); n >= 0; n = b.parents[n]) path.push_back(n);
    keys.insert(keys.end(), path.rbegin(), path.rend());
    offsets.push_back(static_cast<int32_t>(keys.size()));
  }
}

}  // namespace

Peaks measure_peaks() {
  std::unique_ptr<Backend> gpu = make_gpu();
  Peaks p;
  {
    const int64_t n = 8192;
    BufferPtr x = normal_act(*gpu, n * n, 1), w = normal_act(*gpu, n * n, 2, 0.02f), y = gpu->alloc(n * n * 2, "y");
    const LinearWeight W{w->data(), nullptr, n, n};
    const double t = time_op(*gpu, [&] { gpu->linear_forward(x->data(), W, LoraParams{}, y->data(), nullptr, n); }, 9, 3, 4);
    p.gemm_tflops = 2.0 * n * n * n / t / 1e12;
  }
  {
    const size_t bytes = size_t{2} << 30;
    BufferPtr a = normal_act(*gpu, bytes / 2, 3), b = gpu->alloc(bytes, "copy target");
    const double t = time_op(*gpu, [&] { gpu->copy(b->data(), a->data(), bytes); }, 9, 2, 4);
    p.copy_gbs = 2.0 * bytes / t / 1e9;  // read + write
  }
  std::printf("  peaks: bf16 GEMM 8192^3 %.0f TFLOP/s; device-to-device copy %.0f GB/s (read + write)\n", p.gemm_tflops,
              p.copy_gbs);
  return p;
}

Json bench_kernels(Backend& gpu, const Peaks& peaks, bool quick) {
  std::printf("(c) kernels on Llama-2-13B shapes (d 5120, I 13824, 40 heads x 128), 2048 rows\n");
  Json out = Json::array();
  const int64_t T = 2048, d = 5120, I = 13824, H = 40, hd = 128;
  uint64_t seed = 100;
  BufferPtr x = normal_act(gpu, T * d, seed++), y = normal_act(gpu, T * d, seed++), dy = normal_act(gpu, T * d, seed++);
  BufferPtr w = gpu.make_weight_init("ones", d, 0, 0, "norm weight");
  BufferPtr rstd = gpu.alloc(T * sizeof(float), "rstd");
  out.push(rate("rmsnorm forward", time_op(gpu, [&] { gpu.rmsnorm_forward(x->data(), w->data(), y->data(), rstd->as<float>(), T, d, 1e-5f); }, 9, 2, 20),
                0, 2.0 * T * d * 2, peaks));
  out.push(rate("rmsnorm backward", time_op(gpu, [&] { gpu.rmsnorm_backward(dy->data(), x->data(), w->data(), rstd->as<float>(), y->data(), T, d); }, 9, 2, 20),
                0, 4.0 * T * d * 2, peaks));
  out.push(rate("residual add", time_op(gpu, [&] { gpu.add_inplace(y->data(), x->data(), T * d); }, 9, 2, 20), 0, 3.0 * T * d * 2, peaks));
  {
    std::vector<int32_t> tok(T), pos(T);
    Rng rng(5);
    for (int64_t i = 0; i < T; ++i) tok[i] = rng.integer(0, 31999), pos[i] = static_cast<int32_t>(i);
    Dev dv{gpu};
    BufferPtr tokens = dv.i32(tok), positions = dv.i32(pos);
    BufferPtr table = normal_act(gpu, 32000 * d, seed++);
    out.push(rate("embedding", time_op(gpu, [&] { gpu.embedding_forward(tokens->as<int32_t>(), table->data(), y->data(), T, d); }, 9, 2, 20),
                  0, 2.0 * T * d * 2, peaks));
    std::vector<float> inv(hd / 2);
    for (int i = 0; i < hd / 2; ++i) inv[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / hd));
    BufferPtr inv_freq = dv.f32(inv);
    out.push(rate("rope forward (q)", time_op(gpu, [&] { gpu.rope_forward(x->data(), positions->as<int32_t>(), inv_freq->as<float>(), T, RopeShape{static_cast<int>(H), static_cast<int>(hd), static_cast<int>(hd), 1.f}); }, 9, 2, 20),
                  0, 2.0 * T * d * 2, peaks));
  }
  {
    BufferPtr g = normal_act(gpu, T * I, seed++), u = normal_act(gpu, T * I, seed++), h = gpu.alloc(T * I * 2, "h");
    BufferPtr dg = gpu.alloc(T * I * 2, "dg"), du = gpu.alloc(T * I * 2, "du");
    out.push(rate("swiglu forward", time_op(gpu, [&] { gpu.swiglu_forward(g->data(), u->data(), h->data(), T * I); }, 9, 2, 10), 0, 3.0 * T * I * 2, peaks));
    out.push(rate("swiglu backward", time_op(gpu, [&] { gpu.swiglu_backward(h->data(), g->data(), u->data(), dg->data(), du->data(), T * I); }, 9, 2, 10),
                  0, 5.0 * T * I * 2, peaks));
  }
  {
    BufferPtr wq = normal_act(gpu, d * d, seed++, 0.02f), q = gpu.alloc(T * d * 2, "q");
    const LinearWeight W{wq->data(), nullptr, d, d};
    out.push(rate("linear 5120 -> 5120 (cuBLASLt)", time_op(gpu, [&] { gpu.linear_forward(x->data(), W, LoraParams{}, q->data(), nullptr, T); }, 9, 2, 5),
                  2.0 * T * d * d, 0, peaks));
  }
  // Attention on two shapes: a long causal prompt, and the trie workload (200 answers).
  for (int shape = 0; shape < (quick ? 1 : 2); ++shape) {
    Rng rng(9);
    Batch b;
    if (shape == 0) {
      b = workload(rng, 200, 3, 40, 32000);
    } else {
      for (int64_t i = 0; i < T; ++i) b.parents.push_back(static_cast<int32_t>(i) - 1);
    }
    std::vector<int32_t> offsets, keys;
    key_lists(b, offsets, keys);
    const int64_t rows = static_cast<int64_t>(b.parents.size());
    Dev dv{gpu};
    BufferPtr off = dv.i32(offsets), kr = dv.i32(keys);
    BufferPtr q = normal_act(gpu, rows * d, seed++), k = normal_act(gpu, rows * d, seed++), v = normal_act(gpu, rows * d, seed++);
    BufferPtr o = gpu.alloc(rows * d * 2, "o"), lse = gpu.alloc(rows * H * 4, "lse"), dq = gpu.alloc(rows * d * 2, "dq"),
              dk = gpu.alloc(rows * d * 2, "dk"), dvv = gpu.alloc(rows * d * 2, "dv");
    AttentionShape s{rows, rows, static_cast<int>(H), static_cast<int>(H), static_cast<int>(hd), static_cast<float>(1 / std::sqrt(128.0))};
    const double pairs = static_cast<double>(keys.size()) * H;
    const std::string label = shape == 0 ? "trie of 200 answers (" + std::to_string(rows) + " rows)" : "causal 2048";
    out.push(rate("attention forward, " + label,
                  time_op(gpu, [&] { gpu.attention_forward(q->data(), k->data(), v->data(), off->as<int32_t>(), kr->as<int32_t>(), s, o->data(), lse->as<float>()); }, 9, 2, 5),
                  4.0 * pairs * hd, 0, peaks));
    out.push(rate("attention backward, " + label,
                  time_op(gpu, [&] { gpu.attention_backward(y->data(), q->data(), k->data(), v->data(), o->data(), lse->as<float>(), off->as<int32_t>(), kr->as<int32_t>(), s, dq->data(), dk->data(), dvv->data()); }, 9, 2, 5),
                  8.0 * pairs * hd, 0, peaks));
  }
  {
    const int64_t n = 50'000'000;
    BufferPtr p = gpu.alloc(n * 4, "p"), g = gpu.alloc(n * 4, "g"), m = gpu.alloc(n * 4, "m"), v = gpu.alloc(n * 4, "v");
    for (BufferPtr* b : {&p, &g, &m, &v}) gpu.zero((*b)->data(), n * 4);
    AdamWParams hp;
    out.push(rate("adamw (50M f32 parameters)", time_op(gpu, [&] { gpu.adamw_update(p->as<float>(), g->as<float>(), m->as<float>(), v->as<float>(), n, hp); }, 9, 2, 5),
                  0, 7.0 * n * 4, peaks));
    out.push(rate("sum of squares (50M f32)", time_op(gpu, [&] { gpu.sum_squares(g->as<float>(), n); }, 9, 2, 5), 0, 4.0 * n, peaks));
  }
  return out;
}

Json bench_lora(Backend& gpu, const Peaks& peaks, bool quick) {
  std::printf("(c) LoRA linear vs the plain cuBLASLt GEMM of the same shape (target <= 10%% overhead)\n");
  struct Shape {
    const char* model;
    const char* module;
    int64_t in, out;
  };
  std::vector<Shape> shapes = {{"llama-2-13b", "q/k/v/o", 5120, 5120}, {"llama-2-13b", "gate/up", 5120, 13824},
                               {"llama-2-13b", "down", 13824, 5120}};
  if (!quick) shapes.insert(shapes.begin(), {{"llama-2-7b", "q/k/v/o", 4096, 4096}, {"llama-2-7b", "gate/up", 4096, 11008},
                                             {"llama-2-7b", "down", 11008, 4096}});
  // 64 rows: the RNG task's size, where the rank-r launches weigh most against the weight reads.
  const std::vector<int64_t> row_counts = quick ? std::vector<int64_t>{64, 2048} : std::vector<int64_t>{64, 512, 2048};
  Json out = Json::array();
  uint64_t seed = 500;
  for (int64_t T : row_counts) {
    for (const Shape& sh : shapes) {
      BufferPtr x = normal_act(gpu, T * sh.in, seed++), w = normal_act(gpu, sh.out * sh.in, seed++, 0.02f);
      BufferPtr y = gpu.alloc(T * sh.out * 2, "y"), dy = normal_act(gpu, T * sh.out, seed++), dx = gpu.alloc(T * sh.in * 2, "dx");
      const LinearWeight W{w->data(), nullptr, sh.out, sh.in};
      CudaExtras::set_linear_kernel(gpu, "cublaslt");
      const double plain_f = time_op(gpu, [&] { gpu.linear_forward(x->data(), W, LoraParams{}, y->data(), nullptr, T); }, 9, 2, 5);
      const double plain_b = time_op(gpu, [&] { gpu.linear_backward(dy->data(), x->data(), W, LoraParams{}, nullptr, dx->data(), false, LoraGrads{}, T); }, 9, 2, 5);
      const double gflop = 2.0 * T * sh.in * sh.out / 1e9;
      std::printf("  %s %s %lldx%lld, %lld rows: plain forward %.3f ms (%.0f TFLOP/s), backward dx %.3f ms\n", sh.model, sh.module,
                  static_cast<long long>(sh.in), static_cast<long long>(sh.out), static_cast<long long>(T), plain_f * 1e3,
                  gflop / plain_f / 1e3, plain_b * 1e3);
      for (int r : {4, 16, 64}) {
        Dev dv{gpu};
        Rng rng(seed++);
        BufferPtr A = dv.f32(rng.normal(r * sh.in, 0.01f)), B = dv.f32(rng.normal(sh.out * r, 0.01f));
        BufferPtr u = gpu.alloc(T * r * 4, "u"), dA = gpu.alloc(r * sh.in * 4, "dA"), dB = gpu.alloc(sh.out * r * 4, "dB");
        gpu.zero(dA->data(), dA->bytes());
        gpu.zero(dB->data(), dB->bytes());
        BufferPtr packed;  // as an adapter holds them: packed once per optimiser step
        gpu.pack_lora(A->as<float>(), B->as<float>(), sh.in, sh.out, r, packed);
        const LoraParams lp{A->as<float>(), B->as<float>(), r, 2.f, packed->data()};
        const LoraGrads lg{dA->as<float>(), dB->as<float>()};
        for (const char* kernel : {"cublaslt", "fused"}) {
          CudaExtras::set_linear_kernel(gpu, kernel);
          const double f = time_op(gpu, [&] { gpu.linear_forward(x->data(), W, lp, y->data(), u->as<float>(), T); }, 9, 2, 5);
          const double b = time_op(gpu, [&] { gpu.linear_backward(dy->data(), x->data(), W, lp, u->as<float>(), dx->data(), false, lg, T); }, 9, 2, 5);
          Json o = Json::object();
          o.add("model", sh.model).add("module", sh.module).add("in", sh.in).add("out", sh.out).add("rows", T).add("rank", r);
          o.add("kernel", kernel).add("plain_forward_ms", plain_f * 1e3).add("plain_backward_ms", plain_b * 1e3);
          o.add("forward_ms", f * 1e3).add("backward_ms", b * 1e3);
          o.add("forward_overhead", f / plain_f - 1).add("backward_overhead", b / plain_b - 1);
          o.add("step_overhead", (f + b) / (plain_f + plain_b) - 1);
          out.push(o);
          std::printf("    r=%-2d %-8s forward %+6.1f%%  backward (with dA, dB) %+6.1f%%  together %+6.1f%%\n", r, kernel,
                      100 * (f / plain_f - 1), 100 * (b / plain_b - 1), 100 * ((f + b) / (plain_f + plain_b) - 1));
        }
      }
      std::fflush(stdout);
    }
  }
  CudaExtras::set_linear_kernel(gpu, "cublaslt");
  return out;
}

Json bench_logprobs(Backend& gpu, const Peaks& peaks, bool quick) {
  std::printf("(c) fused log-probs vs the LM-head GEMM alone (Llama-2-13B head, V 32000, d 5120; target <= 1.3x)\n");
  const int64_t V = 32000, d = 5120;
  Json out = Json::array();
  uint64_t seed = 900;
  BufferPtr head = normal_act(gpu, V * d, seed++, 0.02f);
  const LinearWeight W{head->data(), nullptr, V, d};
  for (int64_t P : quick ? std::vector<int64_t>{512} : std::vector<int64_t>{128, 512, 2048}) {
    const int64_t rows = P, E = 2 * P;
    Rng rng(seed++);
    std::vector<int32_t> parent_rows(P), edge_parent(E), edge_token(E);
    for (int64_t p = 0; p < P; ++p) parent_rows[p] = static_cast<int32_t>(p);
    for (int64_t e = 0; e < E; ++e) edge_parent[e] = static_cast<int32_t>(e % P), edge_token[e] = rng.integer(0, V - 1);
    Dev dv{gpu};
    BufferPtr hidden = normal_act(gpu, rows * d, seed++), dh = gpu.alloc(rows * d * 2, "dhidden");
    gpu.zero(dh->data(), dh->bytes());
    BufferPtr pr = dv.i32(parent_rows), ep = dv.i32(edge_parent), et = dv.i32(edge_token), ew = dv.f32(std::vector<float>(E, 0.5f));
    const EdgeSet es{pr->as<int32_t>(), static_cast<int32_t>(P), ep->as<int32_t>(), et->as<int32_t>(), ew->as<float>(), static_cast<int32_t>(E)};
    BufferPtr logp = gpu.alloc(E * 4, "logp"), loss = gpu.alloc(E * 4, "loss"), ps = gpu.alloc(P * 2 * 4, "ps"), est = gpu.alloc(E * 2 * 4, "es");
    BufferPtr logits = gpu.alloc(P * V * 2, "logits");
    const double gemm = time_op(gpu, [&] { gpu.linear_forward(hidden->data(), W, LoraParams{}, logits->data(), nullptr, P); }, 9, 2, 3);
    Json o = Json::object();
    o.add("parents", P).add("edges", E).add("head_gemm_ms", gemm * 1e3);
    std::printf("  %lld parents: LM-head GEMM alone %.3f ms (%.0f TFLOP/s)\n", static_cast<long long>(P), gemm * 1e3,
                2.0 * P * V * d / gemm / 1e12);
    for (ObjectiveKind kind : {ObjectiveKind::CE, ObjectiveKind::GEM_LOGSIGMOID}) {
      Objective obj;
      obj.kind = kind;
      const double f = time_op(gpu, [&] { gpu.logprobs_forward(hidden->data(), W, es, obj, logp->as<float>(), loss->as<float>(), ps->as<float>(), est->as<float>()); }, 9, 2, 3);
      const double b = time_op(gpu, [&] { gpu.logprobs_backward(hidden->data(), W, es, obj, ps->as<float>(), est->as<float>(), dh->data()); }, 9, 2, 3);
      // The forward is one head GEMM per pass (two for GEM), the backward two (recompute, dH).
      const double gemms_f = kind == ObjectiveKind::CE ? 1 : 2;
      const std::string k = kind == ObjectiveKind::CE ? "ce" : "gem_logsigmoid";
      o.add(k + "_forward_ms", f * 1e3).add(k + "_backward_ms", b * 1e3);
      o.add(k + "_forward_vs_gemms", f / (gemms_f * gemm)).add(k + "_backward_vs_gemms", b / (2 * gemm));
      std::printf("    %-15s forward %.3f ms = %.2fx its %g GEMM(s); backward %.3f ms = %.2fx its 2 GEMMs\n", k.c_str(), f * 1e3,
                  f / (gemms_f * gemm), gemms_f, b * 1e3, b / (2 * gemm));
    }
    out.push(o);
    std::fflush(stdout);
  }
  (void)peaks;
  return out;
}

Json bench_steps(const Peaks& peaks, bool quick, const std::vector<TokenTask>& token_tasks) {
  std::printf("(c) full training steps, Llama-2-13B shapes, random init, LoRA r=4 on all 7 modules\n");
  Json out = Json::array();
  const ModelConfig c = llama2(true);
  std::unique_ptr<Backend> be = make_gpu();
  Backend* raw = be.get();
  const auto t0 = std::chrono::steady_clock::now();
  Model model(std::move(be), c, init_sources(c, 2024, 0.02));
  model.backend().synchronize();
  std::printf("  model made on the device in %.1f s (%.1f GiB of bf16 weights); default activation budget %.1f GiB\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), model.weight_bytes() / kGiB,
              model.activation_budget() / kGiB);
  AdapterOptions opts;
  opts.rank = 4;
  opts.alpha = 8;
  Adapter adapter(model.backend(), c, opts);

  // The built-in workloads, or the token tasks both stacks train on (bench/gpu/peft_side.py).
  struct Task {
    std::string name;
    Batch batch;
  };
  std::vector<Task> tasks;
  if (token_tasks.empty()) {
    Rng rng(31);
    tasks.push_back({"rng 1-10 (10 targets, 40-token prompt)", workload(rng, 10, 1, 10, static_cast<int32_t>(c.vocab))});
    tasks.push_back({"baby names (200 targets, 40-token prompt)", workload(rng, 200, 3, 40, static_cast<int32_t>(c.vocab))});
  }
  for (const TokenTask& t : token_tasks) {
    for (const auto& target : t.targets)
      for (int32_t id : target) require(id < c.vocab, "token task " + t.name + ": a token id is past the vocabulary (32000)");
    tasks.push_back({t.name, trie_batch(t.prompt, t.targets, t.weights)});
  }
  const int64_t lin_params = c.hidden * c.q_dim() + 2 * c.hidden * c.kv_dim() + c.q_dim() * c.hidden + 3 * c.hidden * c.intermediate;
  // sum over the seven adapted modules of (in + out): the rank-r products cost 2 T r (in + out)
  // forward (u, its term) and twice that backward (g, s g A, dA, dB).
  const int64_t lora_dims = (c.hidden + c.q_dim()) + 2 * (c.hidden + c.kv_dim()) + (c.q_dim() + c.hidden) +
                            2 * (c.hidden + c.intermediate) + (c.intermediate + c.hidden);
  AdamWParams hp;
  hp.lr = 5e-5;
  for (const Task& task : tasks) {
    const Batch& batch = task.batch;
    std::vector<int32_t> offsets, keys;
    key_lists(batch, offsets, keys);
    const double T = static_cast<double>(batch.tokens.size());
    std::set<int32_t> parents(batch.edge_rows.begin(), batch.edge_rows.end());
    const double P = static_cast<double>(parents.size());
    // Model FLOPs of a step (recomputation not counted): the linear layers forward and their
    // input gradients, the rank-r products, attention, and the LM head at parent rows.
    const double flops = 4.0 * T * c.layers * lin_params + 2.0 * T * opts.rank * lora_dims * c.layers * 3 +
                         12.0 * keys.size() * c.heads * c.head_dim * c.layers + 6.0 * P * c.vocab * c.hidden;
    // One optimiser step as lib/train runs it: zero the gradients, forward + backward, the
    // global gradient norm (one wait), the clipped AdamW update (which repacks A and B).
    double loss = 0, norm = 0;
    auto optimiser_step = [&](double& step_s) {
      adapter.zero_grads();
      const auto s0 = std::chrono::steady_clock::now();
      const StepResult r = model.step(batch, adapter, Objective{});
      model.backend().synchronize();
      step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
      loss = r.loss;
      norm = std::sqrt(adapter.grad_sum_squares());
      hp.grad_scale = std::min(1.0, 1.0 / (norm + 1e-6));
      adapter.adamw_step(hp);
      hp.step += 1;
      return r.recomputed_layers;
    };
    double ignored = 0;
    for (int i = 0; i < 2; ++i) optimiser_step(ignored);
    CudaExtras::reset_peak(*raw);
    std::vector<double> step_times, total_times;
    int64_t recomputed = 0;
    for (int i = 0; i < (quick ? 3 : 7); ++i) {
      const auto s0 = std::chrono::steady_clock::now();
      double step_s = 0;
      recomputed = optimiser_step(step_s);
      model.backend().synchronize();
      total_times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
      step_times.push_back(step_s);
    }
    std::sort(step_times.begin(), step_times.end());
    std::sort(total_times.begin(), total_times.end());
    const double t = step_times[step_times.size() / 2], total = total_times[total_times.size() / 2];
    size_t in_use = 0, peak = 0, reserved = 0;
    CudaExtras::memory(*raw, &in_use, &peak, &reserved);
    const double mfu = flops / t / 1e12 / peaks.gemm_tflops;
    Json o = Json::object();
    o.add("task", task.name).add("rows", static_cast<int64_t>(T)).add("edges", static_cast<int64_t>(batch.edge_rows.size()));
    o.add("parents", static_cast<int64_t>(P)).add("step_ms", t * 1e3).add("optimiser_step_ms", total * 1e3);
    o.add("peak_gib", peak / kGiB).add("reserved_gib", reserved / kGiB).add("activation_budget_gib", model.activation_budget() / kGiB);
    o.add("model_tflop", flops / 1e12).add("tflops", flops / t / 1e12).add("mfu", mfu).add("recomputed_layers", recomputed);
    o.add("last_loss", loss).add("last_grad_norm", norm);
    out.push(o);
    std::printf("  %-44s %5.0f rows %5zu edges: step %8.2f ms (with norm + AdamW %8.2f ms), %.2f TFLOP -> %.0f TFLOP/s, MFU %.1f%%, "
                "peak %.1f GiB%s\n",
                task.name.c_str(), T, batch.edge_rows.size(), t * 1e3, total * 1e3, flops / 1e12, flops / t / 1e12, 100 * mfu,
                peak / kGiB, recomputed ? (", " + std::to_string(recomputed) + " layers recomputed").c_str() : "");
    std::fflush(stdout);
  }
  return out;
}

}  // namespace check
}  // namespace diffuse
