// Helpers shared by GPTFF's fused kernels: a vectorisable float exp (Cephes' expf polynomial,
// ~1 ulp) and the logistic functions built on it; double uses std::exp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

inline float exp_approx(float x) {
    x = std::min(std::max(x, -87.0f), 88.0f);
    const float n = std::floor(x * 1.44269504088896341f + 0.5f);
    float r = std::fma(n, -0.693359375f, x);
    r = std::fma(n, 2.12194440e-4f, r);
    float poly = 1.9875691500e-4f;
    poly = std::fma(poly, r, 1.3981999507e-3f);
    poly = std::fma(poly, r, 8.3334519073e-3f);
    poly = std::fma(poly, r, 4.1665795894e-2f);
    poly = std::fma(poly, r, 1.6666665459e-1f);
    poly = std::fma(poly, r, 5.0000001201e-1f);
    poly = std::fma(poly, r * r, r + 1.0f);
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return poly * scale;
}

inline double exp_approx(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid(T x) {
    return T(1) / (T(1) + exp_approx(-x));
}

// d silu(x) / dx = σ(x)·(1 + x·(1 − σ(x)))
template <typename T>
inline T silu_derivative(T x) {
    const T s = sigmoid(x);
    return s * (T(1) + x * (T(1) - s));
}

}  // namespace
