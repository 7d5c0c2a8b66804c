/*
 * model.h — the account read models of es-account-view: how account events
 * are folded into LMDB (the projector's apply function) and the queries the
 * HTTP side runs on it. No I/O besides LMDB, so the unit tests drive it
 * directly.
 *
 * Events (the account example's): stream "account-<ID>", JSON data,
 * AccountOpened {"owner": NAME}, MoneyDeposited {"amount": N},
 * MoneyWithdrawn {"amount": N}, amounts positive integers in minor units.
 *
 * Folding rules (deterministic, so the read model equals a fold of the log
 * whatever order of restarts produced it):
 *  - every event of an account stream counts in totals.events;
 *  - AccountOpened sets the owner (an account that exists already keeps its
 *    balance and gets the new owner);
 *  - MoneyDeposited / MoneyWithdrawn add / subtract the amount; they create
 *    the account (owner "") when no AccountOpened came first;
 *  - a payload that is not what its type needs (bad JSON, missing or
 *    non-positive amount, a balance that would overflow) changes nothing
 *    but is counted in totals.skipped;
 *  - any event of an existing account sets its revision, position and
 *    updated time to the event's (so revision is the stream's last
 *    revision, as a rehydration sees it); an event that neither creates nor
 *    finds an account changes nothing else.
 */
#ifndef AV_MODEL_H
#define AV_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/projector.h"

/** The category of account streams ("account-<ID>"). */
#define AV_CATEGORY "account"
/** Longest account id: a stream id is at most 256 bytes, "account-" takes 8. */
#define AV_MAX_ID 248u

/** The read model's databases, in this order (es_projector_options.dbs). */
enum { AV_DB_ACCOUNTS = 0, AV_DB_BY_OWNER = 1, AV_DB_TOTALS = 2, AV_N_DBS = 3 };
extern const es_projector_db av_dbs[AV_N_DBS];

/** Handles of the databases, taken from an open projector. */
typedef struct av_model {
    MDB_dbi accounts, by_owner, totals;
} av_model;

/** One account as stored. */
typedef struct av_account {
    char id[AV_MAX_ID + 1]; /**< NUL-terminated */
    const char *owner;      /**< owner_len bytes, NOT NUL-terminated; borrowed (see the getters) */
    size_t owner_len;
    bool opened; /**< an AccountOpened was seen */
    int64_t balance;
    uint64_t revision;   /**< the stream revision of the last event */
    uint64_t position;   /**< its global position */
    uint64_t updated_us; /**< its recorded-at time */
} av_account;

/** The aggregates kept beside the accounts. */
typedef struct av_totals {
    uint64_t accounts;
    int64_t total_balance;
    uint64_t events;  /**< account events folded */
    uint64_t skipped; /**< of which with an unusable payload */
} av_totals;

/** @brief Fill m with the handles of p's databases (declared with av_dbs). */
void av_model_init(av_model *m, const es_projector *p);

/**
 * @brief The projector's apply function. ctx is an av_model.
 * @return ES_OK (also for events it ignores); an LMDB error translated by
 *   es_projector_err_from_mdb(); ES_ERR_NO_MEMORY.
 */
es_err av_apply(void *ctx, MDB_txn *txn, const es_recorded_event *ev);

/**
 * @brief The projector's lifecycle function: an account whose stream was
 *        deleted or tombstoned is dropped (record, owner index, totals); a
 *        recreated stream's events build it again from nothing. Retention
 *        changes keep it (the balance folds every event seen). ctx is an
 *        av_model.
 * @return as av_apply.
 */
es_err av_lifecycle(void *ctx, MDB_txn *txn, const es_projector_lifecycle *change,
                    const es_recorded_event *ev);

/**
 * @brief Whether id can name an account (1..AV_MAX_ID bytes).
 */
bool av_valid_id(const char *id);

/**
 * @brief Look up one account.
 * @param[out] out filled in; out->owner points into the transaction's
 *   memory: valid until txn ends
 * @return ES_OK; ES_ERR_NOT_FOUND; ES_ERR_INVALID_ARGUMENT (bad id);
 *   ES_ERR_CORRUPT (a record of the wrong size); LMDB errors.
 */
es_err av_get(const av_model *m, MDB_txn *txn, const char *id, av_account *out);

/** A list query: a page of the accounts that match, in id order. */
typedef struct av_query {
    uint64_t page;     /**< 1-based */
    uint64_t per_page; /**< >= 1 */
    const char *owner; /**< exact owner, or NULL for any */
    bool has_min_balance;
    int64_t min_balance;
} av_query;

/** Visitor of av_list(); a is valid during the call only. Return 0 to go on. */
typedef int (*av_visit_fn)(void *ctx, const av_account *a);

/**
 * @brief Visit the accounts of the query's page, in id order: numeric ids
 *        ("0", "42", no leading zero, up to 19 digits) first in numeric
 *        order, then the others in byte order.
 * @param[out] total the number of accounts matching the filters
 * @return ES_OK; ES_ERR_CORRUPT; LMDB errors.
 */
es_err av_list(const av_model *m, MDB_txn *txn, const av_query *q, av_visit_fn visit, void *ctx,
               uint64_t *total);

/** @brief Read the totals (all zero before the first event). */
es_err av_totals_get(const av_model *m, MDB_txn *txn, av_totals *out);

/**
 * @brief Format microseconds since the epoch as RFC 3339 UTC with
 *        microseconds ("2026-01-31T12:00:00.000000Z").
 */
void av_format_time(uint64_t us, char out[32]);

#endif
