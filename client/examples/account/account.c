/*
 * account — decisions, fold and snapshot encoding of the bank account
 * (see account.h for the events and the invariants).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "account.h"

#define JSON_TYPE "application/json"

const char *account_refusal_name(int reason)
{
    switch (reason) {
    case ACCOUNT_REFUSED_NOT_OPEN:
        return "not_open";
    case ACCOUNT_REFUSED_ALREADY_OPEN:
        return "already_open";
    case ACCOUNT_REFUSED_INSUFFICIENT_FUNDS:
        return "insufficient_funds";
    case ACCOUNT_REFUSED_OVERFLOW:
        return "overflow";
    case ACCOUNT_REFUSED_SAME_ACCOUNT:
        return "same_account";
    case ACCOUNT_REFUSED_BAD_AMOUNT:
        return "bad_amount";
    case ACCOUNT_REFUSED_BAD_OWNER:
        return "bad_owner";
    default:
        return "refused";
    }
}

/* ----------------------------------------------------------- parsing -- */

bool account_parse_amount(const char *s, int64_t *out)
{
    if (s == NULL || s[0] < '1' || s[0] > '9') {
        return false;
    }
    int64_t v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool account_valid_id(const char *id)
{
    if (id == NULL) {
        return false;
    }
    size_t n = 0;
    for (const char *p = id; *p != '\0'; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok || n >= ACCOUNT_ID_MAX) {
            return false;
        }
    }
    return n > 0;
}

/* Strict UTF-8 (no overlong forms, surrogates or values above U+10FFFF)
 * without C0/C1 control characters or DEL. */
bool account_valid_owner(const char *owner)
{
    if (owner == NULL) {
        return false;
    }
    size_t len = strnlen(owner, ACCOUNT_OWNER_MAX + 1);
    if (len == 0 || len > ACCOUNT_OWNER_MAX) {
        return false;
    }
    const unsigned char *p = (const unsigned char *)owner, *end = p + len;
    while (p < end) {
        uint32_t cp;
        size_t n;
        if (*p < 0x80) {
            cp = *p;
            n = 1;
        } else if ((*p & 0xe0) == 0xc0) {
            cp = *p & 0x1f;
            n = 2;
        } else if ((*p & 0xf0) == 0xe0) {
            cp = *p & 0x0f;
            n = 3;
        } else if ((*p & 0xf8) == 0xf0) {
            cp = *p & 0x07;
            n = 4;
        } else {
            return false;
        }
        if ((size_t)(end - p) < n) {
            return false;
        }
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp < 0x20 ||
            (cp >= 0x7f && cp <= 0x9f)) {
            return false;
        }
        p += n;
    }
    return true;
}

bool account_stream(const char *id, char buf[ACCOUNT_STREAM_BYTES])
{
    if (!account_valid_id(id)) {
        return false;
    }
    memcpy(buf, ACCOUNT_STREAM_PREFIX, sizeof(ACCOUNT_STREAM_PREFIX) - 1);
    memcpy(buf + sizeof(ACCOUNT_STREAM_PREFIX) - 1, id, strlen(id) + 1);
    return true;
}

/* ----------------------------------------------------------- events -- */

/* Emit one event whose payload is a JSON object with one member. */
static es_err emit_json(es_agg_decision *d, size_t index, const char *type, const char *key,
                        json_t *value)
{
    json_t *o = json_object();
    if (o == NULL || value == NULL || json_object_set_new(o, key, value) != 0) {
        json_decref(o);
        return ES_ERR_NO_MEMORY;
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text == NULL) {
        return ES_ERR_NO_MEMORY;
    }
    es_err rv = es_agg_emit(d, index, type, JSON_TYPE, text, strlen(text));
    free(text);
    return rv;
}

static es_err emit_amount(es_agg_decision *d, size_t index, const char *type, int64_t amount)
{
    return emit_json(d, index, type, "amount", json_integer((json_int_t)amount));
}

/* Parse a payload: a JSON object. NULL when it is not one. */
static json_t *payload(const es_recorded_event *ev)
{
    if (ev->data == NULL || ev->data_len == 0) {
        return NULL;
    }
    json_error_t err;
    json_t *o = json_loadb((const char *)ev->data, ev->data_len, JSON_REJECT_DUPLICATES, &err);
    if (o != NULL && !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The "amount" of a payload: an integer in 1..INT64_MAX. */
static bool payload_amount(const es_recorded_event *ev, int64_t *amount)
{
    json_t *o = payload(ev);
    json_t *v = o != NULL ? json_object_get(o, "amount") : NULL;
    bool ok = json_is_integer(v) && json_integer_value(v) > 0;
    if (ok) {
        *amount = (int64_t)json_integer_value(v);
    }
    json_decref(o);
    return ok;
}

bool account_event_amount(const es_recorded_event *ev, int64_t *amount)
{
    if (strcmp(ev->type, ACCOUNT_DEPOSITED) != 0 && strcmp(ev->type, ACCOUNT_WITHDRAWN) != 0) {
        return false;
    }
    return payload_amount(ev, amount);
}

/* ---------------------------------------------------------- decisions -- */

static es_err refuse_not_open(es_agg_decision *d, const char *id)
{
    return es_agg_refuse(d, ACCOUNT_REFUSED_NOT_OPEN, "account %s is not open", id);
}

static es_err refuse_bad_amount(es_agg_decision *d, int64_t amount)
{
    return es_agg_refuse(d, ACCOUNT_REFUSED_BAD_AMOUNT,
                         "the amount must be a positive integer in minor units (got %" PRId64 ")",
                         amount);
}

/* Can `acc` give `amount`? */
static es_err check_withdraw(es_agg_decision *d, const account *acc, const char *id, int64_t amount)
{
    if (!acc->open) {
        return refuse_not_open(d, id);
    }
    if (amount > acc->balance) {
        return es_agg_refuse(d, ACCOUNT_REFUSED_INSUFFICIENT_FUNDS,
                             "insufficient funds: account %s has %" PRId64
                             ", cannot withdraw %" PRId64,
                             id, acc->balance, amount);
    }
    return ES_OK;
}

/* Can `acc` take `amount`? */
static es_err check_deposit(es_agg_decision *d, const account *acc, const char *id, int64_t amount)
{
    if (!acc->open) {
        return refuse_not_open(d, id);
    }
    if (acc->balance > INT64_MAX - amount) {
        return es_agg_refuse(d, ACCOUNT_REFUSED_OVERFLOW,
                             "a deposit of %" PRId64
                             " would overflow the balance of account %s (%" PRId64
                             "; at most %" PRId64 ")",
                             amount, id, acc->balance, INT64_MAX);
    }
    return ES_OK;
}

es_err account_decide(const void *state, const void *command, es_agg_decision *d)
{
    const account *acc = state;
    const account_cmd *cmd = command;
    if (acc == NULL || cmd == NULL || cmd->id == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    es_err rv;
    switch (cmd->kind) {
    case ACCOUNT_CMD_OPEN:
        if (acc->open) {
            return es_agg_refuse(d, ACCOUNT_REFUSED_ALREADY_OPEN,
                                 "account %s is already open (owner %s)", cmd->id, acc->owner);
        }
        if (!account_valid_owner(cmd->owner)) {
            return es_agg_refuse(d, ACCOUNT_REFUSED_BAD_OWNER,
                                 "the owner must be 1..%d bytes of UTF-8 without control "
                                 "characters",
                                 ACCOUNT_OWNER_MAX);
        }
        return emit_json(d, 0, ACCOUNT_OPENED, "owner", json_string(cmd->owner));
    case ACCOUNT_CMD_DEPOSIT:
        if (cmd->amount <= 0) {
            return refuse_bad_amount(d, cmd->amount);
        }
        if ((rv = check_deposit(d, acc, cmd->id, cmd->amount)) != ES_OK) {
            return rv;
        }
        return emit_amount(d, 0, ACCOUNT_DEPOSITED, cmd->amount);
    case ACCOUNT_CMD_WITHDRAW:
        if (cmd->amount <= 0) {
            return refuse_bad_amount(d, cmd->amount);
        }
        if ((rv = check_withdraw(d, acc, cmd->id, cmd->amount)) != ES_OK) {
            return rv;
        }
        return emit_amount(d, 0, ACCOUNT_WITHDRAWN, cmd->amount);
    case ACCOUNT_CMD_TRANSFER:
        /* Only the degenerate transfer is decided on one account. */
        if (cmd->to != NULL && strcmp(cmd->to, cmd->id) == 0) {
            return es_agg_refuse(d, ACCOUNT_REFUSED_SAME_ACCOUNT,
                                 "cannot transfer from account %s to itself", cmd->id);
        }
        return ES_ERR_INVALID_ARGUMENT;
    }
    return ES_ERR_INVALID_ARGUMENT;
}

es_err account_decide_transfer(const void *const *states, size_t n, const void *command,
                               es_agg_decision *d)
{
    const account_cmd *cmd = command;
    if (states == NULL || n != 2 || cmd == NULL || cmd->kind != ACCOUNT_CMD_TRANSFER ||
        cmd->id == NULL || cmd->to == NULL) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    const account *from = states[0], *to = states[1];
    if (strcmp(cmd->id, cmd->to) == 0) {
        return es_agg_refuse(d, ACCOUNT_REFUSED_SAME_ACCOUNT,
                             "cannot transfer from account %s to itself", cmd->id);
    }
    if (cmd->amount <= 0) {
        return refuse_bad_amount(d, cmd->amount);
    }
    es_err rv = check_withdraw(d, from, cmd->id, cmd->amount);
    if (rv == ES_OK) {
        rv = check_deposit(d, to, cmd->to, cmd->amount);
    }
    if (rv != ES_OK) {
        return rv;
    }
    rv = emit_amount(d, 0, ACCOUNT_WITHDRAWN, cmd->amount);
    if (rv == ES_OK) {
        rv = emit_amount(d, 1, ACCOUNT_DEPOSITED, cmd->amount);
    }
    return rv;
}

/* --------------------------------------------------------------- fold -- */

es_err account_apply(void *ctx, void *state, const es_recorded_event *ev)
{
    account *acc = state;
    int64_t amount;
    if (strcmp(ev->type, ACCOUNT_OPENED) == 0) {
        json_t *o = payload(ev);
        json_t *owner = o != NULL ? json_object_get(o, "owner") : NULL;
        bool ok =
            !acc->open && json_is_string(owner) && account_valid_owner(json_string_value(owner));
        if (ok) {
            acc->open = true;
            acc->balance = 0;
            snprintf(acc->owner, sizeof(acc->owner), "%s", json_string_value(owner));
        }
        json_decref(o);
        return ok ? ES_OK : ES_ERR_MALFORMED;
    }
    if (strcmp(ev->type, ACCOUNT_DEPOSITED) == 0) {
        if (!acc->open || !payload_amount(ev, &amount) || acc->balance > INT64_MAX - amount) {
            return ES_ERR_MALFORMED;
        }
        acc->balance += amount;
        return ES_OK;
    }
    if (strcmp(ev->type, ACCOUNT_WITHDRAWN) == 0) {
        if (!acc->open || !payload_amount(ev, &amount) || amount > acc->balance) {
            return ES_ERR_MALFORMED;
        }
        acc->balance -= amount;
        return ES_OK;
    }
    return ES_ERR_MALFORMED;
}

/* ----------------------------------------------------------- snapshots -- */

static es_err account_init(void *ctx, void *state)
{
    memset(state, 0, sizeof(account));
    return ES_OK;
}

static es_err account_encode(void *ctx, const void *state, void **data, size_t *len)
{
    const account *acc = state;
    json_t *o = json_pack("{s:b, s:s, s:I}", "open", acc->open, "owner", acc->owner, "balance",
                          (json_int_t)acc->balance);
    if (o == NULL) {
        return ES_ERR_NO_MEMORY;
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (text == NULL) {
        return ES_ERR_NO_MEMORY;
    }
    *data = text;
    *len = strlen(text);
    return ES_OK;
}

static es_err account_decode(void *ctx, void *state, const void *data, size_t len)
{
    account *acc = state;
    if (data == NULL || len == 0) {
        return ES_ERR_MALFORMED;
    }
    json_error_t err;
    json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    json_t *open = json_object_get(o, "open");
    json_t *owner = json_object_get(o, "owner");
    json_t *balance = json_object_get(o, "balance");
    bool ok = json_is_object(o) && json_is_boolean(open) && json_is_string(owner) &&
              json_is_integer(balance) && json_integer_value(balance) >= 0;
    if (ok && json_is_true(open)) {
        ok = account_valid_owner(json_string_value(owner));
    } else if (ok) {
        ok = json_integer_value(balance) == 0 && json_string_length(owner) == 0;
    }
    if (ok) {
        acc->open = json_is_true(open);
        acc->balance = (int64_t)json_integer_value(balance);
        snprintf(acc->owner, sizeof(acc->owner), "%s", json_string_value(owner));
    }
    json_decref(o);
    return ok ? ES_OK : ES_ERR_MALFORMED;
}

const es_agg_ops account_ops = {
    .state_size = sizeof(account),
    .state_format = ACCOUNT_STATE_FORMAT,
    .init = account_init,
    .finish = NULL,
    .apply = account_apply,
    .encode = account_encode,
    .decode = account_decode,
};

/* ----------------------------------------------------------- transfer -- */

es_err account_transfer(es_agg *a, const char *from, const char *to, int64_t amount,
                        account *from_after, account *to_after, es_agg_target targets_out[2],
                        es_agg_result *res)
{
    char s_from[ACCOUNT_STREAM_BYTES], s_to[ACCOUNT_STREAM_BYTES];
    if (a == NULL || !account_stream(from, s_from) || !account_stream(to, s_to)) {
        return ES_ERR_INVALID_ARGUMENT;
    }
    account_cmd cmd = {.kind = ACCOUNT_CMD_TRANSFER, .id = from, .to = to, .amount = amount};
    if (strcmp(from, to) == 0) {
        /* One stream cannot take two appends of one transaction: let the
         * account's own decide refuse it. */
        es_err rv = es_agg_execute(a, s_from, account_decide, &cmd, NULL, res);
        if (targets_out != NULL) {
            memset(targets_out, 0, 2 * sizeof(*targets_out));
        }
        return rv;
    }
    es_agg_target t[2] = {
        {.agg = a, .stream = s_from, .state_out = from_after},
        {.agg = a, .stream = s_to, .state_out = to_after},
    };
    es_err rv = es_agg_execute_many(t, 2, account_decide_transfer, &cmd, res);
    if (targets_out != NULL) {
        memcpy(targets_out, t, sizeof(t));
        targets_out[0].stream = targets_out[1].stream = NULL; /* were on this stack */
    }
    return rv;
}
