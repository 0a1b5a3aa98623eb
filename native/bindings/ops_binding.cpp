// ops(device): every backend op on host arrays, for kernel tests and micro-benchmarks. Each
// call uploads its inputs, runs the op, waits, and returns fresh arrays; it runs on the
// calling thread (these are measuring tools, not the product's path). Inputs are f32
// Float32Arrays (converted to the backend's activation / weight types), indices Int32Arrays.
#include <napi.h>

#include <cmath>
#include <cstring>

#include "bindings/common.h"
#include "cpu/gemm.h"
#include "cpu/thread_pool.h"
#include "engine/devices.h"
#include "io/dequant.h"

namespace diffuse {
namespace {

class OpsWrap : public Napi::ObjectWrap<OpsWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeOps",
                       {InstanceMethod("device", &OpsWrap::Device), InstanceMethod("embeddingForward", &OpsWrap::EmbeddingForward),
                        InstanceMethod("rmsnormForward", &OpsWrap::RmsnormForward), InstanceMethod("rmsnormBackward", &OpsWrap::RmsnormBackward),
                        InstanceMethod("linearForward", &OpsWrap::LinearForward), InstanceMethod("linearBackward", &OpsWrap::LinearBackward),
                        InstanceMethod("ropeForward", &OpsWrap::RopeForward), InstanceMethod("ropeBackward", &OpsWrap::RopeBackward),
                        InstanceMethod("attentionForward", &OpsWrap::AttentionForward),
                        InstanceMethod("attentionBackward", &OpsWrap::AttentionBackward),
                        InstanceMethod("swigluForward", &OpsWrap::SwigluForward), InstanceMethod("swigluBackward", &OpsWrap::SwigluBackward),
                        InstanceMethod("gegluForward", &OpsWrap::GegluForward), InstanceMethod("gegluBackward", &OpsWrap::GegluBackward),
                        InstanceMethod("scaleInplace", &OpsWrap::ScaleInplace),
                        InstanceMethod("addInplace", &OpsWrap::AddInplace), InstanceMethod("logprobsForward", &OpsWrap::LogprobsForward),
                        InstanceMethod("logprobsBackward", &OpsWrap::LogprobsBackward), InstanceMethod("sample", &OpsWrap::Sample),
                        InstanceMethod("adamwUpdate", &OpsWrap::AdamwUpdate), InstanceMethod("sumSquares", &OpsWrap::SumSquares)});
  }

  explicit OpsWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<OpsWrap>(info) {
    const std::string device = info.Length() > 0 && info[0].IsString() ? info[0].ToString().Utf8Value() : "cpu";
    // The kernels run on the pool as it is (setThreads), so making an ops object resizes nothing.
    be_ = guard(info.Env(), [&] { return make_backend(device, thread_count()); });
  }

 private:
  // --- transfer helpers
  Napi::Env env_() const { return Env(); }
  BufferPtr act(const Napi::Value& v, const char* what) {
    std::vector<float> h = float32s(Env(), v, what);
    BufferPtr b = be_->alloc(std::max<size_t>(1, h.size()) * be_->act_elem_size(), what);
    be_->act_from_f32(b->data(), h.data(), static_cast<int64_t>(h.size()));
    return b;
  }
  BufferPtr act_zeros(size_t n, const char* what) {
    BufferPtr b = be_->alloc(std::max<size_t>(1, n) * be_->act_elem_size(), what);
    be_->zero(b->data(), b->bytes());
    return b;
  }
  BufferPtr weight(const Napi::Value& v, const char* what) {
    std::vector<float> h = float32s(Env(), v, what);
    return be_->make_weight(h.data(), static_cast<int64_t>(h.size()), what);
  }
  template <typename T>
  BufferPtr raw(const std::vector<T>& h, const char* what) {
    BufferPtr b = be_->alloc(std::max<size_t>(1, h.size()) * sizeof(T), what);
    if (!h.empty()) be_->upload(b->data(), h.data(), h.size() * sizeof(T));
    return b;
  }
  BufferPtr f32(const Napi::Value& v, const char* what) { return raw(float32s(Env(), v, what), what); }
  BufferPtr i32(const Napi::Value& v, const char* what) { return raw(int32s(Env(), v, what), what); }
  BufferPtr f32_zeros(size_t n, const char* what) {
    BufferPtr b = be_->alloc(std::max<size_t>(1, n) * sizeof(float), what);
    be_->zero(b->data(), b->bytes());
    return b;
  }
  Napi::Float32Array act_out(const Buffer& b, size_t n) {
    std::vector<float> h(n);
    be_->synchronize();
    be_->act_to_f32(h.data(), const_cast<Buffer&>(b).data(), static_cast<int64_t>(n));
    return to_float32(Env(), h);
  }
  Napi::Float32Array f32_out(const Buffer& b, size_t n) {
    std::vector<float> h(n);
    be_->download(h.data(), const_cast<Buffer&>(b).data(), n * sizeof(float));
    return to_float32(Env(), h);
  }
  static size_t len(const Napi::Value& v) { return v.As<Napi::TypedArray>().ElementLength(); }
  int64_t num(const Napi::Value& v) { return static_cast<int64_t>(v.As<Napi::Number>().DoubleValue()); }
  AttentionShape shape(const Napi::Value& v) {
    Napi::Object o = v.As<Napi::Object>();
    AttentionShape s;
    s.q_rows = static_cast<int64_t>(number_or(o, "qRows", 0));
    s.kv_rows = static_cast<int64_t>(number_or(o, "kvRows", 0));
    s.q_heads = static_cast<int>(number_or(o, "qHeads", 0));
    s.kv_heads = static_cast<int>(number_or(o, "kvHeads", 0));
    s.head_dim = static_cast<int>(number_or(o, "headDim", 0));
    s.scale = static_cast<float>(number_or(o, "scale", 1.0 / std::sqrt(static_cast<double>(s.head_dim))));
    s.softcap = static_cast<float>(number_or(o, "softcap", 0));
    return s;
  }
  Objective objective(const Napi::Value& v) {
    Objective o;
    if (!v.IsObject()) return o;
    Napi::Object obj = v.As<Napi::Object>();
    const std::string k = obj.Get("kind").IsString() ? obj.Get("kind").ToString().Utf8Value() : "ce";
    o.kind = k == "gem-linear" ? ObjectiveKind::GEM_LINEAR : k == "gem-logsigmoid" ? ObjectiveKind::GEM_LOGSIGMOID : ObjectiveKind::CE;
    o.beta = static_cast<float>(number_or(obj, "beta", 0.7));
    return o;
  }

  Napi::Value Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), be_->name()); }

  // embeddingForward(tokens, table, dim) -> out
  Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const int64_t rows = len(info[0]), dim = num(info[2]);
      auto tok = i32(info[0], "tokens");
      auto table = weight(info[1], "table");
      auto out = act_zeros(rows * dim, "out");
      be_->embedding_forward(tok->as<int32_t>(), table->data(), out->data(), rows, dim);
      return act_out(*out, rows * dim);
    });
  }

  // rmsnormForward(x, w, rows, dim, eps) -> { y, rstd }
  Napi::Value RmsnormForward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const int64_t rows = num(info[2]), dim = num(info[3]);
      auto x = act(info[0], "x");
      auto w = weight(info[1], "w");
      auto y = act_zeros(rows * dim, "y");
      auto rstd = f32_zeros(rows, "rstd");
      be_->rmsnorm_forward(x->data(), w->data(), y->data(), rstd->as<float>(), rows, dim, static_cast<float>(info[4].As<Napi::Number>().DoubleValue()));
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("y", act_out(*y, rows * dim));
      o.Set("rstd", f32_out(*rstd, rows));
      return o;
    });
  }

  // rmsnormBackward(dy, x, w, rstd, dxInitial, rows, dim) -> dx (accumulated onto dxInitial)
  Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const int64_t rows = num(info[5]), dim = num(info[6]);
      auto dy = act(info[0], "dy");
      auto x = act(info[1], "x");
      auto w = weight(info[2], "w");
      auto rstd = f32(info[3], "rstd");
      auto dx = act(info[4], "dx");
      be_->rmsnorm_backward(dy->data(), x->data(), w->data(), rstd->as<float>(), dx->data(), rows, dim);
      return act_out(*dx, rows * dim);
    });
  }

  // linearForward({ x, w, bias?, A?, B?, rank, scale, rows, inFeatures, outFeatures }) -> { y, u }
  Napi::Value LinearForward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      Napi::Object o = info[0].As<Napi::Object>();
      const int64_t rows = num(o.Get("rows")), in = num(o.Get("inFeatures")), out = num(o.Get("outFeatures"));
      const int rank = static_cast<int>(number_or(o, "rank", 0));
      auto x = act(o.Get("x"), "x");
      auto w = weight(o.Get("w"), "w");
      BufferPtr bias = o.Get("bias").IsTypedArray() ? weight(o.Get("bias"), "bias") : nullptr;
      BufferPtr A = rank > 0 ? f32(o.Get("A"), "A") : nullptr;
      BufferPtr B = rank > 0 ? f32(o.Get("B"), "B") : nullptr;
      auto y = act_zeros(rows * out, "y");
      auto u = f32_zeros(rows * std::max(rank, 1), "u");
      LinearWeight W{w->data(), bias ? bias->data() : nullptr, out, in};
      LoraParams lora{A ? A->as<float>() : nullptr, B ? B->as<float>() : nullptr, rank, static_cast<float>(number_or(o, "scale", 1))};
      be_->linear_forward(x->data(), W, lora, y->data(), rank > 0 ? u->as<float>() : nullptr, rows);
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("y", act_out(*y, rows * out));
      r.Set("u", f32_out(*u, rank > 0 ? rows * rank : 0));
      return r;
    });
  }

  // linearBackward({ dy, x, w, A?, B?, u?, rank, scale, rows, inFeatures, outFeatures, dx?, dA?, dB? })
  //   -> { dx, dA, dB }; dx accumulates onto the given dx when present, dA / dB onto theirs.
  Napi::Value LinearBackward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      Napi::Object o = info[0].As<Napi::Object>();
      const int64_t rows = num(o.Get("rows")), in = num(o.Get("inFeatures")), out = num(o.Get("outFeatures"));
      const int rank = static_cast<int>(number_or(o, "rank", 0));
      auto dy = act(o.Get("dy"), "dy");
      auto x = act(o.Get("x"), "x");
      auto w = weight(o.Get("w"), "w");
      BufferPtr A = rank > 0 ? f32(o.Get("A"), "A") : nullptr;
      BufferPtr B = rank > 0 ? f32(o.Get("B"), "B") : nullptr;
      BufferPtr u = rank > 0 ? f32(o.Get("u"), "u") : nullptr;
      const bool accumulate = o.Get("dx").IsTypedArray();
      BufferPtr dx = accumulate ? act(o.Get("dx"), "dx") : act_zeros(rows * in, "dx");
      BufferPtr dA = rank > 0 ? (o.Get("dA").IsTypedArray() ? f32(o.Get("dA"), "dA") : f32_zeros(rank * in, "dA")) : nullptr;
      BufferPtr dB = rank > 0 ? (o.Get("dB").IsTypedArray() ? f32(o.Get("dB"), "dB") : f32_zeros(out * rank, "dB")) : nullptr;
      LinearWeight W{w->data(), nullptr, out, in};
      LoraParams lora{A ? A->as<float>() : nullptr, B ? B->as<float>() : nullptr, rank, static_cast<float>(number_or(o, "scale", 1))};
      LoraGrads grads{dA ? dA->as<float>() : nullptr, dB ? dB->as<float>() : nullptr};
      be_->linear_backward(dy->data(), x->data(), W, lora, u ? u->as<float>() : nullptr, dx->data(), accumulate, grads, rows);
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("dx", act_out(*dx, rows * in));
      r.Set("dA", dA ? f32_out(*dA, rank * in) : Napi::Float32Array::New(info.Env(), 0));
      r.Set("dB", dB ? f32_out(*dB, out * rank) : Napi::Float32Array::New(info.Env(), 0));
      return r;
    });
  }

  Napi::Value Rope(const Napi::CallbackInfo& info, bool forward) {
    return guard(info.Env(), [&]() -> Napi::Value {
      // (x, pos, invFreq, heads, headDim[, rotaryDim[, scale]]) -> rotated copy
      const int64_t rows = len(info[1]);
      const int heads = static_cast<int>(num(info[3])), hd = static_cast<int>(num(info[4]));
      const int rot = info.Length() > 5 && !info[5].IsUndefined() ? static_cast<int>(num(info[5])) : hd;
      const float scale = info.Length() > 6 && !info[6].IsUndefined() ? info[6].As<Napi::Number>().FloatValue() : 1.f;
      auto x = act(info[0], "x");
      auto pos = i32(info[1], "pos");
      auto inv = f32(info[2], "invFreq");
      const RopeShape shape{heads, hd, rot, scale};
      if (forward) be_->rope_forward(x->data(), pos->as<int32_t>(), inv->as<float>(), rows, shape);
      else be_->rope_backward(x->data(), pos->as<int32_t>(), inv->as<float>(), rows, shape);
      return act_out(*x, rows * heads * hd);
    });
  }
  Napi::Value RopeForward(const Napi::CallbackInfo& info) { return Rope(info, true); }
  Napi::Value RopeBackward(const Napi::CallbackInfo& info) { return Rope(info, false); }

  // attentionForward(q, k, v, keyOffsets, keyRows, shape) -> { out, lse }
  Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const AttentionShape s = shape(info[5]);
      auto q = act(info[0], "q");
      auto k = act(info[1], "k");
      auto v = act(info[2], "v");
      auto off = i32(info[3], "keyOffsets");
      auto rows = i32(info[4], "keyRows");
      const size_t n_out = s.q_rows * s.q_heads * s.head_dim;
      auto out = act_zeros(n_out, "out");
      auto lse = f32_zeros(s.q_rows * s.q_heads, "lse");
      be_->attention_forward(q->data(), k->data(), v->data(), off->as<int32_t>(), rows->as<int32_t>(), s, out->data(), lse->as<float>());
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("out", act_out(*out, n_out));
      r.Set("lse", f32_out(*lse, s.q_rows * s.q_heads));
      return r;
    });
  }

  // attentionBackward(dout, q, k, v, out, lse, keyOffsets, keyRows, shape) -> { dq, dk, dv }
  Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const AttentionShape s = shape(info[8]);
      auto dout = act(info[0], "dout");
      auto q = act(info[1], "q");
      auto k = act(info[2], "k");
      auto v = act(info[3], "v");
      auto out = act(info[4], "out");
      auto lse = f32(info[5], "lse");
      auto off = i32(info[6], "keyOffsets");
      auto rows = i32(info[7], "keyRows");
      const size_t nq = s.q_rows * s.q_heads * s.head_dim, nkv = s.kv_rows * s.kv_heads * s.head_dim;
      auto dq = act_zeros(nq, "dq");
      auto dk = act_zeros(nkv, "dk");
      auto dv = act_zeros(nkv, "dv");
      be_->attention_backward(dout->data(), q->data(), k->data(), v->data(), out->data(), lse->as<float>(), off->as<int32_t>(),
                              rows->as<int32_t>(), s, dq->data(), dk->data(), dv->data());
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("dq", act_out(*dq, nq));
      r.Set("dk", act_out(*dk, nkv));
      r.Set("dv", act_out(*dv, nkv));
      return r;
    });
  }

  // A gated activation h = act(gate) * up (SwiGLU, GeGLU): the same arguments, another kernel.
  using GatedForward = void (Backend::*)(const void*, const void*, void*, int64_t);
  using GatedBackward = void (Backend::*)(const void*, const void*, const void*, void*, void*, int64_t);

  Napi::Value Gated(const Napi::CallbackInfo& info, GatedForward forward) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const size_t n = len(info[0]);
      auto g = act(info[0], "gate");
      auto u = act(info[1], "up");
      auto h = act_zeros(n, "h");
      (be_.get()->*forward)(g->data(), u->data(), h->data(), static_cast<int64_t>(n));
      return act_out(*h, n);
    });
  }

  Napi::Value GatedGrad(const Napi::CallbackInfo& info, GatedBackward backward) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const size_t n = len(info[0]);
      auto dh = act(info[0], "dh");
      auto g = act(info[1], "gate");
      auto u = act(info[2], "up");
      auto dg = act_zeros(n, "dgate");
      auto du = act_zeros(n, "dup");
      (be_.get()->*backward)(dh->data(), g->data(), u->data(), dg->data(), du->data(), static_cast<int64_t>(n));
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("dgate", act_out(*dg, n));
      r.Set("dup", act_out(*du, n));
      return r;
    });
  }

  Napi::Value SwigluForward(const Napi::CallbackInfo& info) { return Gated(info, &Backend::swiglu_forward); }
  Napi::Value SwigluBackward(const Napi::CallbackInfo& info) { return GatedGrad(info, &Backend::swiglu_backward); }
  Napi::Value GegluForward(const Napi::CallbackInfo& info) { return Gated(info, &Backend::geglu_forward); }
  Napi::Value GegluBackward(const Napi::CallbackInfo& info) { return GatedGrad(info, &Backend::geglu_backward); }

  Napi::Value ScaleInplace(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const size_t n = len(info[0]);
      auto x = act(info[0], "x");
      be_->scale_inplace(x->data(), static_cast<float>(info[1].As<Napi::Number>().DoubleValue()), static_cast<int64_t>(n));
      return act_out(*x, n);
    });
  }

  Napi::Value AddInplace(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const size_t n = len(info[0]);
      auto y = act(info[0], "y");
      auto x = act(info[1], "x");
      be_->add_inplace(y->data(), x->data(), static_cast<int64_t>(n));
      return act_out(*y, n);
    });
  }

  struct EdgeBuffers {
    BufferPtr parent_rows, edge_parent, edge_token, edge_weight;
    EdgeSet set;
  };
  EdgeBuffers edges(const Napi::Object& o) {
    EdgeBuffers e;
    e.parent_rows = i32(o.Get("parentRows"), "parentRows");
    e.edge_parent = i32(o.Get("edgeParent"), "edgeParent");
    e.edge_token = i32(o.Get("edgeToken"), "edgeToken");
    e.set.parent_rows = e.parent_rows->as<int32_t>();
    e.set.n_parents = static_cast<int32_t>(len(o.Get("parentRows")));
    e.set.edge_parent = e.edge_parent->as<int32_t>();
    e.set.edge_token = e.edge_token->as<int32_t>();
    e.set.n_edges = static_cast<int32_t>(len(o.Get("edgeToken")));
    e.set.logit_softcap = static_cast<float>(number_or(o, "logitSoftcap", 0));
    if (o.Get("edgeWeight").IsTypedArray()) {
      e.edge_weight = f32(o.Get("edgeWeight"), "edgeWeight");
      e.set.edge_weight = e.edge_weight->as<float>();
    }
    return e;
  }

  // logprobsForward({ hidden, head, vocab, dim, parentRows, edgeParent, edgeToken, edgeWeight?, objective? })
  //   -> { edgeLogp, edgeLoss, parentStats, edgeStats }
  Napi::Value LogprobsForward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      Napi::Object o = info[0].As<Napi::Object>();
      const int64_t vocab = num(o.Get("vocab")), dim = num(o.Get("dim"));
      auto hidden = act(o.Get("hidden"), "hidden");
      auto head = weight(o.Get("head"), "head");
      EdgeBuffers e = edges(o);
      auto logp = f32_zeros(e.set.n_edges, "edgeLogp");
      auto loss = f32_zeros(e.set.n_edges, "edgeLoss");
      auto ps = f32_zeros(e.set.n_parents * kLogprobStats, "parentStats");
      auto es = f32_zeros(e.set.n_edges * kEdgeStats, "edgeStats");
      be_->logprobs_forward(hidden->data(), LinearWeight{head->data(), nullptr, vocab, dim}, e.set, objective(o.Get("objective")),
                            logp->as<float>(), loss->as<float>(), ps->as<float>(), es->as<float>());
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("edgeLogp", f32_out(*logp, e.set.n_edges));
      r.Set("edgeLoss", f32_out(*loss, e.set.n_edges));
      r.Set("parentStats", f32_out(*ps, e.set.n_parents * kLogprobStats));
      r.Set("edgeStats", f32_out(*es, e.set.n_edges * kEdgeStats));
      return r;
    });
  }

  // logprobsBackward({ ...as forward, edgeWeight, parentStats, edgeStats, dhidden }) -> dhidden (accumulated)
  Napi::Value LogprobsBackward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      Napi::Object o = info[0].As<Napi::Object>();
      const int64_t vocab = num(o.Get("vocab")), dim = num(o.Get("dim"));
      auto hidden = act(o.Get("hidden"), "hidden");
      auto head = weight(o.Get("head"), "head");
      EdgeBuffers e = edges(o);
      auto ps = f32(o.Get("parentStats"), "parentStats");
      auto es = f32(o.Get("edgeStats"), "edgeStats");
      auto dh = act(o.Get("dhidden"), "dhidden");
      be_->logprobs_backward(hidden->data(), LinearWeight{head->data(), nullptr, vocab, dim}, e.set, objective(o.Get("objective")),
                             ps->as<float>(), es->as<float>(), dh->data());
      return act_out(*dh, len(o.Get("dhidden")));
    });
  }

  // sample({ hidden, head, vocab, dim, rows, streams (Uint32Array), temperature, topK, topP, seed, step }) -> { tokens, logp }
  Napi::Value Sample(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      Napi::Object o = info[0].As<Napi::Object>();
      const int64_t vocab = num(o.Get("vocab")), dim = num(o.Get("dim"));
      auto hidden = act(o.Get("hidden"), "hidden");
      auto head = weight(o.Get("head"), "head");
      auto rows = i32(o.Get("rows"), "rows");
      const int64_t n = len(o.Get("rows"));
      auto s32 = vector_from<uint32_t, Napi::Uint32Array>(info.Env(), o.Get("streams"), "streams");
      auto streams = raw(std::vector<uint64_t>(s32.begin(), s32.end()), "streams");
      SampleParams p;
      p.temperature = static_cast<float>(number_or(o, "temperature", 1));
      p.top_k = static_cast<int>(number_or(o, "topK", 0));
      p.top_p = static_cast<float>(number_or(o, "topP", 1));
      p.seed = static_cast<uint64_t>(number_or(o, "seed", 0));
      p.logit_softcap = static_cast<float>(number_or(o, "logitSoftcap", 0));
      auto tok = be_->alloc(std::max<int64_t>(1, n) * sizeof(int32_t), "tokens");
      auto lp = f32_zeros(n, "logp");
      be_->sample(hidden->data(), LinearWeight{head->data(), nullptr, vocab, dim}, rows->as<int32_t>(), streams->as<uint64_t>(), n, p,
                  static_cast<uint64_t>(number_or(o, "step", 0)), tok->as<int32_t>(), lp->as<float>());
      std::vector<int32_t> t(n);
      be_->download(t.data(), tok->data(), n * sizeof(int32_t));
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("tokens", to_int32(info.Env(), t));
      r.Set("logp", f32_out(*lp, n));
      return r;
    });
  }

  // adamwUpdate(param, grad, m, v, params) -> { param, m, v }
  Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const size_t n = len(info[0]);
      auto p = f32(info[0], "param");
      auto g = f32(info[1], "grad");
      auto m = f32(info[2], "m");
      auto v = f32(info[3], "v");
      Napi::Object o = info[4].As<Napi::Object>();
      AdamWParams hp;
      hp.lr = number_or(o, "lr", hp.lr);
      hp.beta1 = number_or(o, "beta1", hp.beta1);
      hp.beta2 = number_or(o, "beta2", hp.beta2);
      hp.eps = number_or(o, "eps", hp.eps);
      hp.weight_decay = number_or(o, "weightDecay", hp.weight_decay);
      hp.step = static_cast<int64_t>(number_or(o, "step", 1));
      hp.grad_scale = number_or(o, "gradScale", 1);
      be_->adamw_update(p->as<float>(), g->as<float>(), m->as<float>(), v->as<float>(), static_cast<int64_t>(n), hp);
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("param", f32_out(*p, n));
      r.Set("m", f32_out(*m, n));
      r.Set("v", f32_out(*v, n));
      return r;
    });
  }

  // sumSquares(x) or sumSquares([x0, x1, ...]): one tensor, or the sum over many in one pass.
  Napi::Value SumSquares(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      if (!info[0].IsArray()) {
        auto x = f32(info[0], "x");
        return Napi::Number::New(info.Env(), be_->sum_squares(x->as<float>(), static_cast<int64_t>(len(info[0]))));
      }
      const Napi::Array list = info[0].As<Napi::Array>();
      std::vector<BufferPtr> bufs;
      std::vector<const float*> xs;
      std::vector<int64_t> ns;
      for (uint32_t i = 0; i < list.Length(); ++i) {
        bufs.push_back(f32(list.Get(i), "x[i]"));
        xs.push_back(bufs.back()->as<float>());
        ns.push_back(static_cast<int64_t>(len(list.Get(i))));
      }
      return Napi::Number::New(info.Env(), be_->sum_squares_many(xs.data(), ns.data(), static_cast<int>(xs.size())));
    });
  }

  std::unique_ptr<Backend> be_;
};

// gemm(kind, M, N, K, A, B, C?, extra?) on the CPU: kind 'nt' | 'nn' | 'tn'; C given means
// beta = 1 (accumulate onto it). extra = { A2, B2, K2 } extends K ('nt' and 'nn' only). B may
// be { dtype, bytes } for 'nt' and 'nn': B's rows in a storage type (F16, Q4_K, …).
Napi::Value CpuGemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string kind = info[0].ToString();
  const int64_t M = static_cast<int64_t>(info[1].As<Napi::Number>().DoubleValue());
  const int64_t N = static_cast<int64_t>(info[2].As<Napi::Number>().DoubleValue());
  const int64_t K = static_cast<int64_t>(info[3].As<Napi::Number>().DoubleValue());
  auto A = info[4].As<Napi::Float32Array>();
  GemmExtra extra;
  const bool has_extra = info.Length() > 7 && info[7].IsObject();
  if (has_extra) {
    Napi::Object e = info[7].As<Napi::Object>();
    extra.K2 = static_cast<int64_t>(e.Get("K2").As<Napi::Number>().DoubleValue());
    extra.A2 = e.Get("A2").As<Napi::Float32Array>().Data();
    extra.B2 = e.Get("B2").As<Napi::Float32Array>().Data();
    extra.lda2 = extra.K2;
    extra.ldb2 = kind == "nt" ? extra.K2 : N;
  }
  if (!info[5].IsTypedArray()) {
    return guard(env, [&]() -> Napi::Value {
      Napi::Object b = info[5].As<Napi::Object>();
      const StorageType type = storage_type_from_name(b.Get("dtype").ToString());
      auto bytes = b.Get("bytes").As<Napi::Uint8Array>();
      require(kind == "nt" || kind == "nn", "gemm: a stored B is for 'nt' and 'nn'");
      const int64_t rows = kind == "nt" ? N : K, cols = kind == "nt" ? K : N;
      require(cols % storage_block_values(type) == 0, "gemm: B's rows are not whole blocks");
      require(static_cast<int64_t>(bytes.ByteLength()) >= rows * storage_bytes(type, cols), "gemm: too few bytes for B");
      const StoredMatrix stored{bytes.Data(), type, storage_bytes(type, cols)};
      const bool acc = info.Length() > 6 && info[6].IsTypedArray();
      auto C = Napi::Float32Array::New(env, M * N);
      if (acc) std::memcpy(C.Data(), info[6].As<Napi::Float32Array>().Data(), M * N * sizeof(float));
      if (kind == "nt") sgemm_nt(M, N, K, A.Data(), K, stored, acc ? 1.f : 0.f, C.Data(), N, has_extra ? &extra : nullptr);
      else sgemm_nn(M, N, K, A.Data(), K, stored, acc ? 1.f : 0.f, C.Data(), N, has_extra ? &extra : nullptr);
      return C;
    });
  }
  auto B = info[5].As<Napi::Float32Array>();
  const bool acc = info.Length() > 6 && info[6].IsTypedArray();
  auto C = Napi::Float32Array::New(env, M * N);
  if (acc) std::memcpy(C.Data(), info[6].As<Napi::Float32Array>().Data(), M * N * sizeof(float));
  const float beta = acc ? 1.f : 0.f;
  if (kind == "nt") sgemm_nt(M, N, K, A.Data(), K, B.Data(), K, beta, C.Data(), N, has_extra ? &extra : nullptr);
  else if (kind == "nn") sgemm_nn(M, N, K, A.Data(), K, B.Data(), N, beta, C.Data(), N, has_extra ? &extra : nullptr);
  else if (kind == "tn") sgemm_tn(M, N, K, A.Data(), M, B.Data(), N, beta, C.Data(), N);
  else throw_invalid(env, "gemm kind must be 'nt', 'nn' or 'tn'");
  return C;
}

// dequantize(type, bytes, n) -> Float32Array, for the weight-format tests.
Napi::Value Dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    const StorageType type = storage_type_from_name(info[0].ToString());
    auto bytes = info[1].As<Napi::Uint8Array>();
    const int64_t n = static_cast<int64_t>(info[2].As<Napi::Number>().DoubleValue());
    require(n % storage_block_values(type) == 0, "dequantize: count is not a whole number of blocks");
    require(static_cast<int64_t>(bytes.ByteLength()) >= storage_bytes(type, n), "dequantize: too few bytes");
    auto out = Napi::Float32Array::New(env, n);
    dequantize(type, bytes.Data(), out.Data(), n);
    return out;
  });
}

// widenRange(type, row, c0, c1) -> Float32Array: values [c0, c1) of one stored row, as the
// GEMM's packing, the embedding and the LM head widen them (widen_range).
Napi::Value WidenRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    const StorageType type = storage_type_from_name(info[0].ToString());
    auto row = info[1].As<Napi::Uint8Array>();
    const int64_t c0 = static_cast<int64_t>(info[2].As<Napi::Number>().DoubleValue());
    const int64_t c1 = static_cast<int64_t>(info[3].As<Napi::Number>().DoubleValue());
    const int64_t bv = storage_block_values(type);
    require(0 <= c0 && c0 <= c1, "widenRange: need 0 <= c0 <= c1");
    require(static_cast<int64_t>(row.ByteLength()) >= storage_bytes(type, (c1 + bv - 1) / bv * bv), "widenRange: the row is shorter than c1 values");
    auto out = Napi::Float32Array::New(env, static_cast<size_t>(c1 - c0));
    widen_range(type, row.Data(), c0, c1, out.Data());
    return out;
  });
}

// quantize(type, values) -> Uint8Array: the values stored as `type` (quantize_row).
Napi::Value Quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    const StorageType type = storage_type_from_name(info[0].ToString());
    auto values = info[1].As<Napi::Float32Array>();
    const int64_t n = static_cast<int64_t>(values.ElementLength());
    require(n % storage_block_values(type) == 0, "quantize: count is not a whole number of blocks");
    auto out = Napi::Uint8Array::New(env, static_cast<size_t>(storage_bytes(type, n)));
    quantize_row(type, values.Data(), out.Data(), n);
    return out;
  });
}

}  // namespace

void InitOps(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = OpsWrap::Define(env);
  auto* ref = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.AddCleanupHook([ref] { delete ref; });
  exports.Set("ops", Napi::Function::New(env, [ref](const Napi::CallbackInfo& info) -> Napi::Value {
    return ref->New({info.Length() > 0 ? info[0] : Napi::String::New(info.Env(), "cpu")});
  }));
  exports.Set("gemm", Napi::Function::New(env, CpuGemm));
  exports.Set("dequantize", Napi::Function::New(env, Dequantize));
  exports.Set("quantize", Napi::Function::New(env, Quantize));
  exports.Set("widenRange", Napi::Function::New(env, WidenRange));
}

}  // namespace diffuse
