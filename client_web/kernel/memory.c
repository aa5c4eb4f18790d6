/* A bump allocator over the module's linear memory. fl_mark/fl_release free everything allocated after a mark
 * (the Python side brackets temporary buffers with them); blocks are 16-byte aligned for v128 loads. */
#include "kernel.h"

extern unsigned char __heap_base;
static uint32_t heap_top = 0;

EXPORT(fl_alloc) void *fl_alloc(uint32_t nbytes) {
    if (heap_top == 0) heap_top = ((uint32_t)&__heap_base + 15u) & ~15u;
    uint32_t start = heap_top;
    uint32_t end = (start + nbytes + 15u) & ~15u;
    if (end < start) return 0;
    uint32_t have = (uint32_t)__builtin_wasm_memory_size(0) * 65536u;
    if (end > have) {
        uint32_t pages = (end - have + 65535u) / 65536u;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    }
    heap_top = end;
    return (void *)start;
}

EXPORT(fl_mark) uint32_t fl_mark(void) {
    if (heap_top == 0) heap_top = ((uint32_t)&__heap_base + 15u) & ~15u;
    return heap_top;
}

EXPORT(fl_release) void fl_release(uint32_t mark) {
    if (mark >= ((uint32_t)&__heap_base) && mark <= heap_top) heap_top = mark;
}

EXPORT(fl_zero) void fl_zero(void *p, uint32_t nbytes) { __builtin_memset(p, 0, nbytes); }

EXPORT(fl_copy) void fl_copy(void *dst, const void *src, uint32_t nbytes) { __builtin_memcpy(dst, src, nbytes); }

