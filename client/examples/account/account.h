/*
 * account — the bank account of the example, as an aggregate of
 * es/aggregate.h: its events, its state, the decisions and the fold.
 *
 *   stream     account-<ID>, ID = 1..64 of [A-Za-z0-9_.-]
 *   events     AccountOpened  {"owner": "Alice"}
 *              MoneyDeposited {"amount": 500}
 *              MoneyWithdrawn {"amount": 200}
 *              (JSON, content type application/json; amounts are positive
 *              integers in minor units, at most INT64_MAX)
 *   transfer   MoneyWithdrawn on FROM + MoneyDeposited on TO, appended in
 *              one transaction with both accounts' expectations
 *
 * Invariants, enforced by the decide functions and checked again by the
 * fold (a history that breaks one is refused, not folded): an account
 * opens once; nothing happens to an account that is not open; the balance
 * never goes below 0 (no overdraft) nor above INT64_MAX (no overflow); an
 * account does not transfer to itself.
 *
 * Design notes: the decide functions are pure (state + command -> events
 * or a refusal), so the unit tests drive them with a decision of their own
 * and no server. The fold accepts exactly what decide emits: unknown event
 * types and unparsable payloads are errors (ES_ERR_MALFORMED), because a
 * balance computed by skipping what we do not understand is a wrong
 * balance. Snapshots are JSON ({"open","owner","balance"}) in state format
 * ACCOUNT_STATE_FORMAT; decode validates like the fold does.
 */
#ifndef ES_EXAMPLE_ACCOUNT_H
#define ES_EXAMPLE_ACCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/aggregate.h"

#define ACCOUNT_STREAM_PREFIX "account-"
/** Longest account id. */
#define ACCOUNT_ID_MAX 64
/** Longest owner name, in bytes of UTF-8. */
#define ACCOUNT_OWNER_MAX 200
/** The snapshot encoding of this version (see account_ops). */
#define ACCOUNT_STATE_FORMAT 1u
/** Room for "account-" + the longest id + NUL. */
#define ACCOUNT_STREAM_BYTES (sizeof(ACCOUNT_STREAM_PREFIX) + ACCOUNT_ID_MAX)

#define ACCOUNT_OPENED    "AccountOpened"
#define ACCOUNT_DEPOSITED "MoneyDeposited"
#define ACCOUNT_WITHDRAWN "MoneyWithdrawn"

/** The state of one account (caller memory; owns nothing). */
typedef struct account {
    bool open;
    char owner[ACCOUNT_OWNER_MAX + 1];
    int64_t balance;
} account;

/** Why a command was refused (es_agg_refusal_reason()). */
enum account_refusal {
    ACCOUNT_REFUSED_NONE = 0,
    ACCOUNT_REFUSED_NOT_OPEN = 1,
    ACCOUNT_REFUSED_ALREADY_OPEN = 2,
    ACCOUNT_REFUSED_INSUFFICIENT_FUNDS = 3,
    ACCOUNT_REFUSED_OVERFLOW = 4,
    ACCOUNT_REFUSED_SAME_ACCOUNT = 5,
    ACCOUNT_REFUSED_BAD_AMOUNT = 6,
    ACCOUNT_REFUSED_BAD_OWNER = 7,
};

/** @brief "insufficient_funds", ... ("refused" for an unknown reason). */
const char *account_refusal_name(int reason);

typedef enum account_cmd_kind {
    ACCOUNT_CMD_OPEN,
    ACCOUNT_CMD_DEPOSIT,
    ACCOUNT_CMD_WITHDRAW,
    ACCOUNT_CMD_TRANSFER,
} account_cmd_kind;

/** A command; strings borrowed for the call. */
typedef struct account_cmd {
    account_cmd_kind kind;
    const char *id;    /**< the account (FROM of a transfer), for messages */
    const char *to;    /**< TO of a transfer */
    const char *owner; /**< open */
    int64_t amount;    /**< deposit, withdraw, transfer */
} account_cmd;

/** The callbacks of the account aggregate (state_size = sizeof(account)). */
extern const es_agg_ops account_ops;

/**
 * @brief Decide open, deposit or withdraw on one account (es_agg_decide_fn).
 * @return ES_OK with one event emitted for index 0; ES_ERR_REFUSED with
 *   a reason of enum account_refusal; ES_ERR_INVALID_ARGUMENT (a transfer
 *   command, or no id); ES_ERR_NO_MEMORY.
 */
es_err account_decide(const void *state, const void *command, es_agg_decision *d);

/**
 * @brief Decide a transfer over states[0] = FROM and states[1] = TO
 *        (es_agg_decide_many_fn).
 * @return ES_OK with MoneyWithdrawn for index 0 and MoneyDeposited for
 *   index 1; ES_ERR_REFUSED (same account, bad amount, either not open,
 *   insufficient funds, overflow on TO); ES_ERR_INVALID_ARGUMENT (n != 2 or
 *   not a transfer); ES_ERR_NO_MEMORY.
 */
es_err account_decide_transfer(const void *const *states, size_t n, const void *command,
                               es_agg_decision *d);

/**
 * @brief The fold (account_ops.apply).
 * @return ES_OK; ES_ERR_MALFORMED: an unknown type, a payload that is not
 *   the event's JSON, or an event that breaks an invariant.
 */
es_err account_apply(void *ctx, void *state, const es_recorded_event *ev);

/**
 * @brief Parse an amount strictly: digits only, no sign, no leading zero,
 *        1..INT64_MAX ("1.5", "-3", "0", "abc", "+1", " 1", "01" and
 *        9223372036854775808 are rejected).
 */
bool account_parse_amount(const char *s, int64_t *out);

/** @brief 1..ACCOUNT_ID_MAX characters of [A-Za-z0-9_.-]. */
bool account_valid_id(const char *id);

/** @brief 1..ACCOUNT_OWNER_MAX bytes of valid UTF-8 without control characters. */
bool account_valid_owner(const char *owner);

/** @brief "account-<id>" into buf (ACCOUNT_STREAM_BYTES); false for a bad id. */
bool account_stream(const char *id, char buf[ACCOUNT_STREAM_BYTES]);

/**
 * @brief The amount of a MoneyDeposited/MoneyWithdrawn event (for displays).
 * @return true when ev is one of them and its payload is valid.
 */
bool account_event_amount(const es_recorded_event *ev, int64_t *amount);

/**
 * @brief Transfer between two accounts through the aggregate API: one
 *        transaction, both accounts' loaded revisions as expectations.
 * @param[out] from_after, to_after the states after the transfer (may be
 *   NULL; no release needed: an account owns nothing)
 * @param[out] targets_out the two targets after the call (revisions), may
 *   be NULL
 * @return the codes of es_agg_execute_many(). A transfer from an account
 *   to itself goes through es_agg_execute() on that account, whose decide
 *   refuses it (ES_ERR_REFUSED, ACCOUNT_REFUSED_SAME_ACCOUNT).
 */
es_err account_transfer(es_agg *a, const char *from, const char *to, int64_t amount,
                        account *from_after, account *to_after, es_agg_target targets_out[2],
                        es_agg_result *res);

#endif
