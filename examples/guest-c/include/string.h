/* The part of <string.h> the generated bindings and the policy use, for a guest with no libc:
 * implemented in src/libc.c. */
#ifndef GUEST_C_STRING_H
#define GUEST_C_STRING_H

#include <stddef.h>

void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int byte, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif
