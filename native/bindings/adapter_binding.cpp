// Adapter: LoRA parameters, gradients and AdamW state of one model, in that model's memory.
#include "bindings/common.h"
#include "bindings/wraps.h"

namespace diffuse {
namespace {

Adapter::Part parse_part(Napi::Env env, const Napi::Value& v) {
  if (v.IsUndefined()) return Adapter::Part::Param;
  const std::string s = v.ToString();
  if (s == "param") return Adapter::Part::Param;
  if (s == "grad") return Adapter::Part::Grad;
  if (s == "m") return Adapter::Part::Moment1;
  if (s == "v") return Adapter::Part::Moment2;
  throw_invalid(env, "tensor part must be 'param', 'grad', 'm' or 'v'");
}

}  // namespace

void AdapterWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "NativeAdapter",
                                    {InstanceMethod("getTensor", &AdapterWrap::GetTensor),
                                     InstanceMethod("setTensor", &AdapterWrap::SetTensor),
                                     InstanceMethod("zeroGrad", &AdapterWrap::ZeroGrad),
                                     InstanceMethod("gradSumSquares", &AdapterWrap::GradSumSquares),
                                     InstanceMethod("adamwStep", &AdapterWrap::AdamwStep),
                                     InstanceMethod("describe", &AdapterWrap::Describe),
                                     InstanceMethod("dispose", &AdapterWrap::Dispose)});
  env.GetInstanceData<AddonData>()->adapter = Napi::Persistent(ctor);
}

Napi::Object AdapterWrap::NewInstance(Napi::Env env, std::shared_ptr<Model> model, std::shared_ptr<Adapter> adapter) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->adapter.New({});
  AdapterWrap* w = AdapterWrap::Unwrap(obj);
  w->model_ = std::move(model);
  w->adapter_ = std::move(adapter);
  return obj;
}

AdapterWrap::AdapterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AdapterWrap>(info) {}

std::shared_ptr<Adapter> AdapterWrap::adapter(Napi::Env env) const {
  if (!adapter_) throw make_error(env, "DISPOSED", "the adapter was disposed");
  return adapter_;
}

Napi::Value AdapterWrap::GetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto adapter = this->adapter(env);
  auto model = model_;
  const std::string name = info[0].ToString();
  const Adapter::Part part = parse_part(env, info.Length() > 1 ? info[1] : env.Undefined());
  auto out = std::make_shared<std::vector<float>>();
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        *out = adapter->get(name, part);
      },
      [out](Napi::Env env) -> Napi::Value { return to_float32(env, *out); });
}

Napi::Value AdapterWrap::SetTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto adapter = this->adapter(env);
  auto model = model_;
  const std::string name = info[0].ToString();
  auto values = std::make_shared<std::vector<float>>(float32s(env, info[1], "tensor values"));
  const Adapter::Part part = parse_part(env, info.Length() > 2 ? info[2] : env.Undefined());
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        adapter->set(name, part, *values);
      },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

Napi::Value AdapterWrap::ZeroGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto adapter = this->adapter(env);
  auto model = model_;
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        adapter->zero_grads();
      },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

Napi::Value AdapterWrap::GradSumSquares(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto adapter = this->adapter(env);
  auto model = model_;
  auto total = std::make_shared<double>(0);
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        *total = adapter->grad_sum_squares();
      },
      [total](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *total); });
}

Napi::Value AdapterWrap::AdamwStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto adapter = this->adapter(env);
  auto model = model_;
  if (info.Length() < 1 || !info[0].IsObject()) throw_invalid(env, "adamwStep(params) needs a params object");
  Napi::Object o = info[0].As<Napi::Object>();
  AdamWParams p;
  p.lr = number_or(o, "lr", p.lr);
  p.beta1 = number_or(o, "beta1", p.beta1);
  p.beta2 = number_or(o, "beta2", p.beta2);
  p.eps = number_or(o, "eps", p.eps);
  p.weight_decay = number_or(o, "weightDecay", p.weight_decay);
  p.step = static_cast<int64_t>(number_or(o, "step", 1));
  p.grad_scale = number_or(o, "gradScale", 1);
  if (p.step < 1) throw_invalid(env, "adamwStep: step must be >= 1");
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        adapter->adamw_step(p);
      },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

Napi::Value AdapterWrap::Describe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto adapter = this->adapter(env);
  Napi::Object out = Napi::Object::New(env);
  out.Set("rank", adapter->rank());
  out.Set("alpha", adapter->alpha());
  out.Set("parameterCount", Napi::Number::New(env, static_cast<double>(adapter->parameter_count())));
  Napi::Array tensors = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& slot : adapter->slots()) {
    const std::string base = "layers." + std::to_string(slot.layer) + "." + module_name(slot.module);
    for (int b = 0; b < 2; ++b) {
      Napi::Object t = Napi::Object::New(env);
      t.Set("name", base + (b ? ".lora_B" : ".lora_A"));
      t.Set("layer", slot.layer);
      t.Set("module", module_name(slot.module));
      Napi::Array shape = Napi::Array::New(env, 2);
      shape.Set(0u, Napi::Number::New(env, static_cast<double>(b ? slot.out : adapter->rank())));
      shape.Set(1u, Napi::Number::New(env, static_cast<double>(b ? adapter->rank() : slot.in)));
      t.Set("shape", shape);
      tensors.Set(i++, t);
    }
  }
  out.Set("tensors", tensors);
  return out;
}

Napi::Value AdapterWrap::Dispose(const Napi::CallbackInfo& info) {
  adapter_.reset();
  return info.Env().Undefined();
}

}  // namespace diffuse
