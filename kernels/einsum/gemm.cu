// handgrad's SGEMM: shared-memory tiles, 2-D register blocking, 16-byte loads, and a register
// prefetch of the next K tile that overlaps with the math on the current one (double-buffered
// shared memory, one __syncthreads per K step). Edges are predicated (zero-filled loads, masked
// stores), so no size has to be a multiple of a tile.
#include <cublas_v2.h>

#include "kernels/error.h"
#include "kernels/common.cuh"
#include "kernels/einsum/gemm.h"

namespace handgrad::cuda {

namespace {

// Tile shape: BM x BN outputs per block, BK deep; each thread owns TM x TN outputs, laid out as
// (TM/4) x (TN/4) float4 sub-tiles spread BM/(TM/4) apart, so that a warp's shared-memory
// float4 reads hit consecutive addresses (conflict-free).
template <int BM, int BN, int BK, int TM, int TN, bool TRANS_A, bool TRANS_B>
struct SgemmTile {
  static constexpr int kThreadsN = BN / TN;
  static constexpr int kThreads = (BM / TM) * kThreadsN;
  static constexpr int kChunksA = BM * BK / 4;  // float4 chunks in one A tile
  static constexpr int kChunksB = BN * BK / 4;
  static constexpr int kPerThreadA = (kChunksA + kThreads - 1) / kThreads;
  static constexpr int kPerThreadB = (kChunksB + kThreads - 1) / kThreads;
  static constexpr int kPad = 4;  // keeps rows 16-byte aligned and spreads banks
  static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are made of float4 sub-tiles");
  static_assert(BM % TM == 0 && BN % TN == 0 && BK % 4 == 0, "tiles must divide evenly");
  static_assert(kThreads <= 1024, "too many threads per block");
  static_assert(2 * BK * (BM + BN + 2 * kPad) * 4 <= 48 * 1024, "static shared memory");
};

// One thread's chunk of 4 consecutive floats of an operand tile, located once per tile (64-bit
// index math for every load cost ~100 registers in the 128x128 tile): where it starts, its k
// within a K tile (kk), and how many of its 4 floats lie inside the matrix across K (valid; 0
// for a chunk past the tile). K_ALONG: the 4 floats run along K (tile rows of WIDTH = BK k's,
// one per outer index m or n; the K edge is tested per step); otherwise across it (tile rows of
// WIDTH outer indices, one per k).
struct TileChunk {
  const float* p;
  int kk, valid;
};

template <int WIDTH, bool K_ALONG>
__device__ __forceinline__ TileChunk tile_chunk(const float* mat, int c, int chunks, int64_t outer0, int64_t outer,
                                                int64_t ld) {
  const int row = c / (WIDTH / 4), col4 = (c % (WIDTH / 4)) * 4;
  TileChunk t;
  if (K_ALONG) {
    t.kk = col4;
    t.valid = (c < chunks && outer0 + row < outer) ? 4 : 0;
    t.p = mat + (t.valid ? (outer0 + row) * ld + col4 : 0);
  } else {
    t.kk = row;
    t.valid = c < chunks ? int(min(int64_t(4), max(int64_t(0), outer - (outer0 + col4)))) : 0;
    t.p = mat + (t.valid ? row * ld + outer0 + col4 : 0);
  }
  return t;
}

template <int BM, int BN, int BK, int TM, int TN, bool TRANS_A, bool TRANS_B>
// No minimum blocks per SM in the bounds: asking the 8x8 tile for two (<= 128 registers) spills
// 16-96 bytes (sm_90, ptxas), and asking a 4x4 tile for any raises its count (59-73 -> 89-105).
__global__ void __launch_bounds__(SgemmTile<BM, BN, BK, TM, TN, TRANS_A, TRANS_B>::kThreads)
sgemm_kernel(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ B,
             GemmShape s, bool vec_a, bool vec_b, bool vec_c) {
  using T = SgemmTile<BM, BN, BK, TM, TN, TRANS_A, TRANS_B>;
  __shared__ __align__(16) float As[2][BK][BM + T::kPad];
  __shared__ __align__(16) float Bs[2][BK][BN + T::kPad];

  const int tid = threadIdx.x;
  const int tx = tid % T::kThreadsN, ty = tid / T::kThreadsN;
  const int64_t tiles_m = (s.M + BM - 1) / BM;

  for (int64_t batch = blockIdx.z; batch < s.batch; batch += gridDim.z) {
    const float* a_mat = A + batch * s.stride_a;
    const float* b_mat = B + batch * s.stride_b;
    float* c_mat = C + batch * s.M * s.N;
    for (int64_t tile_m = blockIdx.y; tile_m < tiles_m; tile_m += gridDim.y) {
      const int64_t m0 = tile_m * BM, n0 = int64_t(blockIdx.x) * BN;

      float4 ra[T::kPerThreadA], rb[T::kPerThreadB];
      // Each thread's chunks of the A and B tiles, located once per tile; their pointers walk
      // down K one tile per step.
      TileChunk ca[T::kPerThreadA], cb[T::kPerThreadB];
#pragma unroll
      for (int i = 0; i < T::kPerThreadA; ++i)
        ca[i] = tile_chunk<TRANS_A ? BM : BK, !TRANS_A>(a_mat, tid + i * T::kThreads, T::kChunksA, m0, s.M, s.lda);
#pragma unroll
      for (int i = 0; i < T::kPerThreadB; ++i)
        cb[i] = tile_chunk<TRANS_B ? BK : BN, TRANS_B>(b_mat, tid + i * T::kThreads, T::kChunksB, n0, s.N, s.ldb);
      const int64_t a_step = TRANS_A ? BK * s.lda : BK, b_step = TRANS_B ? BK : BK * s.ldb;
      // Four floats at t.p: the first `valid` of them, and only where k0 + kk (+ j, when K runs
      // along the chunk) is below K; zeros elsewhere.
      auto load_chunk = [&](const TileChunk& t, int k_left, bool k_along, bool vec) {
        if (t.valid == 0 || (!k_along && t.kk >= k_left)) return make_float4(0.f, 0.f, 0.f, 0.f);
        const int n_ok = k_along ? min(4, k_left - t.kk) : t.valid;
        if (vec && n_ok == 4) return __ldg(reinterpret_cast<const float4*>(t.p));
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = j < n_ok ? __ldg(t.p + j) : 0.f;
        return make_float4(v[0], v[1], v[2], v[3]);
      };
      // Global -> registers for the next K tile (k0 = its start), then step the pointers on.
      auto load_tiles = [&](int64_t k0) {
        const int k_left = int(min(s.K - k0, int64_t(BK)));  // K rows left in this tile
#pragma unroll
        for (int i = 0; i < T::kPerThreadA; ++i) {
          ra[i] = load_chunk(ca[i], k_left, !TRANS_A, vec_a);
          ca[i].p += a_step;
        }
#pragma unroll
        for (int i = 0; i < T::kPerThreadB; ++i) {
          rb[i] = load_chunk(cb[i], k_left, TRANS_B, vec_b);
          cb[i].p += b_step;
        }
      };
      // Registers -> shared memory buffer `buf`, always k-major: As[k][m], Bs[k][n].
      auto store_tiles = [&](int buf) {
#pragma unroll
        for (int i = 0; i < T::kPerThreadA; ++i) {
          const int c = tid + i * T::kThreads;
          if (c >= T::kChunksA) break;
          if (!TRANS_A) {
            const int m = c / (BK / 4), k4 = (c % (BK / 4)) * 4;
            As[buf][k4 + 0][m] = ra[i].x;
            As[buf][k4 + 1][m] = ra[i].y;
            As[buf][k4 + 2][m] = ra[i].z;
            As[buf][k4 + 3][m] = ra[i].w;
          } else {
            const int k = c / (BM / 4), m4 = (c % (BM / 4)) * 4;
            *reinterpret_cast<float4*>(&As[buf][k][m4]) = ra[i];
          }
        }
#pragma unroll
        for (int i = 0; i < T::kPerThreadB; ++i) {
          const int c = tid + i * T::kThreads;
          if (c >= T::kChunksB) break;
          if (!TRANS_B) {
            const int k = c / (BN / 4), n4 = (c % (BN / 4)) * 4;
            *reinterpret_cast<float4*>(&Bs[buf][k][n4]) = rb[i];
          } else {
            const int n = c / (BK / 4), k4 = (c % (BK / 4)) * 4;
            Bs[buf][k4 + 0][n] = rb[i].x;
            Bs[buf][k4 + 1][n] = rb[i].y;
            Bs[buf][k4 + 2][n] = rb[i].z;
            Bs[buf][k4 + 3][n] = rb[i].w;
          }
        }
      };

      float acc[TM][TN];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

      load_tiles(0);
      store_tiles(0);
      __syncthreads();
      int buf = 0;
      for (int64_t k0 = 0; k0 < s.K; k0 += BK) {
        const bool has_next = k0 + BK < s.K;
        if (has_next) load_tiles(k0 + BK);  // in flight while we compute on `buf`
#pragma unroll
        for (int k = 0; k < BK; ++k) {
          float a[TM], b[TN];
#pragma unroll
          for (int g = 0; g < TM / 4; ++g) {
            const float4 v = *reinterpret_cast<const float4*>(&As[buf][k][ty * 4 + g * (BM / (TM / 4))]);
            a[g * 4 + 0] = v.x; a[g * 4 + 1] = v.y; a[g * 4 + 2] = v.z; a[g * 4 + 3] = v.w;
          }
#pragma unroll
          for (int g = 0; g < TN / 4; ++g) {
            const float4 v = *reinterpret_cast<const float4*>(&Bs[buf][k][tx * 4 + g * (BN / (TN / 4))]);
            b[g * 4 + 0] = v.x; b[g * 4 + 1] = v.y; b[g * 4 + 2] = v.z; b[g * 4 + 3] = v.w;
          }
#pragma unroll
          for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        if (has_next) store_tiles(buf ^ 1);
        __syncthreads();
        buf ^= 1;
      }

      // Registers -> C, float4 stores where the row allows it.
#pragma unroll
      for (int gi = 0; gi < TM / 4; ++gi)
#pragma unroll
        for (int ei = 0; ei < 4; ++ei) {
          const int64_t m = m0 + ty * 4 + gi * (BM / (TM / 4)) + ei;
          if (m >= s.M) continue;
          float* c_row = c_mat + m * s.N;
#pragma unroll
          for (int gj = 0; gj < TN / 4; ++gj) {
            const int64_t n = n0 + tx * 4 + gj * (BN / (TN / 4));
            const float* v = &acc[gi * 4 + ei][gj * 4];
            if (vec_c && n + 3 < s.N) {
              *reinterpret_cast<float4*>(c_row + n) = make_float4(v[0], v[1], v[2], v[3]);
            } else {
#pragma unroll
              for (int j = 0; j < 4; ++j)
                if (n + j < s.N) c_row[n + j] = v[j];
            }
          }
        }
    }
  }
}

template <int BM, int BN, int BK, int TM, int TN, bool TA, bool TB>
void launch_tile(float* C, const float* A, const float* B, const GemmShape& s) {
  using T = SgemmTile<BM, BN, BK, TM, TN, TA, TB>;
  const bool vec_a = aligned16(A) && s.lda % 4 == 0 && s.stride_a % 4 == 0;
  const bool vec_b = aligned16(B) && s.ldb % 4 == 0 && s.stride_b % 4 == 0;
  const bool vec_c = aligned16(C) && s.N % 4 == 0;
  const int64_t tiles_n = (s.N + BN - 1) / BN, tiles_m = (s.M + BM - 1) / BM;
  HG_ASSERT(tiles_n <= INT32_MAX, "N too large for one GEMM launch");
  dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>(std::min<int64_t>(tiles_m, kMaxGridYZ)),
            static_cast<unsigned>(std::min<int64_t>(s.batch, kMaxGridYZ)));
  HG_LAUNCH(grid, T::kThreads, 0, stream(), sgemm_kernel<BM, BN, BK, TM, TN, TA, TB>)(C, A, B, s, vec_a, vec_b, vec_c);
  CUDA_CHECK_LAUNCH();
}

// The tile configurations gemm_tile_for (gemm.h) chooses between.
template <bool TA, bool TB>
void launch_config(GemmTile cfg, float* C, const float* A, const float* B, const GemmShape& s) {
  switch (cfg) {
    case GemmTile::Large: return launch_tile<128, 128, 16, 8, 8, TA, TB>(C, A, B, s);
    case GemmTile::Small: return launch_tile<64, 64, 16, 4, 4, TA, TB>(C, A, B, s);
    case GemmTile::Narrow: return launch_tile<128, 32, 16, 4, 4, TA, TB>(C, A, B, s);
  }
}

}  // namespace

void gemm_batched(float* C, const float* A, const float* B, const GemmShape& s) {
  check_gemm_shape(s);
  if (s.batch == 0 || s.M == 0 || s.N == 0) return;
  if (s.K == 0) {
    CUDA_CHECK(cudaMemsetAsync(C, 0, sizeof(float) * s.batch * s.M * s.N, stream()));
    return;
  }
  const GemmTile cfg = gemm_tile_for(s, sm_count());
  if (!s.trans_a && !s.trans_b) return launch_config<false, false>(cfg, C, A, B, s);
  if (!s.trans_a && s.trans_b) return launch_config<false, true>(cfg, C, A, B, s);
  if (s.trans_a && !s.trans_b) return launch_config<true, false>(cfg, C, A, B, s);
  return launch_config<true, true>(cfg, C, A, B, s);
}

void gemm_batched_cublas(float* C, const float* A, const float* B, const GemmShape& s) {
  check_gemm_shape(s);
  if (s.batch == 0 || s.M == 0 || s.N == 0) return;
  HG_ASSERT(s.M <= INT32_MAX && s.N <= INT32_MAX && s.K <= INT32_MAX && s.batch <= INT32_MAX,
            "GEMM too large for cuBLAS's int sizes");
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const float one = 1.f, zero = 0.f;
  CUBLAS_CHECK(cublasSetStream(cublas_handle(), stream()));
  CUBLAS_CHECK(cublasSgemmStridedBatched(
      cublas_handle(), s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
      int(s.N), int(s.M), int(s.K), &one, B, int(s.ldb), s.stride_b, A, int(s.lda), s.stride_a,
      &zero, C, int(s.N), s.M * s.N, int(s.batch)));
}

}  // namespace handgrad::cuda
