#include "ptable.h"

#include <string.h>

#include "alloc.h"

static size_t slot_of(uint64_t id, size_t cap)
{
    /* Fibonacci hashing: ids are sequential, spread them. */
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

pending *ptable_get(ptable *t, uint64_t id)
{
    if (t->cap == 0 || id == 0) {
        return NULL;
    }
    for (size_t i = slot_of(id, t->cap);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].id == id) {
            return &t->slots[i];
        }
        if (t->slots[i].id == 0) {
            return NULL;
        }
    }
}

static void insert_slot(pending *slots, size_t cap, const pending *e)
{
    size_t i = slot_of(e->id, cap);
    while (slots[i].id != 0) {
        i = (i + 1) & (cap - 1);
    }
    slots[i] = *e;
}

static es_err grow(ptable *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 16;
    pending *ns = cl_calloc(ncap, sizeof(*ns));
    if (ns == NULL) {
        return ES_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].id != 0) {
            insert_slot(ns, ncap, &t->slots[i]);
        }
    }
    cl_free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return ES_OK;
}

es_err ptable_add(ptable *t, uint64_t id, pending **out)
{
    /* Keep the load at or below one half. */
    if ((t->count + 1) * 2 > t->cap) {
        es_err rv = grow(t);
        if (rv != ES_OK) {
            return rv;
        }
    }
    pending e;
    memset(&e, 0, sizeof(e));
    e.id = id;
    insert_slot(t->slots, t->cap, &e);
    t->count++;
    *out = ptable_get(t, id);
    return ES_OK;
}

void ptable_del(ptable *t, uint64_t id)
{
    pending *e = ptable_get(t, id);
    if (e == NULL) {
        return;
    }
    size_t mask = t->cap - 1;
    size_t hole = (size_t)(e - t->slots);
    memset(&t->slots[hole], 0, sizeof(pending));
    t->count--;
    /* Backward shift: move later entries of the cluster into the hole when
     * their home slot does not lie cyclically in (hole, i]. */
    for (size_t i = (hole + 1) & mask; t->slots[i].id != 0; i = (i + 1) & mask) {
        size_t home = slot_of(t->slots[i].id, t->cap);
        bool stays = (hole <= i) ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            t->slots[hole] = t->slots[i];
            memset(&t->slots[i], 0, sizeof(pending));
            hole = i;
        }
    }
}

void ptable_finish(ptable *t)
{
    cl_free(t->slots);
    t->slots = NULL;
    t->cap = 0;
    t->count = 0;
}
