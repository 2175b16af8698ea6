// Fused elementwise passes of GPTFF's per-triplet three-body work (see gptff_core/triplets.py).
//
// The matrix products stay in PyTorch (MKL); these loops replace the chains of gathers,
// activations, products and scatters around them, each of which is one memory pass in eager
// PyTorch, by one pass per chain. Every function exists for float (suffix _f32) and double
// (_f64); float uses the vectorisable exp of common.h, double uses std::exp.
//
// Shapes: n triplets (this chunk), F features; p, q, radial: (S, F); first, second: (n,) int64
// rows of p/q/radial; y: (n, 2F), the gate pre-activations then the core pre-activations.
// Row-major, contiguous. "first" is sorted ascending (triplets are grouped by their first bond),
// which lets threads own disjoint output rows without atomics.

#include <omp.h>

#include <cstdint>

#include "common.h"

namespace {

// The range of triplets [begin, end) of this thread, moved to boundaries between runs of equal
// `first`, so that each output row first[t] is written by one thread only.
inline void owned_range(const int64_t* first, int64_t n, int64_t& begin, int64_t& end) {
    const int threads = omp_get_num_threads(), id = omp_get_thread_num();
    begin = n * id / threads;
    end = n * (id + 1) / threads;
    while (begin > 0 && begin < n && first[begin] == first[begin - 1]) ++begin;
    while (end > 0 && end < n && first[end] == first[end - 1]) ++end;
}

// x[t] = silu(p[first[t]] + q[second[t]])
template <typename T>
void silu_of_sum(const T* p, const T* q, const int64_t* first, const int64_t* second, int64_t n,
                 int64_t F, T* x, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* a = p + first[t] * F;
        const T* b = q + second[t] * F;
        T* out = x + t * F;
#pragma omp simd
        for (int64_t k = 0; k < F; ++k) {
            const T v = a[k] + b[k];
            out[k] = v * sigmoid(v);
        }
    }
}

// out[first[t]] += σ(y_gate)·silu(y_core)·radial[second[t]]·(cos[t]·angle_w + angle_b)
template <typename T>
void gated_messages(const T* y, const T* radial, const T* cosine, const T* angle_w,
                    const T* angle_b, const int64_t* first, const int64_t* second, int64_t n,
                    int64_t F, T* out, int threads) {
#pragma omp parallel num_threads(threads)
    {
        int64_t begin, end;
        owned_range(first, n, begin, end);
        for (int64_t t = begin; t < end; ++t) {
            const T* gate = y + t * 2 * F;
            const T* core = gate + F;
            const T* r = radial + second[t] * F;
            const T c = cosine[t];
            T* o = out + first[t] * F;
#pragma omp simd
            for (int64_t k = 0; k < F; ++k) {
                const T angle = c * angle_w[k] + angle_b[k];
                o[k] += sigmoid(gate[k]) * core[k] * sigmoid(core[k]) * r[k] * angle;
            }
        }
    }
}

// Backward of gated_messages, given upstream = dL/dout (S, F):
//   d_y (n, 2F) = dL/dy;  d_radial (n, F) = dL/d radial[second[t]] per triplet;
//   d_cosine (n,) = dL/d cos[t].
template <typename T>
void gated_messages_backward(const T* y, const T* radial, const T* cosine, const T* angle_w,
                             const T* angle_b, const int64_t* first, const int64_t* second,
                             int64_t n, int64_t F, const T* upstream, T* d_y, T* d_radial,
                             T* d_cosine, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* gate = y + t * 2 * F;
        const T* core = gate + F;
        const T* r = radial + second[t] * F;
        const T* u = upstream + first[t] * F;
        const T c = cosine[t];
        T* d_gate = d_y + t * 2 * F;
        T* d_core = d_gate + F;
        T* d_r = d_radial + t * F;
        T d_c = 0;
#pragma omp simd reduction(+ : d_c)
        for (int64_t k = 0; k < F; ++k) {
            const T angle = c * angle_w[k] + angle_b[k];
            const T sg = sigmoid(gate[k]);
            const T sc = sigmoid(core[k]);
            const T silu_core = core[k] * sc;
            const T features = sg * silu_core;
            const T d_features = u[k] * r[k] * angle;
            d_gate[k] = d_features * silu_core * sg * (T(1) - sg);
            d_core[k] = d_features * sg * sc * (T(1) + core[k] * (T(1) - sc));
            d_r[k] = u[k] * features * angle;
            d_c += u[k] * features * r[k] * angle_w[k];
        }
        d_cosine[t] = d_c;
    }
}

// d_x (n, F) ← d_x · silu'(p[first[t]] + q[second[t]]), in place: dL/dx → dL/d(pre-activation)
template <typename T>
void silu_of_sum_backward(const T* p, const T* q, const int64_t* first, const int64_t* second,
                          int64_t n, int64_t F, T* d_x, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* a = p + first[t] * F;
        const T* b = q + second[t] * F;
        T* d = d_x + t * F;
#pragma omp simd
        for (int64_t k = 0; k < F; ++k) d[k] *= silu_derivative(a[k] + b[k]);
    }
}

}  // namespace

#define GPTFF_EXPORT(T, SUFFIX)                                                                \
    extern "C" void silu_of_sum_##SUFFIX(const T* p, const T* q, const int64_t* first,          \
                                          const int64_t* second, int64_t n, int64_t F, T* x,     \
                                          int threads) {                                         \
        silu_of_sum(p, q, first, second, n, F, x, threads);                                     \
    }                                                                                            \
    extern "C" void gated_messages_##SUFFIX(const T* y, const T* radial, const T* cosine,       \
                                             const T* angle_w, const T* angle_b,                 \
                                             const int64_t* first, const int64_t* second,        \
                                             int64_t n, int64_t F, T* out, int threads) {        \
        gated_messages(y, radial, cosine, angle_w, angle_b, first, second, n, F, out, threads); \
    }                                                                                            \
    extern "C" void gated_messages_backward_##SUFFIX(                                           \
        const T* y, const T* radial, const T* cosine, const T* angle_w, const T* angle_b,       \
        const int64_t* first, const int64_t* second, int64_t n, int64_t F, const T* upstream,   \
        T* d_y, T* d_radial, T* d_cosine, int threads) {                                        \
        gated_messages_backward(y, radial, cosine, angle_w, angle_b, first, second, n, F,       \
                                upstream, d_y, d_radial, d_cosine, threads);                    \
    }                                                                                            \
    extern "C" void silu_of_sum_backward_##SUFFIX(const T* p, const T* q, const int64_t* first, \
                                                   const int64_t* second, int64_t n, int64_t F, \
                                                   T* d_x, int threads) {                        \
        silu_of_sum_backward(p, q, first, second, n, F, d_x, threads);                          \
    }

GPTFF_EXPORT(float, f32)
GPTFF_EXPORT(double, f64)
