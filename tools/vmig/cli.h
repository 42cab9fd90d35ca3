/* Shared pieces of the vmig command-line tool. Uses only the public API. */
#ifndef VMIG_CLI_H
#define VMIG_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <vmig/vmig.h>

/* Exit codes, documented in `vmig --help`. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILED = 1,   /* the migration failed (the reason is printed) */
    CLI_EXIT_USAGE = 2,    /* bad command line */
    CLI_EXIT_VERIFY = 3,   /* the destination's memory did not match */
    CLI_EXIT_CANCELED = 4, /* interrupted (SIGINT/SIGTERM) */
};

typedef struct cli_opts {
    vmig_params params;
    bool json;
    int progress; /* -1 auto (stderr is a terminal), 0 off, 1 on */
    bool quiet;
} cli_opts;

/*
 * Parse the options every command shares. Returns 1 when argv[*i] was one
 * of them (advancing *i past its value), 0 when it is not, and -1 after
 * printing a usage error.
 */
int cli_common_opt(cli_opts *o, int argc, char **argv, int *i);
/* The help paragraph for the shared options and the parameter table. */
void cli_print_common_help(FILE *f);

/* Format bytes as "1.50 GiB". */
const char *cli_fmt_bytes(uint64_t v, char *buf, size_t len);

/*
 * Run fn(s, arg, err) on a worker thread while this thread draws progress
 * and turns SIGINT/SIGTERM into vmig_cancel(). Returns fn's result.
 */
typedef int (*cli_run_fn)(vmig_session *s, void *arg, vmig_error *err);
int cli_run(vmig_session *s, cli_run_fn fn, void *arg, const cli_opts *o, const char *label,
            vmig_error *err);

/* Process CPU time (user + system), seconds. */
double cli_process_cpu(void);

/* The summary: a table on stdout, or one JSON object with --json.
 * `extra_json` (may be NULL) is appended inside the object. */
void cli_print_summary(const char *role, int rc, const vmig_error *err, const vmig_stats *st,
                       double process_cpu, const cli_opts *o, const char *extra_json);

/* Map a result to an exit code. */
int cli_exit_code(int rc);

int cmd_send(int argc, char **argv);
int cmd_recv(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif /* VMIG_CLI_H */
