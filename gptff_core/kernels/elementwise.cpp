// Fused elementwise chains of GPTFF's bond and atom updates (see gptff_core/fused.py): each
// function is one memory pass where eager PyTorch makes several. float (_f32) uses the
// vectorisable exp of common.h, double (_f64) std::exp. Row-major, contiguous arrays; n rows.

#include <cstdint>

#include "common.h"

namespace {

// out = y + a[first] + b[second]  (n, F); with `activate`, pre keeps that sum and out = silu(it)
template <typename T>
void gather_add(const T* y, const T* a, const T* b, const int64_t* first, const int64_t* second,
                int64_t n, int64_t F, int activate, T* pre, T* out, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* yr = y + t * F;
        const T* ar = a + first[t] * F;
        const T* br = b + second[t] * F;
        T* o = out + t * F;
        if (activate) {
            T* p = pre + t * F;
#pragma omp simd
            for (int64_t k = 0; k < F; ++k) {
                const T v = yr[k] + ar[k] + br[k];
                p[k] = v;
                o[k] = v * sigmoid(v);
            }
        } else {
#pragma omp simd
            for (int64_t k = 0; k < F; ++k) o[k] = yr[k] + ar[k] + br[k];
        }
    }
}

// d_pre (n, F) = d_out · silu'(pre)
template <typename T>
void silu_backward(const T* pre, const T* d_out, int64_t n, int64_t F, T* d_pre, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* p = pre + t * F;
        const T* u = d_out + t * F;
        T* d = d_pre + t * F;
#pragma omp simd
        for (int64_t k = 0; k < F; ++k) d[k] = u[k] * silu_derivative(p[k]);
    }
}

// y = [core | gate] (n, 2F): out = silu(core)·σ(gate)·m, m (n, F) or none (null)
template <typename T>
void gated_silu(const T* y, const T* m, int64_t n, int64_t F, T* out, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* core = y + t * 2 * F;
        const T* gate = core + F;
        T* o = out + t * F;
        if (m) {
            const T* mr = m + t * F;
#pragma omp simd
            for (int64_t k = 0; k < F; ++k)
                o[k] = core[k] * sigmoid(core[k]) * sigmoid(gate[k]) * mr[k];
        } else {
#pragma omp simd
            for (int64_t k = 0; k < F; ++k) o[k] = core[k] * sigmoid(core[k]) * sigmoid(gate[k]);
        }
    }
}

// Backward of gated_silu: d_y (n, 2F) and, with m, d_m (n, F), from d_out (n, F)
template <typename T>
void gated_silu_backward(const T* y, const T* m, const T* d_out, int64_t n, int64_t F, T* d_y,
                         T* d_m, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* core = y + t * 2 * F;
        const T* gate = core + F;
        const T* u = d_out + t * F;
        T* d_core = d_y + t * 2 * F;
        T* d_gate = d_core + F;
        if (m) {
            const T* mr = m + t * F;
            T* dm = d_m + t * F;
#pragma omp simd
            for (int64_t k = 0; k < F; ++k) {
                const T sc = sigmoid(core[k]);
                const T sg = sigmoid(gate[k]);
                const T silu_core = core[k] * sc;
                const T g = u[k] * mr[k];
                d_core[k] = g * sg * sc * (T(1) + core[k] * (T(1) - sc));
                d_gate[k] = g * silu_core * sg * (T(1) - sg);
                dm[k] = u[k] * silu_core * sg;
            }
        } else {
#pragma omp simd
            for (int64_t k = 0; k < F; ++k) {
                const T sc = sigmoid(core[k]);
                const T sg = sigmoid(gate[k]);
                d_core[k] = u[k] * sg * sc * (T(1) + core[k] * (T(1) - sc));
                d_gate[k] = u[k] * core[k] * sc * sg * (T(1) - sg);
            }
        }
    }
}

// out = residual + silu(x)·r  (n, F)
template <typename T>
void silu_times(const T* x, const T* r, const T* residual, int64_t n, int64_t F, T* out,
                int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* xr = x + t * F;
        const T* rr = r + t * F;
        const T* e = residual + t * F;
        T* o = out + t * F;
#pragma omp simd
        for (int64_t k = 0; k < F; ++k) o[k] = e[k] + xr[k] * sigmoid(xr[k]) * rr[k];
    }
}

// Backward of silu_times: d_x = d_out·r·silu'(x), d_r = d_out·silu(x)
template <typename T>
void silu_times_backward(const T* x, const T* r, const T* d_out, int64_t n, int64_t F, T* d_x,
                         T* d_r, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n; ++t) {
        const T* xr = x + t * F;
        const T* rr = r + t * F;
        const T* u = d_out + t * F;
        T* dx = d_x + t * F;
        T* dr = d_r + t * F;
#pragma omp simd
        for (int64_t k = 0; k < F; ++k) {
            const T s = sigmoid(xr[k]);
            dx[k] = u[k] * rr[k] * s * (T(1) + xr[k] * (T(1) - s));
            dr[k] = u[k] * xr[k] * s;
        }
    }
}

}  // namespace

#define GPTFF_EXPORT(T, SUFFIX)                                                                  \
    extern "C" void gather_add_##SUFFIX(const T* y, const T* a, const T* b, const int64_t* first, \
                                        const int64_t* second, int64_t n, int64_t F,             \
                                        int activate, T* pre, T* out, int threads) {             \
        gather_add(y, a, b, first, second, n, F, activate, pre, out, threads);                   \
    }                                                                                            \
    extern "C" void silu_backward_##SUFFIX(const T* pre, const T* d_out, int64_t n, int64_t F,  \
                                           T* d_pre, int threads) {                              \
        silu_backward(pre, d_out, n, F, d_pre, threads);                                         \
    }                                                                                            \
    extern "C" void gated_silu_##SUFFIX(const T* y, const T* m, int64_t n, int64_t F, T* out,   \
                                        int threads) {                                           \
        gated_silu(y, m, n, F, out, threads);                                                    \
    }                                                                                            \
    extern "C" void gated_silu_backward_##SUFFIX(const T* y, const T* m, const T* d_out,        \
                                                 int64_t n, int64_t F, T* d_y, T* d_m,           \
                                                 int threads) {                                  \
        gated_silu_backward(y, m, d_out, n, F, d_y, d_m, threads);                               \
    }                                                                                            \
    extern "C" void silu_times_##SUFFIX(const T* x, const T* r, const T* residual, int64_t n,   \
                                        int64_t F, T* out, int threads) {                        \
        silu_times(x, r, residual, n, F, out, threads);                                          \
    }                                                                                            \
    extern "C" void silu_times_backward_##SUFFIX(const T* x, const T* r, const T* d_out,        \
                                                 int64_t n, int64_t F, T* d_x, T* d_r,           \
                                                 int threads) {                                  \
        silu_times_backward(x, r, d_out, n, F, d_x, d_r, threads);                               \
    }

GPTFF_EXPORT(float, f32)
GPTFF_EXPORT(double, f64)
