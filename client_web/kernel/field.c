/* Vector arithmetic of secure aggregation and fixed-point encoding (privacy/backends.py, privacy/fixedpoint.py):
 * in-place addition / subtraction mod 2^m over u32 (m > 16) or u16 (m <= 16) storage, reduction of signed
 * integers mod 2^m, the unbiased stochastic rounding of fixed-point encoding (binary64, the same operations in
 * the same order as the pure-Python backend, so results are bit-identical) and the float helpers around it. */
#include "kernel.h"

EXPORT(fl_add_mod_u32) void fl_add_mod_u32(uint32_t *a, const uint32_t *b, int n, uint32_t mask) {
    int i = 0;
    v128_t vm = wasm_i32x4_splat((int32_t)mask);
    for (; i + 16 <= n; i += 16) {
        wasm_v128_store(a + i, wasm_v128_and(wasm_i32x4_add(wasm_v128_load(a + i), wasm_v128_load(b + i)), vm));
        wasm_v128_store(a + i + 4, wasm_v128_and(wasm_i32x4_add(wasm_v128_load(a + i + 4), wasm_v128_load(b + i + 4)), vm));
        wasm_v128_store(a + i + 8, wasm_v128_and(wasm_i32x4_add(wasm_v128_load(a + i + 8), wasm_v128_load(b + i + 8)), vm));
        wasm_v128_store(a + i + 12, wasm_v128_and(wasm_i32x4_add(wasm_v128_load(a + i + 12), wasm_v128_load(b + i + 12)), vm));
    }
    for (; i + 4 <= n; i += 4)
        wasm_v128_store(a + i, wasm_v128_and(wasm_i32x4_add(wasm_v128_load(a + i), wasm_v128_load(b + i)), vm));
    for (; i < n; i++) a[i] = (a[i] + b[i]) & mask;
}

EXPORT(fl_sub_mod_u32) void fl_sub_mod_u32(uint32_t *a, const uint32_t *b, int n, uint32_t mask) {
    int i = 0;
    v128_t vm = wasm_i32x4_splat((int32_t)mask);
    for (; i + 4 <= n; i += 4)
        wasm_v128_store(a + i, wasm_v128_and(wasm_i32x4_sub(wasm_v128_load(a + i), wasm_v128_load(b + i)), vm));
    for (; i < n; i++) a[i] = (a[i] - b[i]) & mask;
}

EXPORT(fl_add_mod_u16) void fl_add_mod_u16(uint16_t *a, const uint16_t *b, int n, uint32_t mask) {
    int i = 0;
    v128_t vm = wasm_i16x8_splat((int16_t)mask);
    for (; i + 8 <= n; i += 8)
        wasm_v128_store(a + i, wasm_v128_and(wasm_i16x8_add(wasm_v128_load(a + i), wasm_v128_load(b + i)), vm));
    for (; i < n; i++) a[i] = (uint16_t)((a[i] + b[i]) & mask);
}

EXPORT(fl_sub_mod_u16) void fl_sub_mod_u16(uint16_t *a, const uint16_t *b, int n, uint32_t mask) {
    int i = 0;
    v128_t vm = wasm_i16x8_splat((int16_t)mask);
    for (; i + 8 <= n; i += 8)
        wasm_v128_store(a + i, wasm_v128_and(wasm_i16x8_sub(wasm_v128_load(a + i), wasm_v128_load(b + i)), vm));
    for (; i < n; i++) a[i] = (uint16_t)((a[i] - b[i]) & mask);
}

/* two's-complement int32 → field elements mod 2^m (q & (2^m − 1)); u32 in place, or u16 into out */
EXPORT(fl_ints_to_field_u32) void fl_ints_to_field_u32(int32_t *q, int n, uint32_t mask) {
    int i = 0;
    v128_t vm = wasm_i32x4_splat((int32_t)mask);
    for (; i + 4 <= n; i += 4) wasm_v128_store(q + i, wasm_v128_and(wasm_v128_load(q + i), vm));
    for (; i < n; i++) q[i] = (int32_t)((uint32_t)q[i] & mask);
}

EXPORT(fl_ints_to_field_u16) void fl_ints_to_field_u16(const int32_t *q, int n, uint32_t mask, uint16_t *out) {
    for (int i = 0; i < n; i++) out[i] = (uint16_t)((uint32_t)q[i] & mask);
}

/* a[i] += b[i] (signed 32-bit; the caller checks that no sum can overflow) */
EXPORT(fl_add_i32) void fl_add_i32(int32_t *a, const int32_t *b, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) wasm_v128_store(a + i, wasm_i32x4_add(wasm_v128_load(a + i), wasm_v128_load(b + i)));
    for (; i < n; i++) a[i] += b[i];
}

/* Python: y = min(max(v, -clip), clip) * scale; lo = floor(y); q = lo + (u < y - lo) */
EXPORT(fl_stochastic_round)
void fl_stochastic_round(const f64 *x, const f64 *u, int n, f64 clip, f64 scale, int32_t *out) {
    f64 nclip = -clip;
    for (int i = 0; i < n; i++) {
        f64 v = x[i];
        f64 t = (nclip > v) ? nclip : v;  /* max(v, -clip): v unless -clip is strictly greater */
        t = (clip < t) ? clip : t;        /* min(t, clip): t unless clip is strictly smaller */
        f64 y = t * scale;
        f64 lo = __builtin_floor(y);
        out[i] = (int32_t)lo + (u[i] < y - lo ? 1 : 0);
    }
}

/* out[i] = x[i] * c (binary64) */
EXPORT(fl_scale_f64) void fl_scale_f64(const f64 *x, int n, f64 c, f64 *out) {
    int i = 0;
    v128_t vc = wasm_f64x2_splat(c);
    for (; i + 2 <= n; i += 2) wasm_v128_store(out + i, wasm_f64x2_mul(wasm_v128_load(x + i), vc));
    for (; i < n; i++) out[i] = x[i] * c;
}

/* index of the first NaN or ±inf, or -1 */
EXPORT(fl_first_nonfinite) int fl_first_nonfinite(const f64 *x, int n) {
    for (int i = 0; i < n; i++) {
        uint64_t b;
        __builtin_memcpy(&b, x + i, 8);
        if (((b >> 52) & 0x7ff) == 0x7ff) return i;
    }
    return -1;
}

/* 53-bit uniforms in [0, 1) from little-endian u64 words, as RandomStream.uniforms: (w >> 11) · 2^-53 */
EXPORT(fl_uniforms_from_u64) void fl_uniforms_from_u64(const uint64_t *w, int n, f64 *out) {
    for (int i = 0; i < n; i++) out[i] = (f64)(w[i] >> 11) * (1.0 / 9007199254740992.0);
}

/* f32 → f64 and f64 → f32 conversions (model vectors are f32, fixed point works in binary64) */
EXPORT(fl_f32_to_f64) void fl_f32_to_f64(const f32 *x, int n, f64 *out) { for (int i = 0; i < n; i++) out[i] = x[i]; }
EXPORT(fl_f64_to_f32) void fl_f64_to_f32(const f64 *x, int n, f32 *out) { for (int i = 0; i < n; i++) out[i] = (f32)x[i]; }

/* out[i] = a[i] − b[i] (float32; a model delta = new − old parameters) */
EXPORT(fl_sub_f32) void fl_sub_f32(const f32 *a, const f32 *b, int n, f32 *out) {
    int i = 0;
    for (; i + 4 <= n; i += 4) wasm_v128_store(out + i, wasm_f32x4_sub(wasm_v128_load(a + i), wasm_v128_load(b + i)));
    for (; i < n; i++) out[i] = a[i] - b[i];
}

/* m-bit packing of field elements (.mle field_packed, docs/mle-format.md): element i occupies bits [i·m, (i+1)·m)
 * of the output read as one little-endian integer; ceil(n·m/8) bytes, the last byte's padding bits zero. Values in
 * field storage – u16 when m <= 16, else u32 – and only their low m bits are used. 1 <= m <= 32. */
#define PACK_LOOP(T)                                                                              \
    for (int i = 0; i < n; i++) {                                                                 \
        acc |= (uint64_t)(((const T *)v)[i] & mask) << bits;                                      \
        bits += m;                                                                                \
        if (bits >= 32) {                                                                         \
            uint32_t w = (uint32_t)acc;                                                           \
            __builtin_memcpy(p, &w, 4);                                                           \
            p += 4, acc >>= 32, bits -= 32;                                                       \
        }                                                                                         \
    }

EXPORT(fl_pack_bits) void fl_pack_bits(const void *v, int n, int m, uint8_t *out) {
    uint32_t mask = m >= 32 ? 0xffffffffu : (1u << m) - 1u;
    uint64_t acc = 0; /* the next `bits` (< 32) output bits */
    int bits = 0;
    uint8_t *p = out;
    if (m <= 16) { PACK_LOOP(uint16_t) } else { PACK_LOOP(uint32_t) }
    for (; bits > 0; bits -= 8, acc >>= 8) *p++ = (uint8_t)acc;
}

/* the inverse: ceil(n·m/8) bytes → n values in field storage. Element i is one unaligned 8-byte load at byte
 * ⌊i·m/8⌋, shifted and masked; the last few elements, whose 8 bytes would pass the end, gather only existing bytes. */
static inline uint64_t tail_bits(const uint8_t *in, uint64_t bit, uint64_t nbytes) {
    uint64_t w = 0;
    for (uint64_t at = bit >> 3, k = 0; at + k < nbytes; k++) w |= (uint64_t)in[at + k] << (8 * k);
    return w >> (bit & 7);
}

#define UNPACK_LOOP(T)                                                                           \
    for (; i < safe; i++, bit += (uint64_t)m) {                                                   \
        uint64_t w;                                                                               \
        __builtin_memcpy(&w, in + (bit >> 3), 8);                                                 \
        ((T *)out)[i] = (T)((w >> (bit & 7)) & mask);                                             \
    }                                                                                             \
    for (; i < n; i++, bit += (uint64_t)m) ((T *)out)[i] = (T)(tail_bits(in, bit, nbytes) & mask);

EXPORT(fl_unpack_bits) void fl_unpack_bits(const uint8_t *in, int n, int m, void *out) {
    uint32_t mask = m >= 32 ? 0xffffffffu : (1u << m) - 1u;
    uint64_t nbytes = ((uint64_t)n * (uint64_t)m + 7) / 8, bit = 0;
    /* elements whose 8-byte load stays inside the input: i·m/8 + 8 <= nbytes */
    int64_t safe = nbytes >= 8 ? (int64_t)((8 * (nbytes - 8) + 7) / (uint64_t)m) + 1 : 0;
    if (safe > n) safe = n;
    int i = 0;
    if (m <= 16) { UNPACK_LOOP(uint16_t) } else { UNPACK_LOOP(uint32_t) }
}
