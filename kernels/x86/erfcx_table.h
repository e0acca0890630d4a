// The erfcx table of the x86 erf / erf-Gelu kernels (elementwise_avx2.cpp,
// elementwise_avx512.cpp): data only, so both ISA files may include it.
#pragma once

namespace ember::cpu {

// R(a) = erfc(a / sqrt2) exp(a^2 / 2) for 0 <= a < 15. Interval k is the exponent and top
// mantissa bit of a + 1: a in [0, .5), [.5, 1), [1, 2), [2, 3), [3, 5), [5, 7), [7, 11),
// [11, 15); on each p_k(a - center_k) of degree 8, minimax in relative error (< 1.1e-8 with
// these float coefficients, c0 split hi + lo; fitted offline: mpmath values, an LP solve).
alignas(64) inline constexpr float kErfcxCenter[8] = {0.25f, 0.75f, 1.5f, 2.5f,
                                                      4.0f,  6.0f,  9.0f, 13.0f};
alignas(64) inline constexpr float kErfcxC0Hi[8] = {
    0.828064203f, 0.60046494f, 0.41156134f, 0.28266266f,
    0.188821286f, 0.129558623f, 0.0875975788f, 0.0610188283f};
alignas(64) inline constexpr float kErfcxC0Lo[8] = {
    2.63255417e-09f, -1.53913149e-08f, -6.15057472e-09f, 2.87681567e-09f,
    -3.39211792e-09f, 5.81080073e-09f, -1.0445389e-09f, 6.8739725e-10f};
alignas(64) inline constexpr float kErfcxC[8][8] = {  // kErfcxC[j - 1]: coefficient of d^j
    {-0.590868533f, -0.347535878f, -0.180542558f, -0.091227904f, -0.0425994284f, -0.0205327887f,
     -0.00950636063f, -0.00463978387f},
    {0.340173572f, 0.169906527f, 0.0703737512f, 0.0272964519f, 0.00921178143f, 0.00318094762f,
     0.001020164f, 0.000350818969f},
    {-0.168605924f, -0.0733674914f, -0.0249940641f, -0.00766226137f, -0.00191746699f,
     -0.000482369971f, -0.000108298278f, -2.63792281e-05f},
    {0.0745018795f, 0.0287184883f, 0.0082206158f, 0.00203519431f, 0.000385507417f, 7.16852592e-05f,
     1.13756496e-05f, 1.97273675e-06f},
    {-0.0300681833f, -0.0104001928f, -0.00253127934f, -0.000514759216f, -7.49558167e-05f,
     -1.04440187e-05f, -1.17990908e-06f, -1.46614966e-07f},
    {0.011270863f, 0.00353533379f, 0.000737317372f, 0.000124713406f, 1.41890105e-05f,
     1.49572588e-06f, 1.21634912e-07f, 1.08469136e-08f},
    {-0.00327973324f, -0.000808274955f, -0.000211282459f, -2.96887083e-05f, -2.79113669e-06f,
     -2.19807134e-07f, -1.34949829e-08f, -8.38689285e-10f},
    {0.000366955734f, -5.64469628e-05f, 5.43093156e-05f, 6.54102178e-06f, 4.92597053e-07f,
     3.01550394e-08f, 1.34001676e-09f, 6.15643231e-11f},
};

}  // namespace ember::cpu
