// A fork-join thread pool shared by every CPU kernel. The calling thread works too; a
// parallel_for issued from inside a pool task runs inline (no nesting, no deadlock); jobs
// from different callers (two models, two async calls) take turns.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

namespace diffuse {

// Number of threads (including the caller) kernels spread over.
int thread_count();
// Sets the pool size; <= 0 means all hardware threads (or DIFFUSE_THREADS when set).
void set_thread_count(int threads);

// Tells the processor this thread is spinning on a flag (x86 PAUSE), between polls.
inline void cpu_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Runs task(i) for every i in [0, n_tasks) across the pool and returns when all are done.
void parallel_tasks(int64_t n_tasks, const std::function<void(int64_t)>& task);

// Splits [0, n) into about thread_count() contiguous blocks of at least min_block items and
// calls body(begin, end) for each, in parallel.
template <typename Body>
void parallel_for(int64_t n, int64_t min_block, Body&& body) {
  if (n <= 0) return;
  const int64_t threads = thread_count();
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(threads, n / std::max<int64_t>(1, min_block)));
  if (blocks == 1) {
    body(int64_t{0}, n);
    return;
  }
  parallel_tasks(blocks, [&](int64_t b) {
    const int64_t begin = n * b / blocks;
    const int64_t end = n * (b + 1) / blocks;
    if (begin < end) body(begin, end);
  });
}

}  // namespace diffuse
