/* vmig recv: receive a migration into a file mapping. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void recv_help(FILE *f)
{
    fprintf(f, "Usage: vmig recv [OPTIONS] URI OUTPUT\n\n"
               "Listen on URI, receive one migration and write it into OUTPUT, which is\n"
               "created or resized to the source's size and mapped MAP_SHARED: pages are read\n"
               "from the sockets straight into the mapping, as into a VM's file-backed RAM.\n"
               "Several blocks are laid out back to back in the source's order. A new (or\n"
               "empty) file is known to read as zero, so zero pages are never touched in it;\n"
               "an existing file is reused in place and a zero page is cleared only where it\n"
               "is not zero already. If the migration fails, a file created here is removed;\n"
               "a reused file keeps a partial image (a warning says so).\n\n"
               "Options:\n"
               "      --uri-file PATH     once listening, write the URI actually bound (with\n"
               "                          the real port when URI asks for port 0) to PATH\n");
    cli_print_common_help(f);
}

typedef struct recv_out {
    const char *path;
    int fd;
    bool created; /* we created the file (or it was empty): it reads as zero */
    uint64_t size;
    struct {
        void *mem;
        uint64_t len;
    } maps[64];
    unsigned nmaps;
    char why[600];
} recv_out;

/* The source announced a block: append it to OUTPUT and map it. */
static int on_block(void *opaque, vmig_session *s, const char *name, uint64_t length,
                    uint32_t page_size)
{
    recv_out *r = opaque;
    if (r->nmaps == sizeof(r->maps) / sizeof(r->maps[0])) {
        snprintf(r->why, sizeof(r->why), "more than %u blocks", r->nmaps);
        return VMIG_EINVAL;
    }
    uint64_t off = r->size;
    if (off % page_size) {
        snprintf(r->why, sizeof(r->why), "block '%s' would start at an unaligned offset", name);
        return VMIG_EINVAL;
    }
    struct stat sb;
    if (fstat(r->fd, &sb) < 0 ||
        ((uint64_t)sb.st_size < off + length && ftruncate(r->fd, (off_t)(off + length)) < 0)) {
        snprintf(r->why, sizeof(r->why), "%s: cannot grow to %llu bytes: %s", r->path,
                 (unsigned long long)(off + length), strerror(errno));
        return VMIG_EIO;
    }
    void *mem = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, (off_t)off);
    if (mem == MAP_FAILED) {
        snprintf(r->why, sizeof(r->why), "%s: mmap: %s", r->path, strerror(errno));
        return VMIG_ENOMEM;
    }
    r->maps[r->nmaps].mem = mem;
    r->maps[r->nmaps].len = length;
    r->nmaps++;
    r->size = off + length;
    vmig_error err = {0};
    int rc = vmig_ram_add(s, name, mem, length, page_size, r->created ? VMIG_RAM_ZEROED : 0, &err);
    if (rc)
        snprintf(r->why, sizeof(r->why), "%s", err.msg);
    return rc;
}

static int run_incoming(vmig_session *s, void *arg, vmig_error *err)
{
    (void)arg;
    return vmig_incoming_run(s, err);
}

int cmd_recv(int argc, char **argv)
{
    cli_opts o = {.progress = -1};
    vmig_params_init(&o.params);
    const char *pos[2], *uri_file = NULL;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_common_opt(&o, argc, argv, &i);
        if (r < 0)
            return CLI_EXIT_USAGE;
        if (r)
            continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            recv_help(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--uri-file") && i + 1 < argc) {
            uri_file = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "vmig recv: unknown option '%s' (see 'vmig recv --help')\n", argv[i]);
            return CLI_EXIT_USAGE;
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            fprintf(stderr, "vmig recv: too many arguments\n");
            return CLI_EXIT_USAGE;
        }
    }
    if (npos != 2) {
        recv_help(stderr);
        return CLI_EXIT_USAGE;
    }
    recv_out out = {.path = pos[1]};
    struct stat sb;
    bool existed = stat(out.path, &sb) == 0;
    out.fd = open(out.path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (out.fd < 0 || fstat(out.fd, &sb) < 0) {
        fprintf(stderr, "vmig recv: %s: %s\n", out.path, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    out.created = sb.st_size == 0;

    vmig_session *s = NULL;
    vmig_error err = {0};
    int rc = vmig_session_create(&s, VMIG_ROLE_DEST, &o.params, &err);
    if (!rc)
        rc = vmig_incoming_set_block_cb(s, on_block, &out);
    if (!rc)
        rc = vmig_incoming_listen(s, pos[0], &err);
    if (rc) {
        fprintf(stderr, "vmig recv: %s\n", err.msg);
        goto done;
    }
    char uri[256];
    vmig_incoming_uri(s, uri, sizeof(uri));
    if (!o.quiet)
        fprintf(stderr, "vmig recv: listening on %s\n", uri);
    if (uri_file) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", uri_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", uri) < 0 || fclose(f) || rename(tmp, uri_file)) {
            fprintf(stderr, "vmig recv: cannot write %s: %s\n", uri_file, strerror(errno));
            rc = VMIG_EIO;
            goto done;
        }
    }
    double cpu0 = cli_process_cpu();
    rc = cli_run(s, run_incoming, NULL, &o, "recv", &err);
    vmig_stats st;
    vmig_stats_get(s, &st);
    if (rc) {
        fprintf(stderr, "vmig recv: %s\n", err.msg);
        if (out.why[0])
            fprintf(stderr, "vmig recv: %s\n", out.why);
    }
    cli_print_summary("receiver", rc, &err, &st, cli_process_cpu() - cpu0, &o, NULL);
done:
    vmig_session_free(s);
    for (unsigned i = 0; i < out.nmaps; i++)
        munmap(out.maps[i].mem, out.maps[i].len);
    if (rc && !existed) {
        unlink(out.path);
    } else if (rc && out.nmaps) {
        fprintf(stderr,
                "vmig recv: warning: %s was reused in place and now holds a partial "
                "image\n",
                out.path);
    }
    /* "Resized to the source's size": a longer existing file keeps no stale tail. */
    if (!rc && fstat(out.fd, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > out.size &&
        ftruncate(out.fd, (off_t)out.size) < 0) {
        fprintf(stderr, "vmig recv: %s: cannot shrink to %llu bytes: %s\n", out.path,
                (unsigned long long)out.size, strerror(errno));
        rc = VMIG_EIO;
    }
    if (!rc && fsync(out.fd) < 0 && errno != EINVAL) {
        fprintf(stderr, "vmig recv: fsync %s: %s\n", out.path, strerror(errno));
        rc = VMIG_EIO;
    }
    close(out.fd);
    if (uri_file)
        unlink(uri_file);
    return cli_exit_code(rc);
}
