#include "cpu/embedding.h"

#include <cstring>

#include "cpu/thread_pool.h"

namespace diffuse {

void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t rows,
                       int64_t dim) {
  parallel_for(rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      std::memcpy(out + r * dim, table + static_cast<int64_t>(tokens[r]) * dim, dim * sizeof(float));
  });
}

void embedding_forward(const int32_t* tokens, const StoredMatrix& table, float* out, int64_t rows, int64_t dim) {
  parallel_for(rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      widen_range(table.type, table.rows_from(tokens[r]).data, 0, dim, out + r * dim);
  });
}

}  // namespace diffuse
