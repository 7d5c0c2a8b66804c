/*
 * mdb_err — the one translation of LMDB's return codes into es_err, shared
 * by the store (server/store/) and the read models' environments
 * (client/projector.c, es_projector_err_from_mdb). Built as a small static
 * library of its own (libesmdberr) so that proto's other modules, which the
 * client library links, need no LMDB.
 */
#ifndef ES_MDB_ERR_H
#define ES_MDB_ERR_H

#include "es/err.h"

/**
 * @brief An LMDB return code (MDB_* or an errno value) as an es_err.
 * @return ES_OK for MDB_SUCCESS; ES_ERR_NOT_FOUND for MDB_NOTFOUND;
 *         ES_ERR_STORE_FULL for MDB_MAP_FULL, ENOSPC, EDQUOT and EFBIG (the
 *         file may not grow: file system or RLIMIT_FSIZE); ES_ERR_CORRUPT for
 *         MDB_CORRUPTED and MDB_PAGE_NOTFOUND; ES_ERR_INCOMPATIBLE_STORE for
 *         MDB_INVALID, MDB_VERSION_MISMATCH and MDB_INCOMPATIBLE;
 *         ES_ERR_TOO_LARGE for MDB_TXN_FULL and MDB_BAD_VALSIZE; ES_ERR_BUSY
 *         for MDB_READERS_FULL, EAGAIN and EBUSY (a lock held elsewhere);
 *         ES_ERR_NO_MEMORY for ENOMEM; ES_ERR_INVALID_ARGUMENT for EINVAL;
 *         ES_ERR_IO for everything else.
 */
es_err es_err_from_mdb(int rc);

#endif
