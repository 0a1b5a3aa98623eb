// Embedding gather on the CPU: out[r] = table[tokens[r]], table [vocab x dim]. The table is
// frozen, so there is no backward.
#pragma once

#include <cstdint>

#include "cpu/gemm.h"
#include "engine/backend.h"

namespace diffuse {

void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t rows,
                       int64_t dim);
// The same from a table kept in a storage type, each row widened as it is read.
void embedding_forward(const int32_t* tokens, const StoredMatrix& table, float* out, int64_t rows, int64_t dim);

}  // namespace diffuse
