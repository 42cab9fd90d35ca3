/* vmig send: migrate a memory image file. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void send_help(FILE *f)
{
    fprintf(f, "Usage: vmig send [OPTIONS] IMAGE URI\n\n"
               "Send the memory image IMAGE (for example the memory-backend file of a stopped\n"
               "VM) to a 'vmig recv' listening on URI. The file is mapped, not read: its pages\n"
               "go from the mapping to the sockets. Its size must be a multiple of the page\n"
               "size. Success is reported only after the destination has checked the digest.\n\n"
               "Options:\n"
               "      --name NAME         name of the RAM block (default 'ram')\n"
               "      --page-size N       page size in bytes (default 4096)\n");
    cli_print_common_help(f);
}

static int run_migrate(vmig_session *s, void *arg, vmig_error *err)
{
    return vmig_migrate(s, arg, err);
}

int cmd_send(int argc, char **argv)
{
    cli_opts o = {.progress = -1};
    vmig_params_init(&o.params);
    const char *name = "ram", *pos[2];
    uint64_t page_size = 4096;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_opt(&o, argc, argv, &i);
        if (r < 0)
            return CLI_EXIT_USAGE;
        if (r)
            continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            send_help(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--name") && i + 1 < argc) {
            name = argv[++i];
        } else if (!strcmp(argv[i], "--page-size") && i + 1 < argc) {
            if (vmig_parse_size(argv[++i], &page_size) || page_size > UINT32_MAX) {
                fprintf(stderr, "vmig send: bad page size '%s'\n", argv[i]);
                return CLI_EXIT_USAGE;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "vmig send: unknown option '%s' (see 'vmig send --help')\n", argv[i]);
            return CLI_EXIT_USAGE;
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            fprintf(stderr, "vmig send: too many arguments\n");
            return CLI_EXIT_USAGE;
        }
    }
    if (npos != 2) {
        send_help(stderr);
        return CLI_EXIT_USAGE;
    }
    int fd = open(pos[0], O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        fprintf(stderr, "vmig send: %s: %s\n", pos[0], strerror(errno));
        return CLI_EXIT_FAILED;
    }
    if (sb.st_size <= 0 || (uint64_t)sb.st_size % page_size) {
        fprintf(stderr,
                "vmig send: %s: size %lld is not a positive multiple of the page size %llu\n",
                pos[0], (long long)sb.st_size, (unsigned long long)page_size);
        close(fd);
        return CLI_EXIT_FAILED;
    }
    void *mem = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (mem == MAP_FAILED) {
        fprintf(stderr, "vmig send: mmap %s: %s\n", pos[0], strerror(errno));
        return CLI_EXIT_FAILED;
    }
    vmig_session *s = NULL;
    vmig_error err = {0};
    int rc = vmig_session_create(&s, VMIG_ROLE_SOURCE, &o.params, &err);
    if (!rc)
        rc = vmig_ram_add(s, name, mem, (uint64_t)sb.st_size, (uint32_t)page_size, 0, &err);
    if (rc) {
        fprintf(stderr, "vmig send: %s\n", err.msg);
        vmig_session_free(s);
        munmap(mem, (size_t)sb.st_size);
        return CLI_EXIT_FAILED;
    }
    double cpu0 = cli_process_cpu();
    rc = cli_run(s, run_migrate, (void *)pos[1], &o, "send", &err);
    vmig_stats st;
    vmig_stats_get(s, &st);
    if (rc)
        fprintf(stderr, "vmig send: %s\n", err.msg);
    cli_print_summary("sender", rc, &err, &st, cli_process_cpu() - cpu0, &o, NULL);
    vmig_session_free(s);
    munmap(mem, (size_t)sb.st_size);
    return cli_exit_code(rc);
}
