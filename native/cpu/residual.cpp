#include "cpu/residual.h"

#include "cpu/thread_pool.h"

namespace diffuse {

void add_inplace(float* y, const float* x, int64_t n) {
  parallel_for(n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] += x[i];
  });
}

void scale_inplace(float* x, float s, int64_t n) {
  parallel_for(n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) x[i] *= s;
  });
}

}  // namespace diffuse
