/* vmig: command-line front end of libvmig. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "vmig %d.%d - live migration of memory images over parallel channels\n\n"
            "Usage:\n"
            "  vmig send  [OPTIONS] IMAGE URI    send the memory image file IMAGE to URI\n"
            "  vmig recv  [OPTIONS] URI OUTPUT   receive a migration on URI into OUTPUT\n"
            "  vmig bench [OPTIONS]              migrate a generated image between two\n"
            "                                    processes over loopback and report figures;\n"
            "                                    --live: while writer threads dirty it\n"
            "  vmig help COMMAND                 the options of one command\n\n"
            "URIs:\n"
            "  tcp:HOST:PORT   IPv4 address, [IPv6] address or host name; recv accepts an\n"
            "                  empty HOST (all addresses) and port 0 (any free port)\n"
            "  unix:PATH       a unix stream socket\n\n"
            "A migration uses one control connection and N data connections (channels), each\n"
            "served by its own thread on both sides. Zero pages are detected by the channel\n"
            "threads and travel as offsets only; other pages go straight from the source's\n"
            "memory to the socket and from the socket into the destination's memory. At the\n"
            "end the destination checks a digest of every block against the source's and\n"
            "confirms; only then does the source report success.\n\n"
            "Live migration (a source that keeps changing: the library's VM hooks, or\n"
            "'vmig bench --live'): pass 1 sends every page, later passes the pages written\n"
            "since, until the rest fits downtime-limit; then the VM stops, the rest and the\n"
            "device state go, and the destination runs only once the source commits. A VM\n"
            "that dirties faster than the link is throttled; any failure before the commit\n"
            "resumes the source VM with its memory intact. With --resume on, a data channel\n"
            "whose connection breaks reconnects and re-sends only the packets the\n"
            "destination had not acknowledged (docs/faults.md).\n\n"
            "Example, on one machine:\n"
            "  vmig recv tcp:127.0.0.1:4444 /dev/shm/copy.img &\n"
            "  vmig send -c 4 vm-memory.img tcp:127.0.0.1:4444\n\n"
            "The same over TLS 1.3, each side authenticating the other by certificate\n"
            "(scripts/tls-certs.sh DIR makes a test CA and both certificates;\n"
            "docs/tls.md):\n"
            "  vmig recv --tls x509 --tls-creds DIR tcp:127.0.0.1:4444 /dev/shm/copy.img &\n"
            "  vmig send --tls x509 --tls-creds DIR vm-memory.img tcp:127.0.0.1:4444\n\n",
            VMIG_VERSION_MAJOR, VMIG_VERSION_MINOR);
    cli_print_common_help(f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("vmig %d.%d\n", VMIG_VERSION_MAJOR, VMIG_VERSION_MINOR);
        return 0;
    }
    char help_flag[] = "--help";
    char *help_argv[] = {argv[0], NULL, help_flag, NULL};
    if (!strcmp(cmd, "help")) {
        if (argc < 3) {
            usage(stdout);
            return 0;
        }
        /* "vmig help send" is "vmig send --help". */
        cmd = help_argv[1] = argv[2];
        argc = 3;
        argv = help_argv;
    }
    if (!strcmp(cmd, "send"))
        return cmd_send(argc - 1, argv + 1);
    if (!strcmp(cmd, "recv"))
        return cmd_recv(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "vmig: unknown command '%s' (try 'vmig --help')\n", cmd);
    return CLI_EXIT_USAGE;
}
