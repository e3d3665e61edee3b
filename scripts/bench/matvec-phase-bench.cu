// Decode matvec phase microbenchmark (standalone CUDA, built with nvcc on the GPU machine):
//
//   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/matvec-phase-bench scripts/bench/matvec-phase-bench.cu
//   /tmp/matvec-phase-bench
//
// One phase of the decode megakernel, reduced to its skeleton: a persistent cooperative grid
// (one 384-thread block per SM), a norm-like prologue that reads an f32 vector at L2 and
// reduces it over the block, a matvec whose R-row items go round-robin over the grid's warps
// (each lane 16-byte loads, K/256 steps per row, as in codegen/src/blocks/matvec.rs), and the
// megakernel's grid barrier (fire-and-forget release add, acquire poll). The phase runs 600
// times over a pool of matrices larger than L2, so every weight byte comes from DRAM.
// Variants differ only in when a warp issues its weight loads:
//   plain                   load an item, use it, next item (the megakernel today)
//   first item preloaded    the first item of the next phase is loaded into registers after
//                           arriving at the barrier, before waiting
//   next item double-buffered  item k+1's loads are issued before item k is used
//   preload + double-buffer both
//   next item L2 prefetch   prefetch.global.L2 of item k+1 before item k
// Prints us per phase (median [min-max] of 5 launches after 1 warm-up) against the time the
// phase's bytes take at the read bandwidth of a plain streaming kernel in the same run.
// RESULTS.md ("Decode matvec phases in isolation") has the H100 numbers.
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
typedef unsigned short u16; typedef unsigned int u32; typedef unsigned long long u64;
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1);} } while (0)
constexpr int THREADS = 384, WARPS = 12;
__device__ __forceinline__ uint4 ldw(const void* p) { uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p)); return r; }
__device__ __forceinline__ float dot8(uint4 w, float4 a, float4 b) {
  float s = __uint_as_float(w.x << 16) * a.x; s = fmaf(__uint_as_float(w.x & 0xffff0000u), a.y, s);
  s = fmaf(__uint_as_float(w.y << 16), a.z, s); s = fmaf(__uint_as_float(w.y & 0xffff0000u), a.w, s);
  s = fmaf(__uint_as_float(w.z << 16), b.x, s); s = fmaf(__uint_as_float(w.z & 0xffff0000u), b.y, s);
  s = fmaf(__uint_as_float(w.w << 16), b.z, s); s = fmaf(__uint_as_float(w.w & 0xffff0000u), b.w, s); return s; }
__device__ __forceinline__ float wsum(float v) { for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(~0u, v, o); return v; }
__device__ __forceinline__ u64 ldacq(const u64* p) { u64 v; asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory"); return v; }

template <int R, int K> struct Buf { uint4 w[K / 256][R]; };

// Issue the loads of one item (R rows starting at row0) into b.
template <int R, int K> __device__ __forceinline__ void issue(Buf<R, K>& b, const u16* W, int row0) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int it = 0; it < K / 256; ++it)
#pragma unroll
    for (int r = 0; r < R; ++r) b.w[it][r] = ldw(reinterpret_cast<const uint4*>(W + (size_t)(row0 + r) * K) + it * 32 + lane);
}
template <int R, int K> __device__ __forceinline__ void consume(const Buf<R, K>& b, const float* xs, int row0, float* y) {
  const int lane = threadIdx.x & 31; const float4* x4 = reinterpret_cast<const float4*>(xs);
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.f;
#pragma unroll
  for (int it = 0; it < K / 256; ++it) { const int c = it * 32 + lane; const float4 a = x4[2 * c], bb = x4[2 * c + 1];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] += dot8(b.w[it][r], a, bb); }
#pragma unroll
  for (int r = 0; r < R; ++r) { acc[r] = wsum(acc[r]); if (lane == r) y[row0 + r] = acc[r]; }
}
template <int R, int K> __device__ __forceinline__ void prefetch_item(const u16* W, int row0) {
  const int lane = threadIdx.x & 31;
  if (lane < 4 * (K / 256)) {   // one 128-byte line per lane
    const int it = lane / 4, part = lane % 4;
#pragma unroll
    for (int r = 0; r < R; ++r) asm volatile("prefetch.global.L2 [%0];" :: "l"(reinterpret_cast<const char*>(W + (size_t)(row0 + r) * K) + it * 512 + part * 128));
  }
}

// V (variant): 0 plain, 1 first item preloaded across the barrier, 2 next item double-buffered,
// 3 = 1 + 2, 4 next item L2 prefetch
template <int V, int R, int K, int M>
__global__ void __launch_bounds__(THREADS, 1) phase_loop(const u16* pool, int nmat, int nph, const float* xin, float* y, u64* bar) {
  extern __shared__ float xs[];
  __shared__ float red[WARPS]; __shared__ u64 target;
  constexpr int ITEMS = M / R;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int first = warp * gridDim.x + blockIdx.x, stride = gridDim.x * WARPS;
  if (threadIdx.x == 0) target = ldacq(bar) / gridDim.x * gridDim.x;
  Buf<R, K> cur, nxt;
  const size_t mat = (size_t)M * K;
  if (V == 1 || V == 3) if (first < ITEMS) issue<R, K>(cur, pool, first * R);
  for (int p = 0; p < nph; ++p) {
    const u16* W = pool + (size_t)(p % nmat) * mat;
    // prologue: x = xin / rms
    float v[(K + THREADS - 1) / THREADS]; float ss = 0.f;
#pragma unroll
    for (int k = 0; k < (K + THREADS - 1) / THREADS; ++k) { const int i = threadIdx.x + k * THREADS; v[k] = i < K ? __ldcg(xin + i) : 0.f; ss += v[k] * v[k]; }
    ss = wsum(ss); if (lane == 0) red[warp] = ss; __syncthreads(); ss = wsum(lane < WARPS ? red[lane] : 0.f);
    const float inv = rsqrtf(ss / K + 1e-6f);
#pragma unroll
    for (int k = 0; k < (K + THREADS - 1) / THREADS; ++k) { const int i = threadIdx.x + k * THREADS; if (i < K) xs[i] = v[k] * inv; }
    __syncthreads();
    if (V == 0 || V == 4) {
      for (int item = first; item < ITEMS; item += stride) {
        if (V == 4 && item + stride < ITEMS) prefetch_item<R, K>(W, (item + stride) * R);
        issue<R, K>(cur, W, item * R); consume<R, K>(cur, xs, item * R, y);
      }
    } else if (V == 1) {
      for (int item = first; item < ITEMS; item += stride) {
        if (item != first) issue<R, K>(cur, W, item * R);
        consume<R, K>(cur, xs, item * R, y);
      }
    } else {  // 2, 3: two buffers, loop unrolled by two
      int item = first;
      if (V == 2 && item < ITEMS) issue<R, K>(cur, W, item * R);
      while (item < ITEMS) {
        if (item + stride < ITEMS) issue<R, K>(nxt, W, (item + stride) * R);
        consume<R, K>(cur, xs, item * R, y);
        item += stride; if (item >= ITEMS) break;
        if (item + stride < ITEMS) issue<R, K>(cur, W, (item + stride) * R);
        consume<R, K>(nxt, xs, item * R, y);
        item += stride;
      }
    }
    // grid barrier
    __syncthreads();
    if (threadIdx.x == 0) { target += gridDim.x; asm volatile("red.release.gpu.global.add.u64 [%0], 1;" :: "l"(bar) : "memory"); }
    if ((V == 1 || V == 3) && p + 1 < nph && first < ITEMS) issue<R, K>(cur, pool + (size_t)((p + 1) % nmat) * mat, first * R);
    if (threadIdx.x == 0) { while (ldacq(bar) < target) {} }
    __syncthreads();
  }
}

__global__ void stream_read(const uint4* p, size_t n, float* out) {
  float s = 0.f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) { uint4 w = ldw(p + i); s += __uint_as_float(w.x) + __uint_as_float(w.w); }
  if (s == 1.2345f) out[0] = s;
}

template <int V, int R, int K, int M>
void run(const char* name, const u16* pool, size_t pool_bytes, const float* xin, float* y, u64* bar, int sms, double bw) {
  const size_t mb = (size_t)M * K * 2; const int nmat = std::max<size_t>(2, (pool_bytes / mb));
  const int nph = 600;
  auto k = phase_loop<V, R, K, M>;
  const int smem = K * 4;
  CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int nph_ = nph;
  void* args[] = {(void*)&pool, (void*)&nmat, (void*)&nph_, (void*)&xin, (void*)&y, (void*)&bar};
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  std::vector<float> t;
  for (int rep = 0; rep < 6; ++rep) {
    CK(cudaEventRecord(a));
    CK(cudaLaunchCooperativeKernel((void*)k, sms, THREADS, args, smem, 0));
    CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b));
    float ms; cudaEventElapsedTime(&ms, a, b); if (rep) t.push_back(ms * 1000.f / nph);
  }
  std::sort(t.begin(), t.end());
  const double ideal = mb / bw * 1e6;
  printf("%-34s M=%5d K=%5d R=%d  %6.2f us/phase [%5.2f-%5.2f]  ideal %5.2f  eff %4.1f%%\n", name, M, K, R, t[t.size() / 2], t.front(), t.back(), ideal, 100 * ideal / t[t.size() / 2]);
}
template <int R, int K, int M>
void shape(const u16* pool, size_t pb, const float* xin, float* y, u64* bar, int sms, double bw) {
  run<0, R, K, M>("plain", pool, pb, xin, y, bar, sms, bw);
  run<1, R, K, M>("first item preloaded at barrier", pool, pb, xin, y, bar, sms, bw);
  run<2, R, K, M>("next item double-buffered", pool, pb, xin, y, bar, sms, bw);
  run<3, R, K, M>("preload + double-buffer", pool, pb, xin, y, bar, sms, bw);
  run<4, R, K, M>("next item L2 prefetch", pool, pb, xin, y, bar, sms, bw);
}
int main() {
  int sms; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t pb = 320ull << 20; u16* pool; CK(cudaMalloc(&pool, pb));
  CK(cudaMemset(pool, 0x3c, pb));
  float *xin, *y, *out; u64* bar; CK(cudaMalloc(&xin, 65536)); CK(cudaMalloc(&y, 1 << 20)); CK(cudaMalloc(&bar, 8)); CK(cudaMalloc(&out, 4));
  CK(cudaMemset(bar, 0, 8));
  std::vector<float> h(16384); for (auto& v : h) v = (rand() % 1000) / 1000.f; CK(cudaMemcpy(xin, h.data(), 65536, cudaMemcpyHostToDevice));
  // read bandwidth
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b); std::vector<float> t;
  for (int rep = 0; rep < 6; ++rep) { cudaEventRecord(a); stream_read<<<sms * 4, 512>>>((const uint4*)pool, pb / 16, out); cudaEventRecord(b); cudaEventSynchronize(b); float ms; cudaEventElapsedTime(&ms, a, b); if (rep) t.push_back(ms); }
  std::sort(t.begin(), t.end()); const double bw = pb / (t[t.size() / 2] * 1e-3);
  printf("stream read: %.0f GB/s (median of 5)\n", bw / 1e9);
  // barrier + prologue only (M tiny)
  run<0, 2, 1024, 2>("barrier+prologue only", pool, pb, xin, y, bar, sms, bw);
  shape<2, 1024, 8224>(pool, pb, xin, y, bar, sms, bw);   // GDN in_proj
  shape<4, 1024, 3584>(pool, pb, xin, y, bar, sms, bw);   // MLP gate/up pairs as 4-row items
  shape<1, 2048, 1024>(pool, pb, xin, y, bar, sms, bw);   // out_proj-like, 1 row per item
  shape<2, 1024, 1024>(pool, pb, xin, y, bar, sms, bw);   // small phase
  CK(cudaDeviceSynchronize());
  return 0;
}
