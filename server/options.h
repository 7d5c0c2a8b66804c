/*
 * options — esd's configuration: defaults, the configuration file, ESD_*
 * environment variables and the command line; validation; --help and
 * --print-config. Kept out of main.c so that main stays thin and the rules
 * are testable.
 *
 * Design notes
 * ------------
 * One table (options.c) lists every option once: its name, type, bounds
 * and help. The name is at the same time the long flag (`--max-page`), the
 * key in the configuration file (`max-page`, or `max_page`) and, upper-cased
 * with `-` turned into `_` behind `ESD_`, the environment variable
 * (`ESD_MAX_PAGE`). So every option exists in all three places by
 * construction.
 *
 * Precedence, highest first: command-line flag > ESD_* environment
 * variable > configuration file > built-in default. Layers are applied from
 * the lowest up, each overriding what is below it, and each option records
 * where its value came from (printed by --print-config, named in errors).
 *
 * The configuration file (--config FILE, or $ESD_CONFIG) has `key = value`
 * lines read with libinih (Debian's libinih-dev): comment lines start with
 * `#` or `;`; there are no inline comments (a value is everything after the
 * `=`, trimmed, so paths may contain `;` and `#`), no sections, no
 * continuation lines. An unknown key, a section or a malformed line is an
 * error with its line number: a typo must not silently leave a default in
 * place. Boolean values are true/false, yes/no, on/off or 1/0; on the
 * command line a boolean flag alone means true and `--flag=false` turns it
 * off. An empty environment variable counts as unset.
 *
 * Not configuration: --help, --version, --print-config and --config itself
 * (which only the command line and $ESD_CONFIG can name).
 */
#ifndef ES_OPTIONS_H
#define ES_OPTIONS_H

#include <stdio.h>

#include "config.h"
#include "es/err.h"

/** Where an option's value came from, lowest precedence first. */
typedef enum opt_origin {
    OPT_FROM_DEFAULT = 0,
    OPT_FROM_FILE,
    OPT_FROM_ENV,
    OPT_FROM_FLAG,
} opt_origin;

#define OPTIONS_MAX 64

typedef struct esd_options {
    server_config cfg;
    const char *port_file;       /* write the bound port here (tests, supervisors) */
    const char *config_file;     /* the file read, or NULL */
    int help;                    /* --help was given */
    int version;                 /* --version was given */
    int print_config;            /* --print-config was given */
    uint8_t origin[OPTIONS_MAX]; /* per table entry: an opt_origin */
    uint32_t line[OPTIONS_MAX];  /* per table entry: its line in the file */
    char *owned[OPTIONS_MAX];    /* strings copied from the file (freed by options_finish) */
    char unknown_env[256];       /* ESD_* variables that name no option (for a warning) */
} esd_options;

/**
 * @brief Build the configuration from defaults, the file, the environment
 *        and argv, in that order of increasing precedence, and check it.
 * @param[out] opts filled in; release with options_finish() in every case
 * @param[out] msg why it was refused: the option, where its value came
 *   from (flag, variable or FILE:LINE) and what is wrong
 * @return ES_OK (also for --help, --version and --print-config: see the
 *   flags); ES_ERR_INVALID_ARGUMENT; ES_ERR_IO (the configuration file
 *   cannot be read); ES_ERR_NO_MEMORY.
 */
es_err options_parse(int argc, char **argv, esd_options *opts, char *msg, size_t msg_len);

/** The smallest --max-memory accepted (0 means the default). */
#define OPTIONS_MIN_MAX_MEMORY (16ull << 20)

/** @brief The default --max-memory: a quarter of the RAM, at least 64 MiB. */
uint64_t options_default_max_memory(void);

/** @brief Free what options_parse copied. The configuration's strings die
 *  with it. Accepts a zeroed struct. */
void options_finish(esd_options *opts);

/** @brief Print the usage text. */
void options_usage(FILE *out);

/**
 * @brief Print the effective configuration in the configuration file's
 *        syntax (so the output can be used as a file), each non-default
 *        value preceded by a comment naming its origin. Values of options
 *        marked secret are printed as `<redacted>`.
 */
void options_print(FILE *out, const esd_options *opts);

/**
 * @brief Parse a size with an optional K, M, G or T suffix (powers of 1024).
 * @return true on success.
 */
bool options_parse_size(const char *s, uint64_t *out);

/** One entry of the option table, for tests and documentation. */
typedef struct options_info {
    const char *name;   /* flag without "--", file key */
    const char *env;    /* the environment variable */
    const char *arg;    /* placeholder in the help, NULL for a boolean */
    const char *sample; /* a valid non-default value */
} options_info;

/** @brief The option table: *n entries. */
const options_info *options_table(size_t *n);

/**
 * @brief The current value of an option, as --print-config shows it.
 * @return false when no option has that name.
 */
bool options_value(const esd_options *opts, const char *name, char *buf, size_t len);

#endif
