#include "alloc.h"

#include <stdlib.h>
#include <string.h>

static void *default_malloc(size_t n)
{
    return malloc(n);
}

static void default_free(void *p)
{
    free(p);
}

static cl_malloc_fn malloc_fn = default_malloc;
static cl_free_fn free_fn = default_free;

void cl_alloc_set(cl_malloc_fn m, cl_free_fn f)
{
    malloc_fn = m ? m : default_malloc;
    free_fn = f ? f : default_free;
}

void *cl_malloc(size_t n)
{
    return malloc_fn(n == 0 ? 1 : n);
}

void *cl_calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        return NULL;
    }
    void *p = cl_malloc(n * size);
    if (p != NULL) {
        memset(p, 0, n * size);
    }
    return p;
}

void cl_free(void *p)
{
    if (p != NULL) {
        free_fn(p);
    }
}

char *cl_strndup(const char *s, size_t len)
{
    char *p = cl_malloc(len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static void *pb_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return cl_malloc(size);
}

static void pb_free(void *ctx, void *p)
{
    (void)ctx;
    cl_free(p);
}

ProtobufCAllocator cl_pb_allocator = {
    .alloc = pb_alloc,
    .free = pb_free,
    .allocator_data = NULL,
};
