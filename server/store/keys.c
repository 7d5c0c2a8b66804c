/*
 * keys.c — the key store: the data keys of encrypted streams and subjects,
 * in a file of fixed-size slots beside data.mdb (DIR/keys.esk), and the
 * AES-256-GCM seal and unseal of a record's data and metadata.
 *
 * Design notes
 * ============
 *
 * Why not in LMDB. Erasure by crypto-shredding destroys a key so that
 * every copy of the ciphertext (the log's pages, freed pages, backups,
 * followers' copies) becomes noise. LMDB is copy-on-write: a changed or
 * deleted value is written to a new page and the old page, key included,
 * stays in the file until it happens to be reused. So the keys live in a
 * file the store overwrites in place:
 *
 *   keys.esk    slot 0: the header         slot n >= 1: one data key
 *   +------------------------------+       +------+--------+------------+---------+
 *   | "esd-keys" | ver u32 | 64 u32 |       | live | crc32c | key        | zero    |
 *   | store id (16) | zero ... crc |       | u32  | u32 LE | 32 bytes   | 24 bytes|
 *   +------------------------------+       +------+--------+------------+---------+
 *   64 bytes each; slot n at offset 64 * n. live = KEYS_LIVE; crc32c over
 *   (n as u64 LE | key). A slot of zeros is a destroyed (or never used) key.
 *
 * Destroying a key is one pwrite of 64 zero bytes at the slot's offset and
 * an fdatasync. On a file system that overwrites in place (ext4 and xfs
 * without reflinks, for data blocks of a file that is not shared) the old
 * bytes are gone from the block device's view once the sync returns. What
 * this cannot promise, and docs/erasure.md says so: a copy-on-write file
 * system (btrfs, zfs, a reflinked or snapshotted file) writes the zeros to
 * a new block, and an SSD's flash translation layer remaps every write, so
 * the old key may stay in a flash page the drive has not yet erased, out of
 * reach of the operating system but not of a forensic lab reading raw
 * flash. Keep keys.esk on a file system that overwrites in place, on a
 * self-encrypting drive, or on encrypted storage whose own key is managed.
 *
 * Why a crash cannot leave a torn slot that matters. A slot is 64 bytes at
 * a 64-byte offset: it never spans a sector, and sectors are written whole.
 * A torn write would still be detected by the CRC, and never happens for a
 * new key (new keys are written and synced before any record uses them);
 * a torn erasure is finished at the next open (store_crypt_recover zeroes
 * every slot erased_keys lists) before anything is read. So at run time a
 * slot of zeros is a destroyed key (reads answer ERASED), and a slot that
 * is neither zeros nor a key passing its CRC is damage (CORRUPT,
 * store_keys_missing).
 *
 * Allocation. Slots are never reused: a destroyed slot stays zero for
 * good, so no key can come back. The writer takes keys from a pool of
 * KEYS_POOL slots it wrote and synced in one go (one fdatasync per
 * KEYS_POOL new streams, not one per stream); a commit that took slots and
 * failed leaves them unused. A store opened again starts a new pool at the
 * end of the file, never inside it: slots past the last one LMDB refers to
 * may belong to another copy of this store (a restored backup writes beside
 * the key store of the primary it was taken from). The file grows 64 bytes
 * per stream or subject, and KEYS_POOL * 64 bytes per open.
 *
 * Copies (a follower). A follower writes the keys its primary's relay
 * publishes at the same slot numbers (store_keys_put, then one
 * store_keys_publish: synced before the records that need them are
 * imported); the slots between are holes that read as zeros. It never takes
 * keys of its own; promoted to a primary, it opens the file again and its
 * pools start after the last slot it copied.
 *
 * Readers. The file is mapped read-only (MAP_SHARED: the page cache is the
 * file, so a destroyed slot reads as zeros at once) over a fixed reservation
 * of KEYS_MAX_SLOTS slots; readers look only below `end`, which the writer
 * advances after a pool is written. A key is copied out of the map only to
 * set it in a thread's cipher context, and the copy is cleansed; the context
 * keeps its key schedule until the thread sets another key or ends (see
 * "sealing": a reading thread sets a key once per run of records that use
 * it, and checks the slot's live marker for every record).
 *
 * Sealing. AES-256-GCM (OpenSSL EVP). The 96-bit nonce is a random 64-bit
 * prefix per thread (RAND_bytes, drawn again every 2^32 records) and a
 * 32-bit counter: unique within a thread, and across processes sharing a
 * key (a restored backup appending beside its primary) equal only if two
 * 64-bit random draws are (a nonce from the position would repeat there
 * for certain); a forked child draws a new prefix. The 16-byte tag covers
 * the record's position and event id and the sealed field's header as
 * additional data, so a sealed blob moved to another record does not open.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "crc32c.h"
#include "internal.h"

#define KEYS_MAGIC     "esd-keys"
#define KEYS_VERSION   1u
#define KEYS_LIVE      0x3159454bu /* "KEY1" */
#define KEYS_POOL      4096u
#define KEYS_MAX_SLOTS (sizeof(size_t) >= 8 ? (1ull << 24) : (1ull << 20))

static void header_encode(uint8_t out[STORE_KEY_SLOT_BYTES], const uint8_t id[STORE_ID_BYTES])
{
    memset(out, 0, STORE_KEY_SLOT_BYTES);
    memcpy(out, KEYS_MAGIC, 8);
    put_u32le(out + 8, KEYS_VERSION);
    put_u32le(out + 12, STORE_KEY_SLOT_BYTES);
    memcpy(out + 16, id, STORE_ID_BYTES);
    put_u32le(out + 60, crc32c(0, out, 60));
}

static uint32_t slot_crc(uint64_t n, const uint8_t *key)
{
    uint8_t b[8];
    put_u64le(b, n);
    return crc32c(crc32c(0, b, 8), key, STORE_KEY_BYTES);
}

static es_err sync_fd(int fd)
{
    return fdatasync(fd) == 0
               ? ES_OK
               : (errno == ENOSPC || errno == EDQUOT ? ES_ERR_STORE_FULL : ES_ERR_IO);
}

/* The last generation given to an opened key store: the name under which
 * the readers' cipher contexts know its keys (see "sealing"). */
static _Atomic uint64_t keys_generation;

static es_err keys_map(store_keys *k)
{
    size_t len = (size_t)KEYS_MAX_SLOTS * STORE_KEY_SLOT_BYTES;
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, k->fd, 0);
    if (m == MAP_FAILED) {
        return ES_ERR_NO_MEMORY;
    }
    k->map = m;
    k->map_len = len;
    return ES_OK;
}

es_err store_keys_open(store_keys *k, const char *dir, const uint8_t id[STORE_ID_BYTES],
                       bool create, bool read_only, bool sync, char *msg, size_t msg_len)
{
    memset(k, 0, sizeof *k);
    k->fd = -1;
    k->sync = sync;
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, STORE_KEYS_FILE);
    if (n < 0 || (size_t)n >= sizeof path) {
        store_set_msg(msg, msg_len, "%s: path too long", dir);
        return ES_ERR_INVALID_ARGUMENT;
    }
    int flags = read_only ? O_RDONLY : O_RDWR;
    if (create) {
        flags |= O_CREAT | O_EXCL;
    }
    k->fd = open(path, flags | O_CLOEXEC, 0600);
    if (k->fd < 0 && create && errno == EEXIST) {
        /* Never truncated: it may be the only copy of another store's keys,
         * or be left by a creation that a crash interrupted. */
        store_set_msg(msg, msg_len,
                      "%s exists but the store is new: move it away (it holds keys of "
                      "another store, or of a creation that did not finish)",
                      path);
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    if (k->fd < 0) {
        es_err rv = errno == ENOENT ? ES_ERR_INCOMPATIBLE_STORE : ES_ERR_IO;
        store_set_msg(msg, msg_len,
                      "%s: %s (the store is encrypted and its key store is needed: see "
                      "docs/erasure.md)",
                      path, strerror(errno));
        return rv;
    }
    uint8_t hdr[STORE_KEY_SLOT_BYTES];
    if (create) {
        header_encode(hdr, id);
        if (pwrite(k->fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) {
            es_err rv = errno == ENOSPC ? ES_ERR_STORE_FULL : ES_ERR_IO;
            store_set_msg(msg, msg_len, "%s: %s", path, "cannot write the key store");
            close(k->fd);
            unlink(path);
            k->fd = -1;
            return rv;
        }
        if (sync_fd(k->fd) != ES_OK) {
            store_set_msg(msg, msg_len, "%s: %s", path, "cannot sync the key store");
            close(k->fd);
            unlink(path);
            k->fd = -1;
            return ES_ERR_IO;
        }
    }
    struct stat st;
    uint8_t want[STORE_KEY_SLOT_BYTES];
    header_encode(want, id);
    if (fstat(k->fd, &st) != 0 || pread(k->fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        memcmp(hdr, want, sizeof hdr) != 0) {
        store_set_msg(msg, msg_len, "%s: %s", path,
                      "not the key store of this store (another store id, or damaged)");
        close(k->fd);
        k->fd = -1;
        return ES_ERR_INCOMPATIBLE_STORE;
    }
    uint64_t slots = (uint64_t)st.st_size / STORE_KEY_SLOT_BYTES;
    if (slots > KEYS_MAX_SLOTS) {
        store_set_msg(msg, msg_len, "%s: %s", path, "key store larger than its limit");
        close(k->fd);
        k->fd = -1;
        return ES_ERR_CORRUPT;
    }
    es_err rv = keys_map(k);
    if (rv != ES_OK) {
        store_set_msg(msg, msg_len, "%s: %s", path, "cannot map the key store");
        close(k->fd);
        k->fd = -1;
        return rv;
    }
    atomic_store(&k->end, slots);
    k->next = slots; /* a new pool starts at the end: see the design notes */
    k->gen = atomic_fetch_add(&keys_generation, 1) + 1;
    return ES_OK;
}

void store_keys_close(store_keys *k)
{
    if (k->map) {
        munmap(k->map, k->map_len);
        k->map = NULL;
    }
    if (k->fd >= 0) {
        close(k->fd);
        k->fd = -1;
    }
}

/* Write KEYS_POOL fresh keys at the end of the file and sync them. */
static es_err keys_grow(store_keys *k)
{
    uint64_t end = atomic_load(&k->end);
    if (end + KEYS_POOL > KEYS_MAX_SLOTS) {
        return ES_ERR_STORE_FULL;
    }
    uint8_t *buf = calloc(KEYS_POOL, STORE_KEY_SLOT_BYTES);
    if (!buf) {
        return ES_ERR_NO_MEMORY;
    }
    es_err rv = ES_OK;
    for (uint32_t i = 0; i < KEYS_POOL; i++) {
        uint8_t *s = buf + (size_t)i * STORE_KEY_SLOT_BYTES;
        if (RAND_bytes(s + 8, STORE_KEY_BYTES) != 1) {
            rv = ES_ERR_INTERNAL;
            goto out_free_buf;
        }
        put_u32le(s, KEYS_LIVE);
        put_u32le(s + 4, slot_crc(end + i, s + 8));
    }
    size_t len = (size_t)KEYS_POOL * STORE_KEY_SLOT_BYTES;
    errno = 0;
    ssize_t w = pwrite(k->fd, buf, len, (off_t)(end * STORE_KEY_SLOT_BYTES));
    if (w != (ssize_t)len) {
        /* A short write is a full file system (or a file size limit). */
        rv = (w >= 0 || errno == ENOSPC || errno == EDQUOT || errno == EFBIG) ? ES_ERR_STORE_FULL
                                                                              : ES_ERR_IO;
        goto out_free_buf;
    }
    /* Always synced, also with sync off: a record must never reach the
     * disk before the key it needs (LMDB may write its pages any time). */
    rv = sync_fd(k->fd);
    if (rv == ES_OK) {
        atomic_store(&k->end, end + KEYS_POOL);
    }
out_free_buf:
    OPENSSL_cleanse(buf, (size_t)KEYS_POOL * STORE_KEY_SLOT_BYTES);
    free(buf);
    return rv;
}

es_err store_keys_take(store_keys *k, uint64_t *slot)
{
    if (k->next >= atomic_load(&k->end)) {
        es_err rv = keys_grow(k);
        if (rv != ES_OK) {
            return rv;
        }
    }
    *slot = k->next++;
    return ES_OK;
}

bool store_keys_get(const store_keys *k, uint64_t slot, uint8_t key[STORE_KEY_BYTES])
{
    if (!k->map || slot == 0 || slot >= atomic_load(&k->end)) {
        return false;
    }
    const uint8_t *s = k->map + slot * STORE_KEY_SLOT_BYTES;
    if (get_u32le(s) != KEYS_LIVE) {
        return false;
    }
    memcpy(key, s + 8, STORE_KEY_BYTES);
    if (get_u32le(s + 4) != slot_crc(slot, key)) {
        OPENSSL_cleanse(key, STORE_KEY_BYTES);
        return false;
    }
    return true;
}

bool store_keys_blank(const store_keys *k, uint64_t slot)
{
    if (!k->map || slot == 0 || slot >= atomic_load(&k->end)) {
        return true;
    }
    const uint8_t *s = k->map + slot * STORE_KEY_SLOT_BYTES;
    for (size_t i = 0; i < STORE_KEY_SLOT_BYTES; i++) {
        if (s[i]) {
            return false;
        }
    }
    return true;
}

es_err store_keys_missing(const store_keys *k, uint64_t slot)
{
    return store_keys_blank(k, slot) ? ES_ERR_ERASED : ES_ERR_CORRUPT;
}

bool store_keys_marked_live(const store_keys *k, uint64_t slot)
{
    return k->map && slot != 0 && slot < atomic_load(&k->end) &&
           get_u32le(k->map + slot * STORE_KEY_SLOT_BYTES) == KEYS_LIVE;
}

es_err store_keys_destroy(store_keys *k, uint64_t slot)
{
    if (slot == 0 || slot >= atomic_load(&k->end)) {
        return ES_OK; /* never written: nothing to destroy */
    }
    uint8_t zero[STORE_KEY_SLOT_BYTES] = {0};
    if (pwrite(k->fd, zero, sizeof zero, (off_t)(slot * STORE_KEY_SLOT_BYTES)) !=
        (ssize_t)sizeof zero) {
        return ES_ERR_IO;
    }
    return sync_fd(k->fd);
}

es_err store_keys_put(store_keys *k, uint64_t slot, const uint8_t key[STORE_KEY_BYTES])
{
    if (slot == 0 || slot >= KEYS_MAX_SLOTS) {
        return ES_ERR_CORRUPT;
    }
    uint8_t s[STORE_KEY_SLOT_BYTES] = {0};
    put_u32le(s, KEYS_LIVE);
    put_u32le(s + 4, slot_crc(slot, key));
    memcpy(s + 8, key, STORE_KEY_BYTES);
    errno = 0;
    ssize_t w = pwrite(k->fd, s, sizeof s, (off_t)(slot * STORE_KEY_SLOT_BYTES));
    OPENSSL_cleanse(s, sizeof s);
    if (w != (ssize_t)sizeof s) {
        return (w >= 0 || errno == ENOSPC || errno == EDQUOT || errno == EFBIG) ? ES_ERR_STORE_FULL
                                                                                : ES_ERR_IO;
    }
    return ES_OK;
}

es_err store_keys_publish(store_keys *k, uint64_t top)
{
    es_err rv = sync_fd(k->fd);
    if (rv == ES_OK && top > atomic_load(&k->end)) {
        atomic_store(&k->end, top);
    }
    return rv;
}

bool store_keys_live(const store_keys *k, uint64_t slot)
{
    uint8_t key[STORE_KEY_BYTES];
    bool live = store_keys_get(k, slot, key);
    OPENSSL_cleanse(key, sizeof key);
    return live;
}

es_err store_keys_copy(const store_keys *k, const char *dest_path)
{
    int out = open(dest_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        return errno == ENOSPC ? ES_ERR_STORE_FULL : ES_ERR_IO;
    }
    es_err rv = ES_OK;
    uint8_t buf[64 * STORE_KEY_SLOT_BYTES];
    off_t off = 0;
    for (;;) {
        ssize_t n = pread(k->fd, buf, sizeof buf, off);
        if (n < 0) {
            rv = ES_ERR_IO;
            break;
        }
        if (n == 0) {
            break;
        }
        if (write(out, buf, (size_t)n) != n) {
            rv = errno == ENOSPC || errno == EDQUOT ? ES_ERR_STORE_FULL : ES_ERR_IO;
            break;
        }
        off += n;
    }
    OPENSSL_cleanse(buf, sizeof buf);
    if (rv == ES_OK && fsync(out) != 0) {
        rv = ES_ERR_IO;
    }
    close(out);
    if (rv != ES_OK) {
        unlink(dest_path);
    }
    return rv;
}

/* ---------------------------------------------------------------- sealing -- */

/*
 * The per-thread cipher contexts. For records of a few hundred bytes,
 * OpenSSL 3 spends more on the calls around AES-GCM than on AES-GCM itself
 * (callgrind, a replay of 200-byte events: of ~3,700 instructions per
 * record opened with an init and a ctrl per record, ~1,350 were AES, GHASH
 * and the tag check): naming the cipher is a provider fetch, a key costs its key
 * schedule, an init that names an IV asks the provider for the IV length
 * through a parameter lookup, and every ctrl is translated into
 * parameters. So:
 *
 *  - one pair of contexts per thread, set up for AES-256-GCM once and
 *    reused for every record, freed by the thread-specific key's destructor
 *    when the thread ends (the thread also keeps a plain pointer to it);
 *  - the key is set only when it changes. Sealing compares the key's bytes
 *    with the previous record's. Opening a record (store_keys_unseal) names
 *    the key its context holds by the key store's open generation and the
 *    slot, so a replay of one stream reads no key, copies none and sets none
 *    per record; it only checks that the slot still carries its live
 *    marker, so that a key destroyed by an erasure is refused from the next
 *    record on (slots are never reused: a slot still marked live holds the
 *    same key).
 *    The generation, unique per store_keys_open in the process, tells apart
 *    two stores that share a store id and slot numbers, as a restored backup
 *    and its primary do (their new slots hold different keys);
 *  - opening hands the record's 12-byte nonce to the context as GCM's fixed
 *    field (its first 4 bytes, handed over again only when they differ from
 *    the previous record's: records sealed by one writer thread share them)
 *    and invocation field (the other 8), together with the expected tag, in
 *    one parameter call instead of an init and a ctrl. It is the same nonce
 *    in two parts, and EVP_DecryptFinal_ex checks every record's tag as
 *    before. If the provider refuses the two parts, the thread goes back to
 *    an init with the whole nonce for good.
 */
typedef struct cipher_pair {
    EVP_CIPHER_CTX *enc, *dec;
    bool enc_keyed;
    uint8_t enc_key[STORE_KEY_BYTES];
    uint64_t dec_gen, dec_slot; /* whose key dec holds; dec_gen 0: none known */
    bool dec_fixed_set;         /* dec holds dec_fixed as the nonce's fixed field */
    uint8_t dec_fixed[4];
    bool dec_whole_iv;       /* the provider refused the nonce in two parts */
    uint8_t nonce_prefix[8]; /* random, drawn again when the counter wraps */
    uint32_t nonce_count;
    unsigned nonce_fork; /* fork_generation when the prefix was drawn */
    bool nonce_ready;
} cipher_pair;

/* Bumped in a forked child, so that it never continues its parent's nonces. */
static _Atomic unsigned fork_generation;

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static pthread_key_t ctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static _Thread_local cipher_pair *tl_ctx; /* this thread's, once made */

static void ctx_free(void *p)
{
    cipher_pair *cp = p;
    if (cp) {
        EVP_CIPHER_CTX_free(cp->enc);
        EVP_CIPHER_CTX_free(cp->dec);
        OPENSSL_cleanse(cp, sizeof *cp);
        free(cp);
    }
    tl_ctx = NULL;
}

static void ctx_key_create(void)
{
    (void)pthread_key_create(&ctx_key, ctx_free);
    (void)pthread_atfork(NULL, NULL, on_fork_child);
}

static cipher_pair *cipher_ctx(void)
{
    if (tl_ctx) {
        return tl_ctx;
    }
    pthread_once(&ctx_once, ctx_key_create);
    cipher_pair *cp = calloc(1, sizeof *cp);
    if (!cp) {
        return NULL;
    }
    cp->enc = EVP_CIPHER_CTX_new();
    cp->dec = EVP_CIPHER_CTX_new();
    if (!cp->enc || !cp->dec ||
        EVP_EncryptInit_ex(cp->enc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_DecryptInit_ex(cp->dec, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        pthread_setspecific(ctx_key, cp) != 0) {
        ctx_free(cp);
        return NULL;
    }
    tl_ctx = cp;
    return cp;
}

/* The key argument of the next init: NULL when the context holds it already. */
static const uint8_t *key_for(bool *keyed, uint8_t held[STORE_KEY_BYTES],
                              const uint8_t key[STORE_KEY_BYTES])
{
    if (*keyed && CRYPTO_memcmp(held, key, STORE_KEY_BYTES) == 0) {
        return NULL;
    }
    memcpy(held, key, STORE_KEY_BYTES);
    *keyed = true;
    return key;
}

static void seal_aad(uint8_t aad[STORE_SEAL_HEADER + 24], const uint8_t *hdr, uint64_t position,
                     const uint8_t *id)
{
    memcpy(aad, hdr, STORE_SEAL_HEADER);
    put_u64le(aad + STORE_SEAL_HEADER, position);
    memcpy(aad + STORE_SEAL_HEADER + 8, id, 16);
}

es_err store_seal(const uint8_t key[STORE_KEY_BYTES], uint64_t slot, uint64_t position,
                  const uint8_t *id, uint8_t *out, size_t plain_len)
{
    cipher_pair *cp = cipher_ctx();
    if (!cp || plain_len > INT32_MAX) {
        return ES_ERR_NO_MEMORY;
    }
    EVP_CIPHER_CTX *c = cp->enc;
    out[0] = STORE_SEAL_VERSION;
    put_u64le(out + 1, slot);
    unsigned gen = atomic_load(&fork_generation);
    if (!cp->nonce_ready || cp->nonce_count == UINT32_MAX || cp->nonce_fork != gen) {
        if (RAND_bytes(cp->nonce_prefix, sizeof cp->nonce_prefix) != 1) {
            return ES_ERR_INTERNAL;
        }
        cp->nonce_count = 0;
        cp->nonce_fork = gen;
        cp->nonce_ready = true;
    }
    memcpy(out + 9, cp->nonce_prefix, 8);
    put_u32le(out + 17, cp->nonce_count++);
    uint8_t aad[STORE_SEAL_HEADER + 24];
    seal_aad(aad, out, position, id);
    uint8_t *p = out + STORE_SEAL_HEADER;
    int n = 0, fin = 0;
    const uint8_t *k = key_for(&cp->enc_keyed, cp->enc_key, key);
    if (EVP_EncryptInit_ex(c, NULL, NULL, k, out + 9) != 1 ||
        EVP_EncryptUpdate(c, NULL, &n, aad, (int)sizeof aad) != 1 ||
        EVP_EncryptUpdate(c, p, &n, p, (int)plain_len) != 1 ||
        EVP_EncryptFinal_ex(c, p + n, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, STORE_SEAL_TAG, p + plain_len) != 1) {
        cp->enc_keyed = false;
        return ES_ERR_INTERNAL;
    }
    return ES_OK;
}

bool store_seal_slot(const uint8_t *sealed, size_t len, uint64_t *slot)
{
    if (len < STORE_SEAL_OVERHEAD || sealed[0] != STORE_SEAL_VERSION) {
        return false;
    }
    *slot = get_u64le(sealed + 1);
    return true;
}

/* Hand dec (keyed) a record's nonce and expected tag: see the notes above. */
static bool dec_nonce_tag(cipher_pair *cp, const uint8_t *sealed, size_t clen)
{
    EVP_CIPHER_CTX *c = cp->dec;
    uint8_t nonce[STORE_SEAL_NONCE], tag[STORE_SEAL_TAG];
    memcpy(nonce, sealed + 9, sizeof nonce);
    memcpy(tag, sealed + STORE_SEAL_HEADER + clen, sizeof tag);
    if (!cp->dec_whole_iv) {
        if (!cp->dec_fixed_set || memcmp(cp->dec_fixed, nonce, 4) != 0) {
            OSSL_PARAM f[2] = {
                OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED, nonce, 4),
                OSSL_PARAM_construct_end()};
            cp->dec_fixed_set = EVP_CIPHER_CTX_set_params(c, f) == 1;
            memcpy(cp->dec_fixed, nonce, 4);
        }
        OSSL_PARAM p[3] = {
            OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TLS1_SET_IV_INV, nonce + 4,
                                              STORE_SEAL_NONCE - 4),
            OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, sizeof tag),
            OSSL_PARAM_construct_end()};
        if (cp->dec_fixed_set && EVP_CIPHER_CTX_set_params(c, p) == 1) {
            return true;
        }
        cp->dec_whole_iv = true;
        cp->dec_fixed_set = false;
    }
    return EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) == 1 &&
           EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, STORE_SEAL_TAG, tag) == 1;
}

/* Open a sealed field (its length checked) with the key dec holds. */
static es_err unseal_keyed(cipher_pair *cp, const uint8_t *sealed, size_t len, uint64_t position,
                           const uint8_t *id, uint8_t *out)
{
    EVP_CIPHER_CTX *c = cp->dec;
    size_t clen = len - STORE_SEAL_OVERHEAD;
    uint8_t aad[STORE_SEAL_HEADER + 24];
    seal_aad(aad, sealed, position, id);
    int n = 0, fin = 0;
    if (!dec_nonce_tag(cp, sealed, clen) ||
        EVP_DecryptUpdate(c, NULL, &n, aad, (int)sizeof aad) != 1 ||
        EVP_DecryptUpdate(c, out, &n, sealed + STORE_SEAL_HEADER, (int)clen) != 1 ||
        EVP_DecryptFinal_ex(c, out + n, &fin) != 1) {
        return ES_ERR_CORRUPT; /* the context stays keyed: a failed tag check changes no key */
    }
    return ES_OK;
}

static bool sealed_len_ok(const uint8_t *sealed, size_t len)
{
    return len >= STORE_SEAL_OVERHEAD && sealed[0] == STORE_SEAL_VERSION &&
           len - STORE_SEAL_OVERHEAD <= INT32_MAX;
}

es_err store_unseal(const uint8_t key[STORE_KEY_BYTES], const uint8_t *sealed, size_t len,
                    uint64_t position, const uint8_t *id, uint8_t *out)
{
    cipher_pair *cp = cipher_ctx();
    if (!cp) {
        return ES_ERR_NO_MEMORY;
    }
    if (!sealed_len_ok(sealed, len)) {
        return ES_ERR_CORRUPT;
    }
    /* A key given by its bytes: set it, and forget whose key dec held. */
    cp->dec_gen = 0;
    cp->dec_fixed_set = false;
    if (EVP_DecryptInit_ex(cp->dec, NULL, NULL, key, NULL) != 1) {
        return ES_ERR_INTERNAL;
    }
    return unseal_keyed(cp, sealed, len, position, id, out);
}

es_err store_keys_unseal(const store_keys *k, const uint8_t *sealed, size_t len, uint64_t position,
                         const uint8_t *id, uint8_t *out)
{
    cipher_pair *cp = cipher_ctx();
    if (!cp) {
        return ES_ERR_NO_MEMORY;
    }
    if (!sealed_len_ok(sealed, len)) {
        return ES_ERR_CORRUPT;
    }
    uint64_t slot = get_u64le(sealed + 1);
    if (cp->dec_gen == 0 || cp->dec_gen != k->gen || cp->dec_slot != slot ||
        !store_keys_marked_live(k, slot)) {
        uint8_t key[STORE_KEY_BYTES];
        if (!store_keys_get(k, slot, key)) {
            return store_keys_missing(k, slot);
        }
        cp->dec_gen = 0;
        cp->dec_fixed_set = false;
        int ok = EVP_DecryptInit_ex(cp->dec, NULL, NULL, key, NULL);
        OPENSSL_cleanse(key, sizeof key);
        if (ok != 1) {
            return ES_ERR_INTERNAL;
        }
        cp->dec_gen = k->gen;
        cp->dec_slot = slot;
    }
    return unseal_keyed(cp, sealed, len, position, id, out);
}
