#include "cpu/adamw.h"

#include <cmath>
#include <vector>

#include "cpu/thread_pool.h"

namespace diffuse {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWParams& params) {
  const AdamWConstants c = adamw_constants(params);
  parallel_for(n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float g = grad[i] * c.grad_scale;
      m[i] += c.one_minus_beta1 * (g - m[i]);
      v[i] = v[i] * c.beta2 + c.one_minus_beta2 * g * g;
      const float denom = std::sqrt(v[i]) / c.bias2_sqrt + c.eps;
      param[i] = param[i] * c.decay + -c.step_size * (m[i] / denom);
    }
  });
}

double sum_squares(const float* x, int64_t n) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(thread_count(), n / 4096));
  std::vector<double> partial(blocks, 0.0);
  parallel_tasks(blocks, [&](int64_t b) {
    double s = 0;
    for (int64_t i = n * b / blocks; i < n * (b + 1) / blocks; ++i) s += static_cast<double>(x[i]) * x[i];
    partial[b] = s;
  });
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace diffuse
