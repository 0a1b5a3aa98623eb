// The diffuse addon: models, adapters, sessions, kernel test surfaces, and run-time facts.
#include <napi.h>

#include "bindings/common.h"
#include "bindings/wraps.h"
#include "cpu/gemm.h"
#include "cpu/thread_pool.h"
#include "engine/devices.h"
#include "engine/memory.h"

namespace diffuse {
void InitOps(Napi::Env env, Napi::Object exports);
}

namespace {

using namespace diffuse;

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "setThreads(n) needs a number");
  set_thread_count(static_cast<int>(info[0].As<Napi::Number>().Int32Value()));
  return info.Env().Undefined();
}

// setMemoryLimit(bytes): caps this process's memory for load and step planning; 0 removes it.
Napi::Value SetMemoryLimit(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber() || !(info[0].As<Napi::Number>().DoubleValue() >= 0))
    throw_invalid(info.Env(), "setMemoryLimit(bytes) needs a non-negative number");
  set_memory_limit(static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()));
  return info.Env().Undefined();
}

// releaseKeptMemory(): frees the activation blocks the CPU backend keeps for reuse, so the
// resident set is what the process holds (tests that set a limit relative to it).
Napi::Value ReleaseKeptMemory(const Napi::CallbackInfo& info) {
  release_kept_host_blocks();
  return info.Env().Undefined();
}

Napi::Value ThreadCount(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), thread_count()); }

Napi::Value CudaStatusJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CudaStatus s = cuda_status();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", s.available);
  o.Set("reason", s.reason);
  o.Set("library", s.library);
  Napi::Array devices = Napi::Array::New(env, s.devices.size());
  for (size_t i = 0; i < s.devices.size(); ++i) devices.Set(static_cast<uint32_t>(i), s.devices[i]);
  o.Set("devices", devices);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  ModelWrap::Init(env, exports);
  AdapterWrap::Init(env, exports);
  SessionWrap::Init(env, exports);
  InitOps(env, exports);
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("setMemoryLimit", Napi::Function::New(env, SetMemoryLimit));
  exports.Set("releaseKeptMemory", Napi::Function::New(env, ReleaseKeptMemory));
  exports.Set("threadCount", Napi::Function::New(env, ThreadCount));
  exports.Set("gemmIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::String::New(info.Env(), gemm_isa());
  }));
  exports.Set("cudaStatus", Napi::Function::New(env, CudaStatusJs));
  exports.Set("defaultActivationBudget", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber() || !(info[0].As<Napi::Number>().DoubleValue() >= 0))
      throw_invalid(env, "defaultActivationBudget(availableBytes) needs a non-negative number");
    return Napi::Number::New(env, static_cast<double>(default_activation_budget(static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue()))));
  }));
  return exports;
}

}  // namespace

NODE_API_MODULE(diffuse, Init)
