/*
 * alloc — the one allocator of libesclient.
 *
 * Design notes: every allocation of the library, including protobuf-c's
 * while it unpacks replies, goes through these functions. Tests route them
 * to cmocka's test_malloc/test_free, so every unit test is also a leak
 * check, and can record the largest request (proof that a frame header
 * above the cap is refused before anything is allocated for its body).
 * Not exported from the shared library.
 */
#ifndef ES_CLIENT_ALLOC_H
#define ES_CLIENT_ALLOC_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

void *cl_malloc(size_t n);
void *cl_calloc(size_t n, size_t size);
void cl_free(void *p);
/** @brief Copy s[0..len) into a new NUL-terminated string; NULL on failure. */
char *cl_strndup(const char *s, size_t len);

/** The protobuf-c allocator over cl_malloc/cl_free. */
extern ProtobufCAllocator cl_pb_allocator;

typedef void *(*cl_malloc_fn)(size_t n);
typedef void (*cl_free_fn)(void *p);

/**
 * @brief Replace the allocator (tests only; NULL restores malloc/free).
 * @note Not thread-safe: call it while no client is in use.
 */
void cl_alloc_set(cl_malloc_fn m, cl_free_fn f);

#endif
