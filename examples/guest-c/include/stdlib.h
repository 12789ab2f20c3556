/* The part of <stdlib.h> the generated bindings use, for a guest with no libc: implemented in
 * src/libc.c over a bump allocator. */
#ifndef GUEST_C_STDLIB_H
#define GUEST_C_STDLIB_H

#include <stddef.h>

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
_Noreturn void abort(void);

#endif
