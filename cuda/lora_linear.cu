// The LoRA linear layer, W frozen (bf16), A and B f32 masters rounded to bf16 (and zero-padded)
// once per change by pack_lora, which the adapter calls after each optimiser step; without
// that copy (LoraParams::packed null) each call makes it for itself:
//
//   forward:   u = x A^T                       [rows x r]  f32, kept for the backward
//              y = x W^T + bias + s u B^T      = [x | s u] . [W | B]^T  (K extended by r)
//   backward:  s g = s dy B                    [rows x r]  bf16, straight from its GEMM
//              dx (= or +=) dy W + s g A       = [dy | s g] . [W ; A]   (K extended by r)
//              dA += s g^T x,   dB += s dy^T u         (skinny reductions over rows)
//
// Two ways to compute the big product, chosen per backend (LinearKernel):
//   CUBLASLT  the base GEMM on cuBLASLt (bias in its epilogue), then the rank-r term as a second
//             cuBLASLt GEMM accumulating into y (K = r): one extra read and write of y.
//   FUSED     one custom tensor-core kernel (mma.sync m16n8k16 bf16, fp32 accumulators, a
//             3-stage cp.async pipeline) whose K loop runs over [x | s u] and [W | B]: the rank-r
//             term costs r/in more K-iterations and no extra pass; bias and accumulation in its
//             epilogue. Its tile is one generic shape, so cuBLASLt (wgmma on Hopper, tuned tiles)
//             beats it on the base GEMM; a Hopper-grade fused kernel would be a wgmma + TMA
//             kernel with the same K extension, or cuBLASLt with a custom epilogue.
// The skinny products (u, g, dA, dB) are cuBLASLt GEMMs in both. r is padded with zeros to a
// multiple of 8 (cuBLASLt, for 16-byte rows) or 32 (the fused kernel's K tile). Launches per
// call with A and B packed: forward 3 GEMMs (FUSED: 1 + the fused kernel) and 1 rounding kernel
// (s u); backward 5 GEMMs (FUSED: 3 + the fused kernel) and 1 rounding kernel (s u for dB).
#include "gemm.cuh"
#include "ops.cuh"

namespace diffuse {
namespace cuda {
namespace {

// ------------------------------------------------------------------------------- packing
// dst [dst_rows x dst_cols] bf16 = scale * src [src_rows x src_cols] (ld src_ld), zero-padded.
__global__ void pack_bf16_kernel(const float* __restrict__ src, int64_t src_rows, int64_t src_cols, int64_t src_ld,
                                 float scale, bf16* __restrict__ dst, int64_t dst_rows, int64_t dst_cols) {
  const int64_t n = dst_rows * dst_cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / dst_cols, c = i % dst_cols;
    dst[i] = r < src_rows && c < src_cols ? to_bf(scale * src[r * src_ld + c]) : to_bf(0.f);
  }
}

BufferPtr pack_bf16(const Context& ctx, const float* src, int64_t src_rows, int64_t src_cols, int64_t src_ld, float scale,
                    int64_t dst_rows, int64_t dst_cols, const char* what) {
  BufferPtr buf = ctx.scratch(static_cast<size_t>(dst_rows * dst_cols) * sizeof(bf16), what);
  pack_bf16_kernel<<<grid_for(dst_rows * dst_cols, 256, ctx), 256, 0, ctx.stream>>>(
      src, src_rows, src_cols, src_ld, scale, Context::ptr<bf16>(buf), dst_rows, dst_cols);
  DIFFUSE_LAUNCH_CHECK(pack_bf16_kernel);
  return buf;
}

// ------------------------------------------------------------------------------- fused GEMM
constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 3, kThreads = 256;
constexpr int kAStride = kBK + 8;   // bf16 per shared row of an A tile: 80 bytes, ldmatrix conflict-free
constexpr int kBKStride = kBK + 8;  // B tile kept [BN][BK] (B stored [N x K])
constexpr int kBNStride = kBN + 8;  // B tile kept [BK][BN] (B stored [K x N]): 272 bytes
constexpr int kATile = kBM * kAStride;

template <bool kBNMajor>
constexpr int b_tile() { return kBNMajor ? kBK * kBNStride : kBN * kBKStride; }
template <bool kBNMajor>
constexpr size_t fused_shared_bytes() { return sizeof(bf16) * kStages * (kATile + b_tile<kBNMajor>()); }

// C[M x N] = A1 . op(B1) + A2 . op(B2) (+ bias) (+ C), with op(B) = B^T for B stored [N x K]
// (kBNMajor false, the forward's W) or B for B stored [K x N] (true, the backward's W).
struct FusedGemmArgs {
  const bf16* a1;
  int64_t lda1;
  const bf16* b1;
  int64_t ldb1;
  int64_t k1;
  const bf16* a2;
  int64_t lda2;
  const bf16* b2;
  int64_t ldb2;
  int64_t k2;
  const bf16* bias;
  bf16* c;
  int64_t ldc;
  int64_t M, N;
  bool accumulate;
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = pred ? 16 : 0;  // 0: zero-fill, nothing read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const bf16* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const bf16* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Eight warps in a 2 x 4 grid, each owning a 64 x 32 piece of the 128 x 128 tile: 4 x 4
// mma tiles of 16 x 8, 64 f32 accumulators per thread.
template <bool kBNMajor>
__global__ void __launch_bounds__(kThreads) fused_gemm_kernel(FusedGemmArgs p) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  bf16* As = reinterpret_cast<bf16*>(shared_raw);
  bf16* Bs = As + kStages * kATile;
  constexpr int kBTile = b_tile<kBNMajor>();

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBM, n0 = static_cast<int64_t>(blockIdx.x) * kBN;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
  const int kt1 = static_cast<int>(p.k1 / kBK), kt_total = kt1 + static_cast<int>(p.k2 / kBK);

  auto load_tile = [&](int stage, int kt) {
    const bool second = kt >= kt1;
    const bf16* A = second ? p.a2 : p.a1;
    const bf16* B = second ? p.b2 : p.b1;
    const int64_t lda = second ? p.lda2 : p.lda1, ldb = second ? p.ldb2 : p.ldb1;
    const int64_t k0 = static_cast<int64_t>(second ? kt - kt1 : kt) * kBK;
    bf16* as = As + stage * kATile;
    bf16* bs = Bs + stage * kBTile;
    for (int c = tid; c < kBM * (kBK / 8); c += kThreads) {
      const int r = c / (kBK / 8), ch = c % (kBK / 8);
      const bool ok = m0 + r < p.M;
      cp_async16(as + r * kAStride + ch * 8, A + (ok ? m0 + r : 0) * lda + k0 + ch * 8, ok);
    }
    if constexpr (kBNMajor) {
      for (int c = tid; c < kBK * (kBN / 8); c += kThreads) {
        const int r = c / (kBN / 8), ch = c % (kBN / 8);
        const bool ok = n0 + ch * 8 < p.N;
        cp_async16(bs + r * kBNStride + ch * 8, B + (k0 + r) * ldb + (ok ? n0 + ch * 8 : 0), ok);
      }
    } else {
      for (int c = tid; c < kBN * (kBK / 8); c += kThreads) {
        const int r = c / (kBK / 8), ch = c % (kBK / 8);
        const bool ok = n0 + r < p.N;
        cp_async16(bs + r * kBKStride + ch * 8, B + (ok ? n0 + r : 0) * ldb + k0 + ch * 8, ok);
      }
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < kt_total) load_tile(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < kt_total; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile kt has landed for everyone; stage (kt - 1) % kStages is free again
    if (kt + kStages - 1 < kt_total) load_tile((kt + kStages - 1) % kStages, kt + kStages - 1);
    cp_async_commit();

    const bf16* as = As + (kt % kStages) * kATile;
    const bf16* bs = Bs + (kt % kStages) * kBTile;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      unsigned a[4][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) ldmatrix_x4(a[mi], as + (wm + mi * 16 + lane % 16) * kAStride + kk + (lane / 16) * 8);
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        // Matrix i = lane / 8 of the x4 load: k offset (i % 2) * 8, n offset (i / 2) * 8.
        const int i = lane / 8, r = lane % 8;
        unsigned t[4];
        if constexpr (kBNMajor) {
          ldmatrix_x4_trans(t, bs + (kk + (i % 2) * 8 + r) * kBNStride + wn + nj * 16 + (i / 2) * 8);
        } else {
          ldmatrix_x4(t, bs + (wn + nj * 16 + (i / 2) * 8 + r) * kBKStride + kk + (i % 2) * 8);
        }
        b[2 * nj][0] = t[0];
        b[2 * nj][1] = t[1];
        b[2 * nj + 1][0] = t[2];
        b[2 * nj + 1][1] = t[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_bf16(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
    }
  }
  cp_async_wait<0>();

  // Accumulator e of tile (mi, ni): row g (+8 for e >= 2), columns 2c and 2c+1.
  const int g = lane / 4, c2 = (lane % 4) * 2;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t row = m0 + wm + mi * 16 + g + half * 8;
        const int64_t col = n0 + wn + ni * 8 + c2;
        if (row >= p.M || col >= p.N) continue;
        float v0 = acc[mi][ni][2 * half], v1 = acc[mi][ni][2 * half + 1];
        if (p.bias) {
          v0 += to_f(p.bias[col]);
          v1 += to_f(p.bias[col + 1]);
        }
        bf162* out = reinterpret_cast<bf162*>(p.c + row * p.ldc + col);
        if (p.accumulate) {
          const float2 old = __bfloat1622float2(*out);
          v0 += old.x;
          v1 += old.y;
        }
        *out = __floats2bfloat162_rn(v0, v1);
      }
}

// The fused kernel's requirements: whole K tiles, whole 8-column chunks, 16-byte rows.
bool fused_fits(const FusedGemmArgs& p) {
  return p.k1 % kBK == 0 && p.k2 % kBK == 0 && p.N % 8 == 0 && p.lda1 % 8 == 0 && p.ldb1 % 8 == 0 && p.lda2 % 8 == 0 &&
         p.ldb2 % 8 == 0 && p.ldc % 8 == 0 && aligned(p.a1, 16) && aligned(p.b1, 16) && aligned(p.a2, 16) &&
         aligned(p.b2, 16) && aligned(p.c, 16);
}

template <bool kBNMajor>
void fused_gemm(const Context& ctx, const FusedGemmArgs& p) {
  constexpr size_t shared = fused_shared_bytes<kBNMajor>();
  set_dynamic_shared(fused_gemm_kernel<kBNMajor>, shared, "fused LoRA GEMM");
  const dim3 grid(static_cast<unsigned>(ceil_div(p.N, kBN)), static_cast<unsigned>(ceil_div(p.M, kBM)));
  fused_gemm_kernel<kBNMajor><<<grid, kThreads, shared, ctx.stream>>>(p);
  DIFFUSE_LAUNCH_CHECK(fused_gemm_kernel);
}

bool use_fused(const Context& ctx) { return ctx.linear_kernel == LinearKernel::FUSED; }

}  // namespace

int64_t lora_pad(int rank) { return round_up(rank, kBK); }

void pack_lora(const Context& ctx, const float* A, const float* B, int64_t in, int64_t out, int r, bf16* packed) {
  const int64_t rp = lora_pad(r);
  pack_bf16_kernel<<<grid_for(rp * in, 256, ctx), 256, 0, ctx.stream>>>(A, r, in, in, 1.f, packed, rp, in);
  DIFFUSE_LAUNCH_CHECK(pack_bf16_kernel);
  pack_bf16_kernel<<<grid_for(out * rp, 256, ctx), 256, 0, ctx.stream>>>(B, out, r, r, 1.f, packed + rp * in, out, rp);
  DIFFUSE_LAUNCH_CHECK(pack_bf16_kernel);
}

namespace {

// A and B in bf16: the adapter's copy (made once per optimiser step) or one made now.
struct PackedLora {
  BufferPtr own;
  const bf16* A = nullptr;  // [lora_pad(r) x in]
  const bf16* B = nullptr;  // [out x lora_pad(r)]
  int64_t ld = 0;           // lora_pad(r): B's row stride
};

PackedLora packed_lora(const Context& ctx, const LoraParams& lora, int64_t in, int64_t out) {
  PackedLora p;
  p.ld = lora_pad(lora.rank);
  const bf16* base = static_cast<const bf16*>(lora.packed);
  if (!base) {
    p.own = ctx.scratch(static_cast<size_t>(p.ld * (in + out)) * sizeof(bf16), "LoRA A and B in bf16");
    pack_lora(ctx, lora.A, lora.B, in, out, lora.rank, Context::ptr<bf16>(p.own));
    base = Context::ptr<bf16>(p.own);
  }
  p.A = base;
  p.B = base + p.ld * in;
  return p;
}

}  // namespace

void linear_forward(const Context& ctx, const bf16* x, const LinearWeight& W, const LoraParams& lora, bf16* y, float* u,
                    int64_t rows) {
  if (rows <= 0) return;
  const bf16* w = act(W.w);
  const bf16* bias = act(W.bias);
  const GemmOperand x_op{x, DType::BF16, W.in, false};
  const GemmOperand w_op{w, DType::BF16, W.in, true};  // W [out x in]: op = W^T
  const GemmOutput y_out{y, DType::BF16, W.out};
  if (!lora.active()) {
    gemm(ctx, rows, W.out, W.in, x_op, w_op, y_out, 1.f, 0.f, bias);
    return;
  }
  const int r = lora.rank;
  const PackedLora ab = packed_lora(ctx, lora, W.in, W.out);
  // u = x A^T, f32 (A's first r rows).
  gemm(ctx, rows, r, W.in, x_op, {ab.A, DType::BF16, W.in, true}, {u, DType::F32, r}, 1.f, 0.f);

  FusedGemmArgs f{x, W.in, w, W.in, W.in, nullptr, 0, nullptr, 0, 0, bias, y, W.out, rows, W.out, false};
  const int64_t rp = round_up(r, use_fused(ctx) ? kBK : 8);
  BufferPtr su = pack_bf16(ctx, u, rows, r, r, lora.scale, rows, rp, "LoRA s*u in bf16");
  f.a2 = Context::ptr<bf16>(su);
  f.lda2 = rp;
  f.b2 = ab.B;
  f.ldb2 = ab.ld;
  f.k2 = rp;
  if (use_fused(ctx) && fused_fits(f)) {
    fused_gemm<false>(ctx, f);
    return;
  }
  gemm(ctx, rows, W.out, W.in, x_op, w_op, y_out, 1.f, 0.f, bias);
  gemm(ctx, rows, W.out, rp, {f.a2, DType::BF16, rp, false}, {ab.B, DType::BF16, ab.ld, true}, y_out, 1.f, 1.f);
}

void linear_backward(const Context& ctx, const bf16* dy, const bf16* x, const LinearWeight& W, const LoraParams& lora,
                     const float* u, bf16* dx, bool accumulate, const LoraGrads& grads, int64_t rows) {
  if (rows <= 0) return;
  const bf16* w = act(W.w);
  const float beta = accumulate ? 1.f : 0.f;
  const GemmOperand dy_op{dy, DType::BF16, W.out, false};
  const GemmOperand w_op{w, DType::BF16, W.in, false};  // W [out x in] is already [K x N] for dy W
  const GemmOutput dx_out{dx, DType::BF16, W.in};
  if (!lora.active()) {
    gemm(ctx, rows, W.in, W.out, dy_op, w_op, dx_out, 1.f, beta);
    return;
  }
  const int r = lora.rank;
  const int64_t rp = round_up(r, use_fused(ctx) ? kBK : 8);
  const PackedLora ab = packed_lora(ctx, lora, W.in, W.out);
  // s g = s (dy B) in bf16 straight from the GEMM (alpha = s, f32 accumulation, one rounding);
  // the padded columns come out zero.
  BufferPtr sg = ctx.scratch(static_cast<size_t>(rows * rp) * sizeof(bf16), "LoRA s*g in bf16");
  gemm(ctx, rows, rp, W.out, dy_op, {ab.B, DType::BF16, ab.ld, false}, {Context::ptr<bf16>(sg), DType::BF16, rp}, lora.scale, 0.f);
  const bf16* sg_p = Context::ptr<bf16>(sg);

  // dx (= or +=) dy W + (s g) A   (A's first rp rows; rows past r are zero)
  const FusedGemmArgs f{dy, W.out, w, W.in, W.out, sg_p, rp, ab.A, W.in, rp, nullptr, dx, W.in, rows, W.in, accumulate};
  if (use_fused(ctx) && fused_fits(f)) {
    fused_gemm<true>(ctx, f);
  } else {
    gemm(ctx, rows, W.in, W.out, dy_op, w_op, dx_out, 1.f, beta);
    gemm(ctx, rows, W.in, rp, {sg_p, DType::BF16, rp, false}, {ab.A, DType::BF16, W.in, false}, dx_out, 1.f, 1.f);
  }
  // dA [r x in] += (s g)^T x;  dB [out x r] += dy^T (s u)  -- each only when asked for, as on the CPU.
  if (grads.dA)
    gemm(ctx, r, W.in, rows, {sg_p, DType::BF16, rp, true}, {x, DType::BF16, W.in, false}, {grads.dA, DType::F32, W.in},
         1.f, 1.f);
  if (grads.dB) {
    BufferPtr su = pack_bf16(ctx, u, rows, r, r, lora.scale, rows, rp, "LoRA s*u in bf16");
    gemm(ctx, W.out, r, rows, {dy, DType::BF16, W.out, true}, {Context::ptr<bf16>(su), DType::BF16, rp, false},
         {grads.dB, DType::F32, r}, 1.f, 1.f);
  }
}

}  // namespace cuda
}  // namespace diffuse
