// Session: a KV cache for sampling from one model (and optionally one adapter).
#include "bindings/common.h"
#include "bindings/wraps.h"

namespace diffuse {

void SessionWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "NativeSession",
                                    {InstanceMethod("append", &SessionWrap::Append), InstanceMethod("sample", &SessionWrap::Sample),
                                     InstanceMethod("reset", &SessionWrap::Reset),
                                     InstanceMethod("truncate", &SessionWrap::Truncate), InstanceMethod("rows", &SessionWrap::Rows),
                                     InstanceMethod("dispose", &SessionWrap::Dispose)});
  env.GetInstanceData<AddonData>()->session = Napi::Persistent(ctor);
}

Napi::Object SessionWrap::NewInstance(Napi::Env env, std::shared_ptr<Model> model, std::shared_ptr<Adapter> adapter,
                                      std::shared_ptr<Session> session) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->session.New({});
  SessionWrap* w = SessionWrap::Unwrap(obj);
  w->model_ = std::move(model);
  w->adapter_ = std::move(adapter);
  w->session_ = std::move(session);
  return obj;
}

SessionWrap::SessionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SessionWrap>(info) {}

Napi::Value SessionWrap::Append(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!session_) throw make_error(env, "DISPOSED", "the session was disposed");
  auto tokens = std::make_shared<std::vector<int32_t>>(int32s(env, info[0], "tokens"));
  auto parents = std::make_shared<std::vector<int32_t>>(int32s(env, info[1], "parents"));
  auto model = model_;
  auto session = session_;
  auto adapter = adapter_;  // kept alive for the call
  auto first = std::make_shared<int64_t>(0);
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        *first = session->append(*tokens, *parents);
      },
      [first](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(*first)); });
}

Napi::Value SessionWrap::Sample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!session_) throw make_error(env, "DISPOSED", "the session was disposed");
  auto rows = std::make_shared<std::vector<int32_t>>(int32s(env, info[0], "rows"));
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    throw_invalid(env, "streams must be a Uint32Array");
  auto s32 = vector_from<uint32_t, Napi::Uint32Array>(env, info[1], "streams");
  auto streams = std::make_shared<std::vector<uint64_t>>(s32.begin(), s32.end());
  if (info.Length() < 3 || !info[2].IsObject()) throw_invalid(env, "sample(rows, streams, params) needs a params object");
  Napi::Object o = info[2].As<Napi::Object>();
  SampleParams p;
  p.temperature = static_cast<float>(number_or(o, "temperature", 1));
  p.top_k = static_cast<int>(number_or(o, "topK", 0));
  p.top_p = static_cast<float>(number_or(o, "topP", 1));
  p.seed = static_cast<uint64_t>(number_or(o, "seed", 0));
  const uint64_t step = static_cast<uint64_t>(number_or(o, "step", 0));
  auto model = model_;
  auto session = session_;
  auto adapter = adapter_;
  auto tokens = std::make_shared<std::vector<int32_t>>();
  auto logp = std::make_shared<std::vector<float>>();
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        session->sample(*rows, *streams, p, step, *tokens, *logp);
      },
      [tokens, logp](Napi::Env env) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("tokens", to_int32(env, *tokens));
        out.Set("logProbs", to_float32(env, *logp));
        return out;
      });
}

Napi::Value SessionWrap::Reset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!session_) throw make_error(env, "DISPOSED", "the session was disposed");
  auto model = model_;
  auto session = session_;
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        session->reset();
      },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

Napi::Value SessionWrap::Truncate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!session_) throw make_error(env, "DISPOSED", "the session was disposed");
  if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(env, "truncate(rows) needs a row count");
  const double rows = info[0].As<Napi::Number>().DoubleValue();
  if (!(rows >= 0) || rows != static_cast<double>(static_cast<int64_t>(rows))) throw_invalid(env, "truncate(rows) needs a whole number of rows");
  auto model = model_;
  auto session = session_;
  return PromiseWorker::run(
      env,
      [=] {
        std::lock_guard<std::mutex> lock(model->mutex());
        session->truncate(static_cast<int64_t>(rows));
      },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
}

Napi::Value SessionWrap::Rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!session_) throw make_error(env, "DISPOSED", "the session was disposed");
  return Napi::Number::New(env, static_cast<double>(session_->rows()));
}

Napi::Value SessionWrap::Dispose(const Napi::CallbackInfo& info) {
  session_.reset();
  adapter_.reset();
  return info.Env().Undefined();
}

}  // namespace diffuse
