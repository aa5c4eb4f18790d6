/* fl-coordinator WASM kernel: shared declarations. Freestanding C (no libc): compiled with
 * clang --target=wasm32 -msimd128 -nostdlib -O3, linked with wasm-ld. See docs/browser-kernel.md. */
#ifndef FL_KERNEL_H
#define FL_KERNEL_H

#include <stdint.h>
#include <stddef.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name), visibility("default")))

typedef float f32;
typedef double f64;

/* memory.c */
void *fl_alloc(uint32_t nbytes);
void fl_zero(void *p, uint32_t nbytes);
void fl_copy(void *dst, const void *src, uint32_t nbytes);

/* math.c: elementary functions (no libm in a -nostdlib build) */
f64 fl_exp(f64 x);
f64 fl_log(f64 x);

/* gemm.c: C[M,N] (+)= A[M,K] · B[K,N], row-major with leading dimensions */
void fl_gemm_nn(int M, int N, int K, const f32 *A, int lda, const f32 *B, int ldb, f32 *C, int ldc, int accumulate);
void fl_transpose(int rows, int cols, const f32 *src, f32 *dst);

#endif
