/*
 * mdb_err — LMDB return codes as es_err (see mdb_err.h).
 */
#include "mdb_err.h"

#include <errno.h>
#include <lmdb.h>

es_err es_err_from_mdb(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return ES_OK;
    case MDB_NOTFOUND:
        return ES_ERR_NOT_FOUND;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG: /* the file may not grow (file system or RLIMIT_FSIZE limit) */
        return ES_ERR_STORE_FULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        return ES_ERR_CORRUPT;
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
        return ES_ERR_INCOMPATIBLE_STORE;
    case MDB_TXN_FULL:
    case MDB_BAD_VALSIZE:
        return ES_ERR_TOO_LARGE;
    case MDB_READERS_FULL:
    case EAGAIN:
    case EBUSY:
        return ES_ERR_BUSY;
    case ENOMEM:
        return ES_ERR_NO_MEMORY;
    case EINVAL:
        return ES_ERR_INVALID_ARGUMENT;
    default:
        return ES_ERR_IO;
    }
}
