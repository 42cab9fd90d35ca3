/*
 * A COLO secondary refuses every malformed or out-of-order checkpoint
 * message from a hand-made primary with the exact error, never takes over
 * for it, writes nothing into or around its RAM (guard pages on both sides
 * of the block), and leaves no thread behind.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "src/transport/transport.h"
#include "src/wire/wire.h"

#include "../testutil.h"
#include "../tu_fakesrc.h"

#define PAGES 64
#define PG    4096

static char dir[] = "/tmp/vmig-coloreject-XXXXXX";
static const uint8_t uuid[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6};

typedef struct secondary {
    vmig_session *s;
    uint8_t *area, *mem; /* guard page, PAGES pages, guard page */
    char uri[256];
    pthread_t t;
    int rc;
    vmig_error err;
} secondary;

static void *sec_main(void *p)
{
    secondary *d = p;
    d->rc = vmig_colo_secondary(d->s, &d->err);
    return NULL;
}

static void sec_start(secondary *d, int n)
{
    memset(d, 0, sizeof(*d));
    d->area =
        mmap(NULL, (PAGES + 2) * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(d->area != MAP_FAILED, "mmap");
    mprotect(d->area, PG, PROT_NONE);
    mprotect(d->area + (PAGES + 1) * PG, PG, PROT_NONE);
    d->mem = d->area + PG;
    vmig_params p;
    vmig_params_init(&p);
    p.heartbeat_timeout_ms = 300;
    p.connect_timeout_ms = 1000;
    vmig_error e = {0};
    REQUIRE(vmig_session_create(&d->s, VMIG_ROLE_DEST, &p, &e) == 0, "%s", e.msg);
    REQUIRE(vmig_ram_add(d->s, "ram", d->mem, PAGES * PG, PG, VMIG_RAM_ZEROED, &e) == 0, "%s",
            e.msg);
    snprintf(d->uri, sizeof(d->uri), "unix:%s/sec-%d.sock", dir, n);
    REQUIRE(vmig_incoming_listen(d->s, d->uri, &e) == 0, "%s", e.msg);
    pthread_create(&d->t, NULL, sec_main, d);
}

/* Join the secondary, check its verdict and that its RAM is untouched. */
static void sec_end(secondary *d, const char *what, int want_rc, const char *want_msg)
{
    pthread_join(d->t, NULL);
    printf("%-34s %s (%s)\n", what, d->err.msg, vmig_strerror(d->rc));
    CHECK(d->rc == want_rc, "%s: rc %d (%s), expected %d (%s): %s", what, d->rc,
          vmig_strerror(d->rc), want_rc, vmig_strerror(want_rc), d->err.msg);
    CHECK(strstr(d->err.msg, want_msg), "%s: the message lacks '%s': %s", what, want_msg,
          d->err.msg);
    for (uint32_t i = 0; i < PAGES * PG; i++)
        if (d->mem[i]) {
            CHECK(0, "%s: RAM byte %u changed", what, i);
            break;
        }
    vmig_session_free(d->s);
    munmap(d->area, (PAGES + 2) * PG);
}

static void hello(vmig_conn *c, uint32_t features)
{
    vmig_wire_block b = {.length = PAGES * PG, .page_size = PG};
    snprintf(b.name, sizeof(b.name), "ram");
    vmig_wire_hello h = {.packet_pages = 128,
                         .channels = 1,
                         .zero_detect = 2,
                         .verify = 1,
                         .features = features,
                         .nblocks = 1,
                         .blocks = &b};
    uint8_t buf[1024];
    int n = vmig_wire_hello_encode(&h, buf, sizeof(buf));
    tf_ctl(c, VMIG_CTL_HELLO, buf, n);
}

/* Control with a COLO HELLO, READY, one data channel. */
static vmig_conn *setup(secondary *d, vmig_conn **data)
{
    vmig_conn *ctl = tf_connect(d->uri, VMIG_CH_CONTROL, 0, 1, uuid);
    hello(ctl, VMIG_HELLO_F_COLO);
    unsigned t = tf_read_frame(ctl);
    REQUIRE(t == VMIG_CTL_READY, "expected READY, got %u", t);
    *data = tf_connect(d->uri, VMIG_CH_DATA, 0, 1, uuid);
    return ctl;
}

static void sync_pass(vmig_conn *data, uint64_t seq, uint32_t pass)
{
    vmig_pkt_hdr h = {.type = VMIG_PKT_SYNC, .seq = seq, .pass = pass};
    uint8_t buf[VMIG_PKT_HDR_LEN];
    size_t n = vmig_wire_pkt_encode(&h, NULL, buf);
    vmig_conn_write_all(data, buf, n, "SYNC", NULL);
}

static void ckpt(vmig_conn *ctl, uint64_t id, uint32_t pass, uint32_t nblocks, uint64_t packets,
                 uint8_t digest_byte)
{
    uint8_t dg[2][16];
    memset(dg, digest_byte, sizeof(dg));
    vmig_wire_ckpt c = {.id = id,
                        .pass = pass ? pass : 1,
                        .end = {.nblocks = nblocks, .digests = dg, .packets = packets}};
    uint8_t buf[128];
    int n = vmig_wire_ckpt_encode(&c, buf, sizeof(buf));
    REQUIRE(n > 0, "CKPT encode");
    if (!pass)
        vmig_put_be32(buf + 8, 0); /* the encoder refuses pass 0: the wire does not */
    tf_ctl(ctl, VMIG_CTL_CKPT, buf, n);
}

/* Threads of this process, once those just joined have left /proc/self/task
 * (a joined thread can linger there for a moment): the least of 0.5 s. */
static int settled_threads(void)
{
    int n = tu_count_threads();
    for (int i = 0; i < 50; i++) {
        usleep(10000);
        int m = tu_count_threads();
        n = m < n ? m : n;
    }
    return n;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    REQUIRE(mkdtemp(dir), "mkdtemp");
    int threads0 = -1;
    secondary d;
    vmig_conn *ctl, *data;
    int n = 0;

    /* HELLO: device state on the control path is not for checkpoints */
    sec_start(&d, n++);
    ctl = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 1, uuid);
    hello(ctl, VMIG_HELLO_F_COLO | VMIG_HELLO_F_DEVSTATE);
    tf_read_frame(ctl);
    sec_end(&d, "HELLO with COLO and DEVSTATE", VMIG_EPROTO, "over the data channels");
    vmig_conn_close(ctl);
    /* counted after a first case: a sanitizer's own thread starts with the first thread */
    threads0 = settled_threads();

    /* a plain HELLO to a secondary */
    sec_start(&d, n++);
    ctl = tf_connect(d.uri, VMIG_CH_CONTROL, 0, 1, uuid);
    hello(ctl, 0);
    tf_read_frame(ctl);
    sec_end(&d, "plain HELLO", VMIG_EPROTO, "waits for continuous checkpoints");
    vmig_conn_close(ctl);

    static const struct {
        const char *what;
        uint64_t id;
        uint32_t pass, nblocks;
        uint64_t packets;
        uint8_t digest;
        bool sync;
        int rc;
        const char *msg;
    } bad_ckpt[] = {
        {"CKPT 1 first", 1, 1, 1, 0, 0, true, VMIG_EPROTO, "expected checkpoint 0"},
        {"CKPT of pass 0", 0, 0, 1, 0, 0, true, VMIG_EPROTO, "pass 0"},
        {"CKPT with 2 blocks", 0, 1, 2, 0, 0, true, VMIG_EPROTO, "differs from HELLO's 1"},
        {"CKPT with a wrong packet count", 0, 1, 1, 3, 0, true, VMIG_EVERIFY,
         "source sent 3 packets"},
        {"CKPT with a wrong digest", 0, 1, 1, 0, 0xA5, true, VMIG_EVERIFY,
         "digest of the received memory does not match"},
        {"CKPT of a pass never finished", 0, 2, 1, 0, 0, true, VMIG_EPROTO,
         "did not finish its pass 2"},
    };
    for (size_t i = 0; i < sizeof(bad_ckpt) / sizeof(bad_ckpt[0]); i++) {
        sec_start(&d, n++);
        ctl = setup(&d, &data);
        if (bad_ckpt[i].sync)
            sync_pass(data, 1, 1);
        ckpt(ctl, bad_ckpt[i].id, bad_ckpt[i].pass, bad_ckpt[i].nblocks, bad_ckpt[i].packets,
             bad_ckpt[i].digest);
        sec_end(&d, bad_ckpt[i].what, bad_ckpt[i].rc, bad_ckpt[i].msg);
        vmig_conn_close(data);
        vmig_conn_close(ctl);
    }

    /* frames a primary never sends, and a malformed HEARTBEAT */
    sec_start(&d, n++);
    ctl = setup(&d, &data);
    uint8_t ack[VMIG_ACK_LEN];
    vmig_wire_ack_encode(0, ack);
    tf_ctl(ctl, VMIG_CTL_ACK, ack, sizeof(ack));
    sec_end(&d, "ACK from the primary", VMIG_EPROTO, "expected a CKPT frame, got ACK");
    vmig_conn_close(data);
    vmig_conn_close(ctl);

    sec_start(&d, n++);
    ctl = setup(&d, &data);
    tf_ctl(ctl, VMIG_CTL_HEARTBEAT, ack, 1);
    sec_end(&d, "HEARTBEAT with a payload", VMIG_EPROTO, "must be 0");
    vmig_conn_close(data);
    vmig_conn_close(ctl);

    /* the primary ends the protection before checkpoint 0 */
    sec_start(&d, n++);
    ctl = setup(&d, &data);
    uint8_t st[64];
    int sl = vmig_wire_status_encode(VMIG_ECANCELED, "canceled by the operator", st, sizeof(st));
    tf_ctl(ctl, VMIG_CTL_ERROR, st, sl);
    sec_end(&d, "ERROR before checkpoint 0", VMIG_ECANCELED, "ended the protection");
    vmig_conn_close(data);
    vmig_conn_close(ctl);

    /* a primary that falls silent before checkpoint 0: nothing to take over */
    sec_start(&d, n++);
    ctl = setup(&d, &data);
    uint64_t t0 = tu_now_ns();
    sec_end(&d, "silent primary", VMIG_ETIMEDOUT, "nothing to take over");
    uint64_t ms = (tu_now_ns() - t0) / 1000000;
    CHECK(ms >= 250 && ms < 3000, "silent primary given up after %llu ms (heartbeat 300 ms)",
          (unsigned long long)ms);
    vmig_conn_close(data);
    vmig_conn_close(ctl);

    /* a primary that closes before checkpoint 0 */
    sec_start(&d, n++);
    ctl = setup(&d, &data);
    vmig_conn_close(data);
    vmig_conn_close(ctl);
    sec_end(&d, "primary closed before checkpoint 0", VMIG_ECONN, "nothing to take over");

    int threads1 = settled_threads();
    CHECK(threads1 == threads0, "%d threads before, %d after", threads0, threads1);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return tu_result("test_e2e_colo_reject");
}
