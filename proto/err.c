/* es_strerror and es_errname over the one table in es/err.h. */
#include "es/err.h"

const char *es_strerror(es_err err)
{
    switch (err) {
#define ES_ERR_MSG_(name, num, msg)                                                                \
    case ES_ERR_##name:                                                                            \
        return msg;
        ES_ERR_TABLE(ES_ERR_MSG_)
#undef ES_ERR_MSG_
    }
    return "unknown error";
}

const char *es_errname(es_err err)
{
    switch (err) {
#define ES_ERR_NAME_(name, num, msg)                                                               \
    case ES_ERR_##name:                                                                            \
        return #name;
        ES_ERR_TABLE(ES_ERR_NAME_)
#undef ES_ERR_NAME_
    }
    return "UNKNOWN";
}
