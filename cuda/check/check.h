// diffuse_cuda_check: the CUDA backend against the CPU backend, op by op and as a whole model,
// and its throughput on realistic shapes, with no Node in the way. Shared plumbing.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace diffuse {
namespace check {

// ------------------------------------------------------------------ results and JSON
// A tiny JSON writer: enough for the report, no dependency.
class Json {
 public:
  static Json object() { return Json("{", "}"); }
  static Json array() { return Json("[", "]"); }
  Json& add(const std::string& key, const std::string& value);
  Json& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  Json& add(const std::string& key, double value);
  Json& add(const std::string& key, int64_t value);
  Json& add(const std::string& key, int value) { return add(key, static_cast<int64_t>(value)); }
  Json& add(const std::string& key, bool value);
  Json& add(const std::string& key, const Json& value);
  Json& push(const Json& value);
  std::string str() const { return open_ + body_ + close_; }
  bool empty() const { return body_.empty(); }

 private:
  Json(const char* open, const char* close) : open_(open), close_(close) {}
  void sep() {
    if (!body_.empty()) body_ += ",";
  }
  std::string open_, close_, body_;
};
std::string json_escape(const std::string& s);

// One correctness check: its error against the CPU, the tolerance, and whether it passed.
struct CheckResult {
  std::string name;
  double error = 0;
  double tolerance = 0;
  bool passed = false;
  std::string note;
};

class Report {
 public:
  void check(const std::string& name, double error, double tolerance, const std::string& note = "");
  // A check that is a plain yes / no.
  void expect(const std::string& name, bool ok, const std::string& note = "");
  int failures() const;
  const std::vector<CheckResult>& checks() const { return checks_; }
  Json checks_json() const;

 private:
  std::vector<CheckResult> checks_;
};

// ||out - ref|| / ||ref||; infinity when anything is NaN or the sizes differ.
double rel_error(const std::vector<float>& out, const std::vector<float>& ref);

// ------------------------------------------------------------------ random inputs
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  // Values rounded to bf16, so both backends see exactly the same inputs.
  std::vector<float> normal(size_t n, float std = 1.f);
  std::vector<float> uniform(size_t n, float lo, float hi);
  int32_t integer(int32_t lo, int32_t hi);  // [lo, hi]
  std::mt19937_64& engine() { return gen_; }

 private:
  std::mt19937_64 gen_;
};
float round_bf16(float x);

// ------------------------------------------------------------------ backend transfers
struct Dev {
  Backend& be;
  BufferPtr act(const std::vector<float>& h, const char* what = "act");
  BufferPtr act_zeros(size_t n, const char* what = "act");
  BufferPtr weight(const std::vector<float>& h, const char* what = "weight");
  BufferPtr f32(const std::vector<float>& h, const char* what = "f32");
  BufferPtr f32_zeros(size_t n, const char* what = "f32");
  BufferPtr i32(const std::vector<int32_t>& h, const char* what = "i32");
  BufferPtr u64(const std::vector<uint64_t>& h, const char* what = "u64");
  std::vector<float> read_act(const BufferPtr& b, size_t n);
  std::vector<float> read_f32(const BufferPtr& b, size_t n);
  std::vector<int32_t> read_i32(const BufferPtr& b, size_t n);
};

// ------------------------------------------------------------------ the CUDA library's extras
struct CudaExtras {
  static int set_linear_kernel(Backend& be, const char* name);
  static void set_chunk_logits(Backend& be, int64_t logits);
  static void memory(Backend& be, size_t* in_use, size_t* peak, size_t* reserved);
  static void reset_peak(Backend& be);
};

// ------------------------------------------------------------------ timing
// Median wall time of `fn` over `reps` runs after `warmup`, each run `inner` calls long,
// synchronising the backend before reading the clock; seconds per call.
double time_op(Backend& be, const std::function<void()>& fn, int reps = 7, int warmup = 2, int inner = 1);

// ------------------------------------------------------------------ workloads
}  // namespace check
struct ModelConfig;
struct TensorSource;
struct Batch;
namespace check {
// Seeded Init sources for every tensor of `config` (normal(std) matrices, ones for norms,
// zeros for biases), as lib/model/presets.ts makes them: weights made on the device.
std::vector<TensorSource> init_sources(const ModelConfig& config, uint64_t seed, double std);
// A prompt chain and the trie of `targets` (token sequences with weights) hanging off its
// last row, as the TypeScript layer builds a batch: internal trie nodes get rows, every
// node gets an edge from its parent's row weighted by the targets through it.
Batch trie_batch(const std::vector<int32_t>& prompt, const std::vector<std::vector<int32_t>>& targets,
                 const std::vector<float>& weights);
// Workload shapes of the paper's tasks with random token ids: `count` targets of 1 to
// `max_len` tokens plus EOS, whose first tokens are drawn from `first_choices` options so
// that prefixes are shared as in real answer sets.
std::vector<std::vector<int32_t>> random_targets(Rng& rng, int count, int max_len, int first_choices, int32_t vocab,
                                                 int32_t eos);

// A tokenized task for the training-step benchmark, as bench/gpu/peft_side.py writes it for
// both stacks (so both train on the same token ids). Whitespace-separated text:
//   diffuse-token-task 1
//   name <one word>
//   prompt <n> <id> x n
//   target <weight> <n> <id> x n        (one line per target)
struct TokenTask {
  std::string name;
  std::vector<int32_t> prompt;
  std::vector<std::vector<int32_t>> targets;
  std::vector<float> weights;  // normalised to sum to 1
};
// Throws INVALID_ARGUMENT naming the file and what is wrong with it.
TokenTask read_token_task(const std::string& path);

// ------------------------------------------------------------------ the parts
struct Options {
  bool checks = true;     // (a) ops and (b) the model, CPU vs CUDA
  bool bench = true;      // (c) peaks, kernels, LoRA linear, log-probs
  bool steps = true;      // (c) full optimiser steps at Llama-2-13B shapes
  bool quick = false;     // smaller benchmark set, for a tight device budget
  std::vector<std::string> token_tasks;  // the steps' workloads instead of the built-in ones
  std::string mode = "all";              // the parts run: all, checks, bench or steps
  std::string tag;                       // names the result file: <device>-<tag>.json
  std::string out_dir = "bench/results";
  std::string commit = "unknown";
};

void check_ops(Backend& cpu, Backend& gpu, Report& report);
void check_model(Report& report);
struct Peaks {
  double gemm_tflops = 0;
  double copy_gbs = 0;
};
Peaks measure_peaks();
Json bench_kernels(Backend& gpu, const Peaks& peaks, bool quick);
Json bench_lora(Backend& gpu, const Peaks& peaks, bool quick);
Json bench_logprobs(Backend& gpu, const Peaks& peaks, bool quick);
Json bench_steps(const Peaks& peaks, bool quick, const std::vector<TokenTask>& tasks);

// A backend on CUDA device 0 (throws with the library's reason when it cannot).
std::unique_ptr<Backend> make_gpu();

}  // namespace check
}  // namespace diffuse
