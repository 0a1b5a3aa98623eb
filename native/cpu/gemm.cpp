// The GEMM driver: picks the instruction set once, splits C into one sub-block per thread and
// runs the single-threaded kernels of cpu/gemm_kernels.h on each. This file is compiled for
// baseline x86-64 and also instantiates the portable kernels.
#include "cpu/gemm.h"
#include "cpu/simd.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

#include <unistd.h>

#include "cpu/gemm_kernels.h"
#include "cpu/thread_pool.h"

namespace diffuse {
namespace gemm_detail {
namespace {

// Four floats a register through GCC / Clang vector extensions: SSE2 on any x86-64, NEON on
// ARM, plain scalar code elsewhere.
struct Portable {
  typedef float reg __attribute__((vector_size(16)));
  static constexpr int W = 4;
  static reg zero() { return reg{0.f, 0.f, 0.f, 0.f}; }
  static reg load(const float* p) {
    reg r;
    std::memcpy(&r, p, sizeof r);
    return r;
  }
  static reg load_n(const float* p, int n) {
    reg r = zero();
    for (int i = 0; i < n; ++i) r[i] = p[i];
    return r;
  }
  static void store(float* p, reg v) { std::memcpy(p, &v, sizeof v); }
  static void store_n(float* p, reg v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
  static reg broadcast(const float* p) { return reg{*p, *p, *p, *p}; }
  static reg fma(reg a, reg b, reg c) { return a * b + c; }
  static reg add(reg a, reg b) { return a + b; }
  static float hsum(reg v) { return (v[0] + v[1]) + (v[2] + v[3]); }
  static void prefetch(const float* p) { __builtin_prefetch(p); }
  static void transpose8(const float* s, int64_t ld, float* d, int64_t ldd) {
    for (int c = 0; c < 8; ++c)
      for (int r = 0; r < 8; ++r) d[c * ldd + r] = s[r * ld + c];
  }
  // direct path for at most 4 rows: the packed tile
  static constexpr int direct_mr = 4, direct_nv = 2;
  // dot path: 2 x 4 tiles, 1 x 8 for a single row
  static constexpr int dot_md = 2, dot_nd = 4, dot_md_narrow = 2, dot_narrow = 4, dot_wide = 8;
};

// Register tile 4 x 8: 8 of the 16 xmm registers accumulate.
using PortableShape = PackedShape<4, 2, 256, 384, 576>;

constexpr Kernels kPortable{"generic", PortableShape::MR, PortableShape::NV * Portable::W,
                            PortableShape::KC, PortableShape::MC, PortableShape::NC,
                            &pack_a_rows<Portable, PortableShape>, &packed_tile<Portable, PortableShape>, &packed_scratch<Portable, PortableShape>,
                            &direct_block<Portable, PortableShape>,
                            &direct_scratch<Portable, PortableShape>, &dot_block<Portable>,
                            &dot_scratch};

}  // namespace

const Kernels* kernels_generic() { return &kPortable; }

}  // namespace gemm_detail

namespace {

using gemm_detail::Kernels;
using gemm_detail::Problem;
using gemm_detail::ceil_div;
using gemm_detail::min64;

// The best kernels this processor runs, capped by DIFFUSE_CPU_ISA (avx2 | generic) like every
// other CPU kernel (simd.h), for tests and comparisons.
const Kernels* choose_kernels() {
  switch (simd::cpu_isa()) {
    case simd::Isa::avx512: return gemm_detail::kernels_avx512();
    case simd::Isa::avx2: return gemm_detail::kernels_avx2();
    case simd::Isa::generic: break;
  }
  return gemm_detail::kernels_generic();
}

const Kernels& kernels() {
  static const Kernels* chosen = choose_kernels();
  return *chosen;
}

// Below this many flops per task, handing work to another thread costs more than it saves.
constexpr double kMinFlopsPerTask = 1e6;
// Tasks per thread: the pool hands tasks out as threads come free, so a thread slowed by
// another process (or a slower core) takes fewer of them.
constexpr int64_t kTasksPerThread = 4;
// nt with at most this many rows takes the dot path: transposing all of B into packed
// slivers would cost more than the product itself.
constexpr int64_t kDotMaxRows = 16;

// The calling thread's scratch, reused across calls (it only grows). It is allocated before
// any task is handed out, so running out of memory throws to the GEMM's caller, never inside
// a task the pool runs for it.
float* scratch(size_t floats) {
  struct Buffer {
    float* data = nullptr;
    size_t floats = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buf;
  if (buf.floats < floats) {
    std::free(buf.data);
    buf.data = nullptr;
    buf.floats = 0;
    const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    buf.data = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (buf.data == nullptr) throw std::bad_alloc();
    buf.floats = floats;
  }
  return buf.data;
}

size_t round16(size_t floats) { return (floats + 15) / 16 * 16; }

// A split of C into row blocks x column chunks, on multiples of (mu, nu).
struct Split {
  int64_t rows, cols;  // per block / chunk
  int64_t tm, tn;      // how many
};

Split split(int64_t M, int64_t N, int64_t mu, int64_t nu, int64_t tm, int64_t tn) {
  tm = std::max<int64_t>(1, std::min(tm, ceil_div(M, mu)));
  tn = std::max<int64_t>(1, std::min(tn, ceil_div(N, nu)));
  const int64_t rows = ceil_div(ceil_div(M, mu), tm) * mu, cols = ceil_div(ceil_div(N, nu), tn) * nu;
  return {rows, cols, ceil_div(M, rows), ceil_div(N, cols)};
}

// Runs body(m0, m1, n0, n1, task) over the blocks of a split, spread over the pool.
template <typename Body>
void run_split(const Problem& p, const Split& s, Body&& body) {
  auto task = [&](int64_t t) {
    const int64_t i = t / s.tn, j = t % s.tn;
    const int64_t m0 = i * s.rows, n0 = j * s.cols;
    body(m0, std::min(p.M, m0 + s.rows), n0, std::min(p.N, n0 + s.cols), t);
  };
  if (s.tm * s.tn == 1) task(0);
  else parallel_tasks(s.tm * s.tn, task);
}

// Rows of the packed path's row blocks: the kernels' MC, or more where this processor's L2
// holds more, as many as fill half of it with packed A at a full K block. Each row block packs
// (and widens) every B sliver again, so on a 2 MiB L2 a step's 852-row products take one row
// block instead of three (4 % of a names step on a Xeon with AVX-512).
int64_t row_block_rows(const Kernels& k) {
  static const int64_t rows = [&] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    const int64_t fit = l2 > 0 ? static_cast<int64_t>(l2) / 2 / (k.kc * static_cast<int64_t>(sizeof(float))) / k.mr * k.mr : 0;
    return std::max<int64_t>(k.mc, fit);
  }();
  return rows;
}

// Packed path: A is packed once into a buffer all tasks share; then tasks of (row block,
// column chunk) each pack their own B slivers. Row blocks stay within row_block_rows(), and
// are split further only when there are fewer column slivers than threads (each extra row
// block packs B again). One pool job does both: every task first takes units of A (row
// sliver, K block) to pack until none are left, then waits for the units other threads took,
// then computes. So A is packed in parallel at any size, without a job (and a wake-up) of its
// own, and a thread that joins late finds A packed and goes straight to its tasks.
void run_packed(const Problem& p, const Kernels& k, int64_t tasks, int64_t threads) {
  const int64_t Kt = p.K + p.K2, kc = gemm_detail::k_block(Kt, k.kc), kblocks = ceil_div(Kt, kc);
  const int64_t Mp = ceil_div(p.M, k.mr) * k.mr, slivers = ceil_div(p.N, k.nr);
  const int64_t tm = std::max(ceil_div(p.M, row_block_rows(k)), ceil_div(std::min(tasks, threads), slivers));
  const Split s = split(p.M, p.N, k.mr, k.nr, tm, ceil_div(tasks, tm));
  const size_t apack_floats = round16(static_cast<size_t>(Mp * kc * kblocks));
  const size_t bsliver_floats = round16(k.packed_scratch(p));
  float* apack = scratch(apack_floats + bsliver_floats * static_cast<size_t>(s.tm * s.tn));
  float* bslivers = apack + apack_floats;

  const int64_t row_slivers = Mp / k.mr, units = row_slivers * kblocks;
  std::atomic<int64_t> next_unit{0}, packed_units{0};
  run_split(p, s, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t t) {
    for (int64_t u; (u = next_unit.fetch_add(1, std::memory_order_relaxed)) < units;) {
      const int64_t b = u / row_slivers, i = (u % row_slivers) * k.mr;
      k.pack_a(p, i, i + k.mr, b, apack);
      packed_units.fetch_add(1, std::memory_order_release);
    }
    // A unit takes a microsecond or two; a longer wait means its thread lost its core (a busy
    // machine), so give the core up rather than spin through the timeslice it needs.
    for (int spins = 0; packed_units.load(std::memory_order_acquire) < units; ++spins) {
      if (spins < 4096) cpu_pause();
      else std::this_thread::yield();
    }
    k.packed(p, apack, m0, m1, n0, n1, bslivers + bsliver_floats * static_cast<size_t>(t));
  });
}

void run(const Problem& p) {
  if (p.M <= 0 || p.N <= 0) return;
  const int64_t Kt = p.K + p.K2;
  if (p.beta != 0.f && p.beta != 1.f)
    for (int64_t i = 0; i < p.M; ++i)
      for (int64_t j = 0; j < p.N; ++j) p.C[i * p.ldc + j] *= p.beta;
  if (Kt <= 0) {  // C = beta C + bias
    for (int64_t i = 0; i < p.M; ++i)
      for (int64_t j = 0; j < p.N; ++j)
        p.C[i * p.ldc + j] = (p.beta == 0.f ? 0.f : p.C[i * p.ldc + j]) + (p.bias ? p.bias[j] : 0.f);
    return;
  }
  const Kernels& k = kernels();
  const double flops = 2.0 * p.M * p.N * Kt;
  const int64_t threads = thread_count();
  const int64_t tasks = threads == 1 ? 1
                        : std::max<int64_t>(1, std::min<int64_t>(kTasksPerThread * threads,
                                                                 static_cast<int64_t>(flops / kMinFlopsPerTask)));
  if (!p.a_kmajor && (p.N * 2 <= k.nr || (p.b_nmajor && p.M <= kDotMaxRows))) {
    // Rows when there are enough of them (B is shared, A and C split); columns otherwise.
    // Whole dot tiles: 1..6 x 4..8.
    const Split s = p.M >= 12 * tasks ? split(p.M, p.N, 12, 24, tasks, 1) : split(p.M, p.N, 12, 24, 1, tasks);
    const size_t per_task = round16(k.dot_scratch(p, s.rows, s.cols));
    float* buf = scratch(per_task * static_cast<size_t>(s.tm * s.tn));
    run_split(p, s, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t t) {
      k.dot(p, m0, m1, n0, n1, buf + per_task * static_cast<size_t>(t));
    });
  } else if (!p.b_nmajor && p.M <= gemm_detail::kDirectGroups * k.mr) {
    const Split s = split(p.M, p.N, k.mr, k.nr, 1, tasks);
    const size_t per_task = round16(k.direct_scratch(p, s.rows, s.cols));
    float* buf = scratch(per_task * static_cast<size_t>(s.tm * s.tn));
    run_split(p, s, [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t t) {
      k.direct(p, m0, m1, n0, n1, buf + per_task * static_cast<size_t>(t));
    });
  } else {
    run_packed(p, k, tasks, threads);
  }
}

void add_extra(Problem& p, const GemmExtra* extra) {
  if (!extra) return;
  if (extra->K2 > 0) p.A2 = extra->A2, p.lda2 = extra->lda2, p.B2 = extra->B2, p.ldb2 = extra->ldb2, p.K2 = extra->K2;
  p.bias = extra->bias;
}

// A stored B: F32 storage is the plain path with ldb = row_bytes / 4.
void set_stored_b(Problem& p, const StoredMatrix& B) {
  if (B.type == StorageType::F32) {
    p.B = static_cast<const float*>(B.data), p.ldb = B.row_bytes / static_cast<int64_t>(sizeof(float));
  } else {
    p.b_stored = B.data, p.b_type = B.type, p.b_row_bytes = B.row_bytes;
  }
}

}  // namespace

void sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, float beta, float* C, int64_t ldc, const GemmExtra* extra) {
  Problem p;
  p.M = M, p.N = N, p.K = K, p.A = A, p.lda = lda, p.B = B, p.ldb = ldb;
  add_extra(p, extra);
  p.b_nmajor = true, p.beta = beta, p.C = C, p.ldc = ldc;
  run(p);
}

void sgemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, float beta, float* C, int64_t ldc, const GemmExtra* extra) {
  Problem p;
  p.M = M, p.N = N, p.K = K, p.A = A, p.lda = lda, p.B = B, p.ldb = ldb;
  add_extra(p, extra);
  p.beta = beta, p.C = C, p.ldc = ldc;
  run(p);
}

void sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const StoredMatrix& B,
              float beta, float* C, int64_t ldc, const GemmExtra* extra) {
  Problem p;
  p.M = M, p.N = N, p.K = K, p.A = A, p.lda = lda;
  set_stored_b(p, B);
  add_extra(p, extra);
  p.b_nmajor = true, p.beta = beta, p.C = C, p.ldc = ldc;
  run(p);
}

void sgemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const StoredMatrix& B,
              float beta, float* C, int64_t ldc, const GemmExtra* extra) {
  Problem p;
  p.M = M, p.N = N, p.K = K, p.A = A, p.lda = lda;
  set_stored_b(p, B);
  add_extra(p, extra);
  p.beta = beta, p.C = C, p.ldc = ldc;
  run(p);
}

void sgemm_tn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, float beta, float* C, int64_t ldc) {
  Problem p;
  p.M = M, p.N = N, p.K = K, p.A = A, p.lda = lda, p.B = B, p.ldb = ldb;
  p.a_kmajor = true, p.beta = beta, p.C = C, p.ldc = ldc;
  run(p);
}

const char* gemm_isa() { return kernels().name; }

}  // namespace diffuse
