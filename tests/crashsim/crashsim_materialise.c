/*
 * crashsim-materialise — the crash simulator's materialiser on the command
 * line, for looking at one crash state by hand:
 *
 *   crashsim-materialise LOG                            number of records
 *   crashsim-materialise LOG CUT ext4|posix SEED DIR    write the state at CUT into DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "materialise.h"

int main(int argc, char **argv)
{
    char err[512];
    cs_log log;
    if (argc != 2 && argc != 6) {
        fprintf(stderr, "usage: %s LOG [CUT ext4|posix SEED DIR]\n", argv[0]);
        return 2;
    }
    if (cs_log_load(&log, argv[1], err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (argc == 2) {
        printf("%zu records\n", log.n);
        cs_log_free(&log);
        return 0;
    }
    cs_rules rules = !strcmp(argv[3], "posix") ? CS_RULES_POSIX : CS_RULES_EXT4;
    cs_state_stats st;
    int rc = cs_materialise(&log, strtoull(argv[2], NULL, 10), rules, strtoull(argv[4], NULL, 10),
                            argv[5], &st, err, sizeof err);
    cs_log_free(&log);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("kept %llu of %llu pending page writes, %llu of %llu entry operations\n",
           (unsigned long long)st.kept_pages, (unsigned long long)st.pending_pages,
           (unsigned long long)st.kept_ops, (unsigned long long)st.pending_ops);
    return 0;
}
