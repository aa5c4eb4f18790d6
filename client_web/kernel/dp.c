/* One round of the discrete-Gaussian sampler of privacy/dp/discrete_gaussian.py (Canonne, Kamath & Steinke's
 * rejection from a discrete Laplace of scale t = ⌊σ⌋ + 1, floating-point version), over the r still-rejected
 * coordinates todo[0..r), consuming the 3r little-endian u64 words that RandomStream.uniforms_open(3r) would turn
 * into uniforms in (0, 1]: u = 1 − (w >> 11)·2^-53, in the same layout (u0 block, u1 block, u2 block) and with
 * the same binary64 operations in the same order as the pure-Python loop:
 *   y = ⌊−t·log u0⌋ − ⌊−t·log u1⌋;  accept iff u2 ≤ exp(−((|y| − σ²/t)²) / (2σ²)).
 * Accepted samples go to out[todo[j]]; the rejected indices are compacted to the front of todo (keeping their
 * order) and their number is returned. log/exp are this kernel's (math.c), not the platform libm: see
 * docs/browser-kernel.md for what that means for bit-identity. */
#include "kernel.h"

static inline f64 uniform_open(uint64_t w) { return 1.0 - (f64)(w >> 11) * (1.0 / 9007199254740992.0); }

EXPORT(fl_dgauss_round)
int fl_dgauss_round(const uint64_t *words, int r, f64 t, f64 s2, int32_t *todo, int32_t *out) {
    int kept = 0;
    f64 neg_t = -t, s2_over_t = s2 / t, two_s2 = 2.0 * s2;
    for (int j = 0; j < r; j++) {
        f64 u0 = uniform_open(words[j]), u1 = uniform_open(words[r + j]), u2 = uniform_open(words[2 * r + j]);
        f64 y = __builtin_floor(neg_t * fl_log(u0)) - __builtin_floor(neg_t * fl_log(u1));
        f64 a = __builtin_fabs(y) - s2_over_t;
        if (u2 <= fl_exp(-(a * a) / two_s2)) {
            out[todo[j]] = (int32_t)y;
        } else {
            todo[kept++] = todo[j];
        }
    }
    return kept;
}
