// The JavaScript classes of the addon: one per engine object (node-llama-cpp style).
#pragma once

#include <napi.h>

#include <memory>

#include "engine/adapter.h"
#include "engine/model.h"

namespace diffuse {

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<Model> model);
  explicit ModelWrap(const Napi::CallbackInfo& info);
  std::shared_ptr<Model> model(Napi::Env env) const;

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value CreateAdapter(const Napi::CallbackInfo& info);
  Napi::Value CreateSession(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value SetActivationBudget(const Napi::CallbackInfo& info);
  Napi::Value ActivationBudget(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<Model> model_;
};

class AdapterWrap : public Napi::ObjectWrap<AdapterWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<Model> model, std::shared_ptr<Adapter> adapter);
  explicit AdapterWrap(const Napi::CallbackInfo& info);
  std::shared_ptr<Adapter> adapter(Napi::Env env) const;
  std::shared_ptr<Model> owner() const { return model_; }

 private:
  Napi::Value GetTensor(const Napi::CallbackInfo& info);
  Napi::Value SetTensor(const Napi::CallbackInfo& info);
  Napi::Value ZeroGrad(const Napi::CallbackInfo& info);
  Napi::Value GradSumSquares(const Napi::CallbackInfo& info);
  Napi::Value AdamwStep(const Napi::CallbackInfo& info);
  Napi::Value Describe(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<Model> model_;
  std::shared_ptr<Adapter> adapter_;
};

class SessionWrap : public Napi::ObjectWrap<SessionWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<Model> model, std::shared_ptr<Adapter> adapter,
                                  std::shared_ptr<Session> session);
  explicit SessionWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Append(const Napi::CallbackInfo& info);
  Napi::Value Sample(const Napi::CallbackInfo& info);
  Napi::Value Reset(const Napi::CallbackInfo& info);
  Napi::Value Truncate(const Napi::CallbackInfo& info);
  Napi::Value Rows(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<Model> model_;
  std::shared_ptr<Adapter> adapter_;
  std::shared_ptr<Session> session_;
};

// Constructors of the wrapped classes, kept per environment.
struct AddonData {
  Napi::FunctionReference model, adapter, session;
};

}  // namespace diffuse
