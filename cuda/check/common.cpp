#include <algorithm>
#include <cstdio>
#include <cstring>

#include "backend_cuda.h"
#include "check/check.h"
#include "engine/errors.h"

namespace diffuse {
namespace check {

// ------------------------------------------------------------------ JSON
std::string json_escape(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

Json& Json::add(const std::string& key, const std::string& value) {
  sep();
  body_ += json_escape(key) + ":" + json_escape(value);
  return *this;
}
Json& Json::add(const std::string& key, double value) {
  sep();
  char buf[64];
  if (std::isfinite(value)) std::snprintf(buf, sizeof buf, "%.6g", value);
  else std::snprintf(buf, sizeof buf, "null");
  body_ += json_escape(key) + ":" + buf;
  return *this;
}
Json& Json::add(const std::string& key, int64_t value) {
  sep();
  body_ += json_escape(key) + ":" + std::to_string(value);
  return *this;
}
Json& Json::add(const std::string& key, bool value) {
  sep();
  body_ += json_escape(key) + ":" + (value ? "true" : "false");
  return *this;
}
Json& Json::add(const std::string& key, const Json& value) {
  sep();
  body_ += json_escape(key) + ":" + value.str();
  return *this;
}
Json& Json::push(const Json& value) {
  sep();
  body_ += value.str();
  return *this;
}

// ------------------------------------------------------------------ report
void Report::check(const std::string& name, double error, double tolerance, const std::string& note) {
  const bool ok = std::isfinite(error) && error <= tolerance;
  checks_.push_back({name, error, tolerance, ok, note});
  std::printf("  %-4s %-58s rel err %.3e (tol %.0e)%s%s\n", ok ? "ok" : "FAIL", name.c_str(), error, tolerance,
              note.empty() ? "" : "  ", note.c_str());
  std::fflush(stdout);
}

void Report::expect(const std::string& name, bool ok, const std::string& note) {
  checks_.push_back({name, ok ? 0.0 : 1.0, 0.0, ok, note});
  std::printf("  %-4s %-58s%s%s\n", ok ? "ok" : "FAIL", name.c_str(), note.empty() ? "" : "  ", note.c_str());
  std::fflush(stdout);
}

int Report::failures() const {
  return static_cast<int>(std::count_if(checks_.begin(), checks_.end(), [](const CheckResult& c) { return !c.passed; }));
}

Json Report::checks_json() const {
  Json arr = Json::array();
  for (const CheckResult& c : checks_) {
    Json o = Json::object();
    o.add("name", c.name).add("error", c.error).add("tolerance", c.tolerance).add("passed", c.passed);
    if (!c.note.empty()) o.add("note", c.note);
    arr.push(o);
  }
  return arr;
}

double rel_error(const std::vector<float>& out, const std::vector<float>& ref) {
  if (out.size() != ref.size() || ref.empty()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i]) || std::isnan(ref[i])) return INFINITY;
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

// ------------------------------------------------------------------ random inputs
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even on the upper 16 bits
  u &= 0xFFFF0000u;
  float y;
  std::memcpy(&y, &u, sizeof y);
  return y;
}

std::vector<float> Rng::normal(size_t n, float std) {
  std::normal_distribution<float> dist(0.f, std);
  std::vector<float> v(n);
  for (float& x : v) x = round_bf16(dist(gen_));
  return v;
}

std::vector<float> Rng::uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = round_bf16(dist(gen_));
  return v;
}

int32_t Rng::integer(int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(gen_); }

// ------------------------------------------------------------------ transfers
BufferPtr Dev::act(const std::vector<float>& h, const char* what) {
  BufferPtr b = be.alloc(std::max<size_t>(1, h.size()) * be.act_elem_size(), what);
  be.act_from_f32(b->data(), h.data(), static_cast<int64_t>(h.size()));
  return b;
}
BufferPtr Dev::act_zeros(size_t n, const char* what) {
  BufferPtr b = be.alloc(std::max<size_t>(1, n) * be.act_elem_size(), what);
  be.zero(b->data(), b->bytes());
  return b;
}
BufferPtr Dev::weight(const std::vector<float>& h, const char* what) {
  return be.make_weight(h.data(), static_cast<int64_t>(h.size()), what);
}
BufferPtr Dev::f32(const std::vector<float>& h, const char* what) {
  BufferPtr b = be.alloc(std::max<size_t>(1, h.size()) * sizeof(float), what);
  be.upload(b->data(), h.data(), h.size() * sizeof(float));
  return b;
}
BufferPtr Dev::f32_zeros(size_t n, const char* what) {
  BufferPtr b = be.alloc(std::max<size_t>(1, n) * sizeof(float), what);
  be.zero(b->data(), b->bytes());
  return b;
}
BufferPtr Dev::i32(const std::vector<int32_t>& h, const char* what) {
  BufferPtr b = be.alloc(std::max<size_t>(1, h.size()) * sizeof(int32_t), what);
  be.upload(b->data(), h.data(), h.size() * sizeof(int32_t));
  return b;
}
BufferPtr Dev::u64(const std::vector<uint64_t>& h, const char* what) {
  BufferPtr b = be.alloc(std::max<size_t>(1, h.size()) * sizeof(uint64_t), what);
  be.upload(b->data(), h.data(), h.size() * sizeof(uint64_t));
  return b;
}
std::vector<float> Dev::read_act(const BufferPtr& b, size_t n) {
  std::vector<float> h(n);
  be.act_to_f32(h.data(), b->data(), static_cast<int64_t>(n));
  return h;
}
std::vector<float> Dev::read_f32(const BufferPtr& b, size_t n) {
  std::vector<float> h(n);
  be.download(h.data(), b->data(), n * sizeof(float));
  return h;
}
std::vector<int32_t> Dev::read_i32(const BufferPtr& b, size_t n) {
  std::vector<int32_t> h(n);
  be.download(h.data(), b->data(), n * sizeof(int32_t));
  return h;
}

// ------------------------------------------------------------------ CUDA extras
int CudaExtras::set_linear_kernel(Backend& be, const char* name) { return diffuse_cuda_set_linear_kernel(&be, name); }
void CudaExtras::set_chunk_logits(Backend& be, int64_t logits) { diffuse_cuda_set_chunk_logits(&be, logits); }
void CudaExtras::memory(Backend& be, size_t* in_use, size_t* peak, size_t* reserved) {
  diffuse_cuda_memory(&be, in_use, peak, reserved);
}
void CudaExtras::reset_peak(Backend& be) { diffuse_cuda_reset_peak(&be); }

std::unique_ptr<Backend> make_gpu() {
  char err[512] = {0};
  Backend* be = diffuse_cuda_create_backend(0, err, sizeof err);
  if (!be) throw Error(ErrorCode::DEVICE, std::string("could not start the CUDA backend: ") + err);
  return std::unique_ptr<Backend>(be);
}

// ------------------------------------------------------------------ timing
double time_op(Backend& be, const std::function<void()>& fn, int reps, int warmup, int inner) {
  for (int i = 0; i < warmup; ++i) fn();
  be.synchronize();
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < inner; ++i) fn();
    be.synchronize();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / inner);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace check
}  // namespace diffuse
