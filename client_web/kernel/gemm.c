/* Single-precision matrix product C[M,N] (+)= A[M,K] · B[K,N], all row-major with leading dimensions.
 *
 * Blocked for the cache (K in blocks of KB rows of B, N in panels of NB columns, so a KB × NB panel of B stays
 * in L1/L2 while every row block of A streams over it) and register-tiled: the 4 × 8 micro-kernel keeps 8 f32x4
 * accumulators (4 rows × 2 vectors) in registers and per k step loads 2 vectors of B and splats 4 scalars of A
 * (8 multiply-adds per 6 loads). Edges fall back to 1-row and 4-wide / scalar column tails. */
#include "kernel.h"

#define KB 256
#define NB 256

static inline void micro_4x8(int kb, const f32 *A, int lda, const f32 *B, int ldb, f32 *C, int ldc) {
    v128_t c00 = wasm_v128_load(C), c01 = wasm_v128_load(C + 4);
    v128_t c10 = wasm_v128_load(C + ldc), c11 = wasm_v128_load(C + ldc + 4);
    v128_t c20 = wasm_v128_load(C + 2 * ldc), c21 = wasm_v128_load(C + 2 * ldc + 4);
    v128_t c30 = wasm_v128_load(C + 3 * ldc), c31 = wasm_v128_load(C + 3 * ldc + 4);
    const f32 *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda;
    for (int k = 0; k < kb; k++) {
        v128_t b0 = wasm_v128_load(B), b1 = wasm_v128_load(B + 4);
        B += ldb;
        v128_t a = wasm_f32x4_splat(a0[k]);
        c00 = wasm_f32x4_add(c00, wasm_f32x4_mul(a, b0));
        c01 = wasm_f32x4_add(c01, wasm_f32x4_mul(a, b1));
        a = wasm_f32x4_splat(a1[k]);
        c10 = wasm_f32x4_add(c10, wasm_f32x4_mul(a, b0));
        c11 = wasm_f32x4_add(c11, wasm_f32x4_mul(a, b1));
        a = wasm_f32x4_splat(a2[k]);
        c20 = wasm_f32x4_add(c20, wasm_f32x4_mul(a, b0));
        c21 = wasm_f32x4_add(c21, wasm_f32x4_mul(a, b1));
        a = wasm_f32x4_splat(a3[k]);
        c30 = wasm_f32x4_add(c30, wasm_f32x4_mul(a, b0));
        c31 = wasm_f32x4_add(c31, wasm_f32x4_mul(a, b1));
    }
    wasm_v128_store(C, c00); wasm_v128_store(C + 4, c01);
    wasm_v128_store(C + ldc, c10); wasm_v128_store(C + ldc + 4, c11);
    wasm_v128_store(C + 2 * ldc, c20); wasm_v128_store(C + 2 * ldc + 4, c21);
    wasm_v128_store(C + 3 * ldc, c30); wasm_v128_store(C + 3 * ldc + 4, c31);
}

static inline void micro_4x4(int kb, const f32 *A, int lda, const f32 *B, int ldb, f32 *C, int ldc) {
    v128_t c0 = wasm_v128_load(C), c1 = wasm_v128_load(C + ldc);
    v128_t c2 = wasm_v128_load(C + 2 * ldc), c3 = wasm_v128_load(C + 3 * ldc);
    const f32 *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda;
    for (int k = 0; k < kb; k++) {
        v128_t b = wasm_v128_load(B);
        B += ldb;
        c0 = wasm_f32x4_add(c0, wasm_f32x4_mul(wasm_f32x4_splat(a0[k]), b));
        c1 = wasm_f32x4_add(c1, wasm_f32x4_mul(wasm_f32x4_splat(a1[k]), b));
        c2 = wasm_f32x4_add(c2, wasm_f32x4_mul(wasm_f32x4_splat(a2[k]), b));
        c3 = wasm_f32x4_add(c3, wasm_f32x4_mul(wasm_f32x4_splat(a3[k]), b));
    }
    wasm_v128_store(C, c0); wasm_v128_store(C + ldc, c1);
    wasm_v128_store(C + 2 * ldc, c2); wasm_v128_store(C + 3 * ldc, c3);
}

/* one row of A against columns [0, n) of B */
static inline void row_kernel(int kb, int n, const f32 *A, const f32 *B, int ldb, f32 *C) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v128_t c0 = wasm_v128_load(C + j), c1 = wasm_v128_load(C + j + 4);
        const f32 *b = B + j;
        for (int k = 0; k < kb; k++, b += ldb) {
            v128_t a = wasm_f32x4_splat(A[k]);
            c0 = wasm_f32x4_add(c0, wasm_f32x4_mul(a, wasm_v128_load(b)));
            c1 = wasm_f32x4_add(c1, wasm_f32x4_mul(a, wasm_v128_load(b + 4)));
        }
        wasm_v128_store(C + j, c0);
        wasm_v128_store(C + j + 4, c1);
    }
    for (; j + 4 <= n; j += 4) {
        v128_t c0 = wasm_v128_load(C + j);
        const f32 *b = B + j;
        for (int k = 0; k < kb; k++, b += ldb)
            c0 = wasm_f32x4_add(c0, wasm_f32x4_mul(wasm_f32x4_splat(A[k]), wasm_v128_load(b)));
        wasm_v128_store(C + j, c0);
    }
    for (; j < n; j++) {
        f32 s = C[j];
        const f32 *b = B + j;
        for (int k = 0; k < kb; k++, b += ldb) s += A[k] * *b;
        C[j] = s;
    }
}

void fl_gemm_nn(int M, int N, int K, const f32 *A, int lda, const f32 *B, int ldb, f32 *C, int ldc, int accumulate) {
    if (!accumulate)
        for (int i = 0; i < M; i++) __builtin_memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(f32));
    for (int k0 = 0; k0 < K; k0 += KB) {
        int kb = K - k0 < KB ? K - k0 : KB;
        for (int j0 = 0; j0 < N; j0 += NB) {
            int nb = N - j0 < NB ? N - j0 : NB;
            const f32 *Bp = B + (size_t)k0 * ldb + j0;
            int i = 0;
            for (; i + 4 <= M; i += 4) {
                const f32 *Ap = A + (size_t)i * lda + k0;
                f32 *Cp = C + (size_t)i * ldc + j0;
                int j = 0;
                for (; j + 8 <= nb; j += 8) micro_4x8(kb, Ap, lda, Bp + j, ldb, Cp + j, ldc);
                for (; j + 4 <= nb; j += 4) micro_4x4(kb, Ap, lda, Bp + j, ldb, Cp + j, ldc);
                if (j < nb)
                    for (int r = 0; r < 4; r++) {
                        const f32 *a = Ap + (size_t)r * lda;
                        f32 *c = Cp + (size_t)r * ldc;
                        for (int jj = j; jj < nb; jj++) {
                            f32 s = c[jj];
                            const f32 *b = Bp + jj;
                            for (int k = 0; k < kb; k++, b += ldb) s += a[k] * *b;
                            c[jj] = s;
                        }
                    }
            }
            for (; i < M; i++) row_kernel(kb, nb, A + (size_t)i * lda + k0, Bp, ldb, C + (size_t)i * ldc + j0);
        }
    }
}

/* dst[cols, rows] = src[rows, cols]ᵀ, in 8 × 8 blocks */
void fl_transpose(int rows, int cols, const f32 *src, f32 *dst) {
    for (int i0 = 0; i0 < rows; i0 += 8)
        for (int j0 = 0; j0 < cols; j0 += 8) {
            int i1 = i0 + 8 < rows ? i0 + 8 : rows, j1 = j0 + 8 < cols ? j0 + 8 : cols;
            for (int i = i0; i < i1; i++)
                for (int j = j0; j < j1; j++) dst[(size_t)j * rows + i] = src[(size_t)i * cols + j];
        }
}

EXPORT(fl_gemm) void fl_gemm(int M, int N, int K, const f32 *A, const f32 *B, f32 *C, int accumulate) {
    fl_gemm_nn(M, N, K, A, K, B, N, C, N, accumulate);
}
