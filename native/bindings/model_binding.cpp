// Model: created from a spec ({ config, tensors, device }) and loaded on a worker thread.
#include <cmath>

#include "bindings/common.h"
#include "bindings/wraps.h"
#include "engine/devices.h"

namespace diffuse {
namespace {

// A JavaScript number that must be an integer in [0, max]; anything else (negative, NaN,
// fractional, huge) is an INVALID_ARGUMENT naming `what`.
int64_t checked_integer(Napi::Env env, const Napi::Value& v, const std::string& what, double max) {
  if (!v.IsNumber()) throw_invalid(env, what + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(std::floor(d) == d) || d < 0 || d > max) throw_invalid(env, what + " must be an integer from 0 to " + std::to_string(static_cast<int64_t>(max)));
  return static_cast<int64_t>(d);
}

// Model dimensions stay below 2^24, so products of a few of them cannot overflow int64.
constexpr double kMaxDimension = 16777216.0;
constexpr double kMaxSafeInteger = 9007199254740991.0;

int64_t int_field(const Napi::Object& o, const char* key) {
  return checked_integer(o.Env(), o.Get(key), std::string("model config: '") + key + "'", kMaxDimension);
}

ModelConfig parse_config(Napi::Env env, const Napi::Value& value) {
  if (!value.IsObject()) throw_invalid(env, "model spec: 'config' must be an object");
  Napi::Object o = value.As<Napi::Object>();
  ModelConfig c;
  c.hidden = int_field(o, "hiddenSize");
  c.intermediate = int_field(o, "intermediateSize");
  c.layers = int_field(o, "numLayers");
  c.heads = int_field(o, "numHeads");
  c.kv_heads = int_field(o, "numKvHeads");
  c.head_dim = int_field(o, "headDim");
  c.vocab = int_field(o, "vocabSize");
  c.rms_eps = number_or(o, "rmsNormEps", 1e-5);
  c.rope_theta = number_or(o, "ropeTheta", 10000);
  c.tied_embeddings = o.Get("tieWordEmbeddings").ToBoolean();
  c.attention_bias = o.Get("attentionBias").ToBoolean();
  // Family switches (see ModelConfig); absent keys keep Llama's behaviour.
  Napi::Value act = o.Get("activation");
  if (!act.IsUndefined()) {
    const std::string a = act.ToString();
    if (a == "silu") c.activation = ModelConfig::Activation::SILU;
    else if (a == "gelu_tanh") c.activation = ModelConfig::Activation::GELU_TANH;
    else throw_invalid(env, "model config: 'activation' must be 'silu' or 'gelu_tanh'");
  }
  c.norm_offset = static_cast<float>(number_or(o, "normWeightOffset", 0));
  c.embed_scale = number_or(o, "embeddingScale", 1);
  c.attn_scale = number_or(o, "attentionScale", 0);
  c.attn_softcap = number_or(o, "attnLogitSoftcap", 0);
  c.final_softcap = number_or(o, "finalLogitSoftcap", 0);
  c.qk_norm = o.Get("qkNorm").ToBoolean();
  c.sandwich_norms = o.Get("sandwichNorms").ToBoolean();
  if (!o.Get("slidingWindow").IsUndefined()) c.sliding_window = int_field(o, "slidingWindow");
  c.local_rope_theta = number_or(o, "localRopeTheta", 0);
  c.fused_projections = o.Get("fusedProjections").ToBoolean();
  if (!o.Get("rotaryDim").IsUndefined()) c.rope_dim = int_field(o, "rotaryDim");
  Napi::Value types = o.Get("layerTypes");
  if (!types.IsUndefined()) {
    if (!types.IsArray()) throw_invalid(env, "model config: 'layerTypes' must be an array");
    Napi::Array arr = types.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      const std::string t = arr.Get(i).ToString();
      if (t != "full_attention" && t != "sliding_attention")
        throw_invalid(env, "model config: layerTypes[" + std::to_string(i) + "] must be 'full_attention' or 'sliding_attention'");
      c.sliding_layers.push_back(t == "sliding_attention" ? 1 : 0);
    }
  }
  Napi::Value rs = o.Get("ropeScaling");
  if (rs.IsObject()) {
    Napi::Object r = rs.As<Napi::Object>();
    c.rope_scaling.type = r.Get("type").ToString();
    c.rope_scaling.factor = number_or(r, "factor", 1);
    c.rope_scaling.low_freq_factor = number_or(r, "lowFreqFactor", 1);
    c.rope_scaling.high_freq_factor = number_or(r, "highFreqFactor", 4);
    c.rope_scaling.original_max_position_embeddings = number_or(r, "originalMaxPositionEmbeddings", 8192);
    c.rope_scaling.attention_factor = number_or(r, "attentionFactor", 1);
    auto factors = [&](const char* key, std::vector<double>& out) {
      Napi::Value v = r.Get(key);
      if (v.IsUndefined()) return;
      if (!v.IsArray()) throw_invalid(env, std::string("model config: ropeScaling.") + key + " must be an array of numbers");
      Napi::Array arr = v.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Value e = arr.Get(i);
        if (!e.IsNumber()) throw_invalid(env, std::string("model config: ropeScaling.") + key + "[" + std::to_string(i) + "] must be a number");
        out.push_back(e.As<Napi::Number>().DoubleValue());
      }
    };
    factors("shortFactor", c.rope_scaling.short_factor);
    factors("longFactor", c.rope_scaling.long_factor);
  }
  return c;
}

std::vector<TensorSource> parse_tensors(Napi::Env env, const Napi::Value& value) {
  if (!value.IsArray()) throw_invalid(env, "model spec: 'tensors' must be an array");
  Napi::Array arr = value.As<Napi::Array>();
  std::vector<TensorSource> out;
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value item = arr.Get(i);
    if (!item.IsObject()) throw_invalid(env, "model spec: tensors[" + std::to_string(i) + "] must be an object");
    Napi::Object t = item.As<Napi::Object>();
    TensorSource s;
    s.name = t.Get("name").ToString();
    Napi::Value shape = t.Get("shape");
    if (!shape.IsArray()) throw_invalid(env, "tensor '" + s.name + "': 'shape' must be an array");
    Napi::Array sh = shape.As<Napi::Array>();
    if (sh.Length() > 4) throw_invalid(env, "tensor '" + s.name + "': at most 4 dimensions");
    for (uint32_t j = 0; j < sh.Length(); ++j)
      s.shape.push_back(checked_integer(env, sh.Get(j), "tensor '" + s.name + "': shape entry " + std::to_string(j), kMaxDimension * 16));
    if (t.Has("file") && !t.Get("file").IsUndefined()) {
      s.kind = TensorSource::Kind::File;
      s.file = t.Get("file").ToString();
      s.offset = static_cast<uint64_t>(checked_integer(env, t.Get("offset"), "tensor '" + s.name + "': offset", kMaxSafeInteger));
      s.storage = t.Get("dtype").ToString();
    } else if (t.Has("data") && !t.Get("data").IsUndefined()) {
      s.kind = TensorSource::Kind::Data;
      s.data = float32s(env, t.Get("data"), "tensor data");
    } else if (t.Get("init").IsObject()) {
      Napi::Object init = t.Get("init").As<Napi::Object>();
      s.kind = TensorSource::Kind::Init;
      s.init = init.Get("kind").ToString();
      s.std = number_or(init, "std", 0.02);
      s.seed = init.Get("seed").IsUndefined() ? 0 : static_cast<uint64_t>(checked_integer(env, init.Get("seed"), "tensor '" + s.name + "': init seed", kMaxSafeInteger));
      if (init.Get("dtype").IsString()) s.storage = init.Get("dtype").ToString();
    } else {
      throw_invalid(env, "tensor '" + s.name + "' has no source: give 'file' (with 'offset' and 'dtype'), 'data' or 'init'");
    }
    if (!t.Get("unpermuteHeads").IsUndefined())
      s.unpermute_heads = checked_integer(env, t.Get("unpermuteHeads"), "tensor '" + s.name + "': unpermuteHeads", kMaxDimension);
    out.push_back(std::move(s));
  }
  return out;
}

Batch parse_batch(Napi::Env env, const Napi::Value& value, bool with_weights) {
  if (!value.IsObject()) throw_invalid(env, "batch must be an object");
  Napi::Object o = value.As<Napi::Object>();
  Batch b;
  b.tokens = int32s(env, o.Get("tokens"), "batch.tokens");
  b.parents = int32s(env, o.Get("parents"), "batch.parents");
  b.edge_rows = int32s(env, o.Get("edgeRows"), "batch.edgeRows");
  b.edge_tokens = int32s(env, o.Get("edgeTokens"), "batch.edgeTokens");
  if (with_weights) b.edge_weights = float32s(env, o.Get("edgeWeights"), "batch.edgeWeights");
  return b;
}

Objective parse_objective(Napi::Env env, const Napi::Value& value) {
  Objective obj;
  if (value.IsUndefined()) return obj;
  if (!value.IsObject()) throw_invalid(env, "objective must be an object");
  Napi::Object o = value.As<Napi::Object>();
  const std::string kind = o.Get("kind").IsUndefined() ? "ce" : o.Get("kind").ToString().Utf8Value();
  if (kind == "ce") obj.kind = ObjectiveKind::CE;
  else if (kind == "gem-linear") obj.kind = ObjectiveKind::GEM_LINEAR;
  else if (kind == "gem-logsigmoid") obj.kind = ObjectiveKind::GEM_LOGSIGMOID;
  else throw_invalid(env, "objective.kind must be 'ce', 'gem-linear' or 'gem-logsigmoid'");
  obj.beta = static_cast<float>(number_or(o, "beta", 0.7));
  return obj;
}

AdapterWrap* unwrap_adapter(Napi::Env env, const Napi::Value& value, const std::shared_ptr<Model>& model) {
  Napi::Object o = value.As<Napi::Object>();
  AddonData* data = env.GetInstanceData<AddonData>();
  if (!value.IsObject() || !o.InstanceOf(data->adapter.Value())) throw_invalid(env, "adapter must be an adapter created by this model");
  AdapterWrap* w = AdapterWrap::Unwrap(o);
  if (w->owner() != model) throw_invalid(env, "the adapter belongs to another model");
  return w;
}

}  // namespace

void ModelWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "NativeModel",
                                    {InstanceMethod("forward", &ModelWrap::Forward), InstanceMethod("step", &ModelWrap::Step),
                                     InstanceMethod("createAdapter", &ModelWrap::CreateAdapter),
                                     InstanceMethod("createSession", &ModelWrap::CreateSession), InstanceMethod("info", &ModelWrap::Info),
                                     InstanceMethod("setActivationBudget", &ModelWrap::SetActivationBudget),
                                     InstanceMethod("activationBudget", &ModelWrap::ActivationBudget),
                                     InstanceMethod("dispose", &ModelWrap::Dispose)});
  env.GetInstanceData<AddonData>()->model = Napi::Persistent(ctor);

  exports.Set("createModel", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_invalid(env, "createModel(spec) needs a spec object");
    Napi::Object spec = info[0].As<Napi::Object>();
    auto config = std::make_shared<ModelConfig>(parse_config(env, spec.Get("config")));
    auto tensors = std::make_shared<std::vector<TensorSource>>(parse_tensors(env, spec.Get("tensors")));
    const std::string device = spec.Get("device").IsString() ? spec.Get("device").ToString().Utf8Value() : "cpu";
    const int threads = static_cast<int>(number_or(spec, "threads", 0));
    const std::string weights = spec.Get("weights").IsString() ? spec.Get("weights").ToString().Utf8Value() : "stored";
    if (weights != "stored" && weights != "f32") throw_invalid(env, "model spec: 'weights' must be 'stored' or 'f32', got '" + weights + "'");
    for (TensorSource& t : *tensors) t.widen = weights == "f32";
    auto model = std::make_shared<std::shared_ptr<Model>>();
    return PromiseWorker::run(
        env, [=] { *model = std::make_shared<Model>(make_backend(device, threads), *config, *tensors); },
        [model](Napi::Env env) -> Napi::Value { return ModelWrap::NewInstance(env, *model); });
  }));
}

Napi::Object ModelWrap::NewInstance(Napi::Env env, std::shared_ptr<Model> model) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->model.New({});
  ModelWrap::Unwrap(obj)->model_ = std::move(model);
  return obj;
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}

std::shared_ptr<Model> ModelWrap::model(Napi::Env env) const {
  if (!model_) throw make_error(env, "DISPOSED", "the model was disposed");
  return model_;
}

Napi::Value ModelWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  auto batch = std::make_shared<Batch>(parse_batch(env, info[0], false));
  std::shared_ptr<Adapter> adapter;
  if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) adapter = unwrap_adapter(env, info[1], model)->adapter(env);
  auto result = std::make_shared<ForwardResult>();
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        *result = model->forward(*batch, adapter.get());
      },
      [result](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("edgeLogProbs", to_float32(env, result->edge_logp));
        return out;
      });
}

Napi::Value ModelWrap::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  auto batch = std::make_shared<Batch>(parse_batch(env, info[0], true));
  if (info.Length() < 2) throw_invalid(env, "step(batch, adapter, objective) needs an adapter");
  std::shared_ptr<Adapter> adapter = unwrap_adapter(env, info[1], model)->adapter(env);
  const Objective objective = parse_objective(env, info.Length() > 2 ? info[2] : env.Undefined());
  auto result = std::make_shared<StepResult>();
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        *result = model->step(*batch, *adapter, objective);
      },
      [result](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("edgeLogProbs", to_float32(env, result->edge_logp));
        out.Set("edgeLoss", to_float32(env, result->edge_loss));
        out.Set("loss", Napi::Number::New(env, result->loss));
        out.Set("recomputedLayers", Napi::Number::New(env, static_cast<double>(result->recomputed_layers)));
        out.Set("plannedBytes", Napi::Number::New(env, static_cast<double>(result->planned_bytes)));
        return out;
      });
}

Napi::Value ModelWrap::CreateAdapter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  AdapterOptions opts;
  if (info.Length() > 0 && info[0].IsObject()) {
    Napi::Object o = info[0].As<Napi::Object>();
    opts.rank = static_cast<int>(number_or(o, "rank", 4));
    opts.alpha = static_cast<float>(number_or(o, "alpha", 8));
    opts.seed = static_cast<uint64_t>(number_or(o, "seed", 0));
    Napi::Value mods = o.Get("targetModules");
    if (mods.IsArray()) {
      Napi::Array arr = mods.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        const std::string name = arr.Get(i).ToString();
        const int m = module_from_name(name);
        if (m < 0) throw_invalid(env, "unknown LoRA target module '" + name + "' (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj; qkv_proj, gate_up_proj for Phi-3)");
        opts.modules.push_back(m);
      }
    }
  }
  auto adapter = std::make_shared<std::shared_ptr<Adapter>>();
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        *adapter = std::make_shared<Adapter>(model->backend(), model->config(), opts);
      },
      [model, adapter](Napi::Env env) -> Napi::Value { return AdapterWrap::NewInstance(env, model, *adapter); });
}

Napi::Value ModelWrap::CreateSession(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  std::shared_ptr<Adapter> adapter;
  int64_t capacity = 256;
  if (info.Length() > 0 && info[0].IsObject()) {
    Napi::Object o = info[0].As<Napi::Object>();
    if (!o.Get("adapter").IsUndefined() && !o.Get("adapter").IsNull()) adapter = unwrap_adapter(env, o.Get("adapter"), model)->adapter(env);
    capacity = static_cast<int64_t>(number_or(o, "capacity", 256));
  }
  auto session = std::make_shared<std::shared_ptr<Session>>();
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        *session = std::make_shared<Session>(*model, adapter.get(), capacity);
      },
      [model, adapter, session](Napi::Env env) -> Napi::Value { return SessionWrap::NewInstance(env, model, adapter, *session); });
}

Napi::Value ModelWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  Napi::Object out = Napi::Object::New(env);
  out.Set("device", model->backend().name());
  out.Set("weightBytes", Napi::Number::New(env, static_cast<double>(model->weight_bytes())));
  return out;
}

Napi::Value ModelWrap::SetActivationBudget(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() >= 1 && info[0].IsNull()) {
    model(env)->use_default_activation_budget();
    return env.Undefined();
  }
  if (info.Length() < 1 || !info[0].IsNumber() || !(info[0].As<Napi::Number>().DoubleValue() >= 0))
    throw_invalid(env, "setActivationBudget(bytes) needs a non-negative number, or null for the default");
  model(env)->set_activation_budget(static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue()));
  return env.Undefined();
}

Napi::Value ModelWrap::ActivationBudget(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = this->model(env);
  std::lock_guard<std::mutex> lock(model->mutex());
  return Napi::Number::New(env, static_cast<double>(model->activation_budget()));
}

Napi::Value ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  model_.reset();  // in-flight calls and adapters hold their own reference until they finish
  return info.Env().Undefined();
}

}  // namespace diffuse
