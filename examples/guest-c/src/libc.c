/* What C without a libc needs, and nothing more: an allocator and the memory functions.
 *
 * Every guest call runs in a fresh instance (see the host's sandbox), so memory never needs to be
 * given back: a bump allocator that only grows is both the simplest and the fastest choice, and
 * `free` does nothing. Memory grows in 64 KiB pages with `memory.grow`; when the host's memory
 * limit refuses a page, the guest traps (the host reports "exceeded its memory limit").
 *
 * The copies and fills lower to the bulk-memory instructions `memory.copy` and `memory.fill`
 * (the build passes -mbulk-memory), so they never call back into themselves. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The end of static data, set by wasm-ld: the heap starts here. */
extern unsigned char __heap_base;

#define PAGE_SIZE 65536u
#define ALIGNMENT 8u

static uintptr_t heap_next = 0;
static uintptr_t heap_end = 0;

static uintptr_t align_up(uintptr_t value, uintptr_t align) {
    return (value + align - 1) & ~(align - 1);
}

/* A new block of `size` bytes aligned to `align` (a power of two); traps when memory is full. */
static void *bump(size_t size, size_t align) {
    if (heap_next == 0) {
        heap_next = (uintptr_t)&__heap_base;
        heap_end = (uintptr_t)__builtin_wasm_memory_size(0) * PAGE_SIZE;
    }
    uintptr_t start = align_up(heap_next, align < ALIGNMENT ? ALIGNMENT : align);
    if (size > UINTPTR_MAX - start) {
        abort();
    }
    uintptr_t end = start + size;
    if (end > heap_end) {
        size_t pages = (end - heap_end + PAGE_SIZE - 1) / PAGE_SIZE;
        if (__builtin_wasm_memory_grow(0, pages) == SIZE_MAX) {
            abort();
        }
        heap_end += pages * PAGE_SIZE;
    }
    heap_next = end;
    return (void *)start;
}

void *malloc(size_t size) {
    return bump(size, ALIGNMENT);
}

void *calloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) {
        abort();
    }
    /* Fresh pages are zero, but a block may reuse nothing: the bump never hands memory out twice,
     * and memory.grow zeroes new pages. Only the static-data tail below the first block could be
     * dirty, and it never is handed out. Clear anyway: it is cheap and keeps calloc honest. */
    void *block = bump(count * size, ALIGNMENT);
    memset(block, 0, count * size);
    return block;
}

void free(void *ptr) {
    (void)ptr;
}

/* Grows in place when `ptr` is the last block handed out, else copies. The old size is unknown
 * to a bump allocator, so `cabi_realloc` below passes it; plain `realloc` copies `size` bytes,
 * which never reads past the heap's end. */
static void *resize(void *ptr, size_t old_size, size_t align, size_t new_size) {
    if (ptr == NULL) {
        return bump(new_size, align);
    }
    if ((uintptr_t)ptr + old_size == heap_next && ((uintptr_t)ptr & (align - 1)) == 0) {
        heap_next = (uintptr_t)ptr;
        return bump(new_size, align);
    }
    void *moved = bump(new_size, align);
    memcpy(moved, ptr, old_size < new_size ? old_size : new_size);
    return moved;
}

void *realloc(void *ptr, size_t size) {
    if (ptr == NULL) {
        return malloc(size);
    }
    size_t available = heap_next - (uintptr_t)ptr;
    return resize(ptr, available < size ? available : size, ALIGNMENT, size);
}

/* The canonical ABI's allocator: the host calls it to place the snapshot (and every string and
 * list in it) in the guest's memory. Overrides the weak definition in the generated bindings,
 * which would go through `realloc` and ignore `align`. */
__attribute__((__export_name__("cabi_realloc")))
void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    if (new_size == 0) {
        return (void *)align;
    }
    return resize(ptr, old_size, align, new_size);
}

_Noreturn void abort(void) {
    __builtin_trap();
}

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    __builtin_memcpy(dst, src, n);
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    __builtin_memmove(dst, src, n);
    return dst;
}

void *memset(void *dst, int byte, size_t n) {
    __builtin_memset(dst, byte, n);
    return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) {
            return x[i] < y[i] ? -1 : 1;
        }
    }
    return 0;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    return n;
}
