// diffuse_cuda_check [--checks-only | --bench-only | --steps-only] [--token-task FILE]...
//                    [--quick] [--out DIR] [--tag NAME] [--commit SHA]
//
// (a) every op on random inputs, CPU backend vs CUDA backend; (b) a whole model step and 20
// AdamW steps both ways; (c) benchmarks: measured peaks, kernel rates, LoRA overhead, fused
// log-probs, full Llama-2-13B optimiser steps (on --token-task files when given; implies
// --steps-only unless a part is named). --checks-only runs (a) and (b), --bench-only (c)
// without the steps, --steps-only the peaks and the steps. Writes
// DIR/<device-name>-<tag>.json (tag: --tag, else the part: checks, bench, steps or all;
// default DIR bench/results) and exits non-zero when a check fails.
#include <cctype>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>

#include "backend_cuda.h"
#include "check/check.h"
#include "engine/errors.h"

using namespace diffuse;
using namespace diffuse::check;

namespace {

std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  std::string part, tag;
  auto usage = [&] {
    std::fprintf(stderr, "usage: %s [--checks-only | --bench-only | --steps-only] [--token-task FILE]... [--quick] [--out DIR] [--tag NAME] [--commit SHA]\n",
                 argv[0]);
    std::exit(2);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--checks-only" || a == "--bench-only" || a == "--steps-only") {
      if (!part.empty() && part != a) usage();
      part = a;
    } else if (a == "--token-task" && i + 1 < argc) o.token_tasks.push_back(argv[++i]);
    else if (a == "--quick") o.quick = true;
    else if (a == "--out" && i + 1 < argc) o.out_dir = argv[++i];
    else if (a == "--tag" && i + 1 < argc) tag = argv[++i];
    else if (a == "--commit" && i + 1 < argc) o.commit = argv[++i];
    else usage();
  }
  if (part.empty() && !o.token_tasks.empty()) part = "--steps-only";
  if (!part.empty()) {
    o.checks = part == "--checks-only";
    o.bench = part == "--bench-only";
    o.steps = part == "--steps-only";
    o.mode = part.substr(2, part.size() - 2 - 5);  // checks, bench, steps
  }
  if (!o.token_tasks.empty() && !o.steps) usage();
  o.tag = tag.empty() ? o.mode : file_safe(tag);
  return o;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  std::vector<TokenTask> tasks;
  try {
    for (const std::string& path : opt.token_tasks) tasks.push_back(read_token_task(path));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  char err[512] = {0};
  const int count = diffuse_cuda_device_count(err, sizeof err);
  if (count <= 0) {
    std::fprintf(stderr, "no usable CUDA device: %s\n", count < 0 ? err : "none visible");
    return 3;
  }
  char name[256] = {0};
  diffuse_cuda_device_name(0, name, sizeof name);
  int driver = 0, runtime = 0;
  size_t cublaslt = 0;
  diffuse_cuda_versions(&driver, &runtime, &cublaslt);
  std::printf("diffuse_cuda_check on %s (driver CUDA %d.%d, runtime %d.%d, cuBLASLt %zu), commit %s\n", name, driver / 1000,
              driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, cublaslt, opt.commit.c_str());

  Json result = Json::object();
  result.add("device", name).add("driver_cuda_version", driver).add("runtime_cuda_version", runtime);
  result.add("cublaslt_version", static_cast<int64_t>(cublaslt)).add("date", utc_now()).add("git_commit", opt.commit);
  result.add("quick", opt.quick).add("part", opt.mode);
  Report report;
  // The file is rewritten after every part ("complete": false until the end), so a run cut off
  // by its stage's time limit still leaves what it finished.
  const std::string path = opt.out_dir + "/" + file_safe(name) + "-" + opt.tag + ".json";
  auto save = [&](bool complete) {
    Json snapshot = result;
    snapshot.add("checks", report.checks_json()).add("failures", report.failures()).add("complete", complete);
    std::ofstream f(path);
    if (f) f << snapshot.str() << "\n";
    if (!f) std::fprintf(stderr, "could not write %s\n", path.c_str());
    else if (complete) std::printf("wrote %s\n", path.c_str());
  };
  try {
    if (opt.checks) {
      std::unique_ptr<Backend> cpu = make_cpu_backend(0), gpu = make_gpu();
      check_ops(*cpu, *gpu, report);
      save(false);
      check_model(report);
    }
    if (opt.bench || opt.steps) {
      const Peaks peaks = measure_peaks();
      result.add("peaks", Json::object().add("gemm_bf16_tflops", peaks.gemm_tflops).add("copy_gbs", peaks.copy_gbs));
      if (opt.bench) {
        std::unique_ptr<Backend> gpu = make_gpu();
        result.add("kernels", bench_kernels(*gpu, peaks, opt.quick));
        save(false);
        result.add("lora_linear", bench_lora(*gpu, peaks, opt.quick));
        save(false);
        result.add("logprobs", bench_logprobs(*gpu, peaks, opt.quick));
      }
      if (opt.steps) result.add("steps", bench_steps(peaks, opt.quick, tasks));
    }
  } catch (const std::exception& e) {
    report.expect(std::string("ran to the end (stopped by: ") + e.what() + ")", false);
  }
  save(true);
  const size_t total = report.checks().size();
  std::printf("%zu checks, %d failed\n", total, report.failures());
  return report.failures() == 0 ? 0 : 1;
}
