/*
 * Device state end to end (vmig_device_register): devices whose state is
 * tens of MiB migrate over the data channels and over the control channel,
 * each device's bytes reach load_chunk in order on its own thread (the
 * destination checks every byte at its offset), out-of-order chunks stay
 * within devstate-buffer, save_iterate's chunks come first, a load that
 * fails fails the migration and the source resumes, registration refuses
 * duplicates, and a hand-made source sends chunks reversed across
 * channels, oversized, truncated, corrupted, repeated or missing: each is
 * reassembled or refused with the right error, and the same destination
 * session migrates again afterwards.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "src/transport/transport.h"
#include "src/wire/wire.h"

#include "../testutil.h"
#include "../tu_fakesrc.h"
#include "../tu_migrate.h"

#define RAM_BYTES (8u << 20)

/* ---- a test device: `size` bytes, byte i a function of (seed, i) ---- */

static uint8_t pat(uint64_t seed, uint64_t i)
{
    uint64_t x = (seed + (i >> 3)) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return (uint8_t)(x >> (8 * (i & 7)));
}

typedef struct tdev {
    uint64_t size, seed;
    /* source */
    uint64_t iter_bytes; /* save_iterate writes this much each time... */
    unsigned iter_left;  /* ...this many times */
    uint64_t written;
    uint8_t *ref; /* the whole state, when save_final mixes copies and references */
    /* destination */
    uint64_t got;     /* bytes loaded, each checked at its offset */
    uint64_t fail_at; /* load_chunk fails when it reaches this offset (0: never) */
    int bad;          /* a byte differed */
    int done;         /* load_done calls */
    pthread_t load_thread;
    int threads; /* distinct load threads seen (1 expected) */
} tdev;

static int write_range(tdev *d, vmig_devstate_out *out, uint64_t n)
{
    /* Irregular write sizes, so that chunks cut across writes. */
    static uint8_t buf[300000];
    uint64_t end = d->written + n;
    unsigned step = 1;
    while (d->written < end) {
        uint64_t k = VMIG_MIN(end - d->written, (uint64_t)(step * 7919u % sizeof(buf)) + 1);
        for (uint64_t i = 0; i < k; i++)
            buf[i] = pat(d->seed, d->written + i);
        int rc = vmig_devstate_write(out, buf, k);
        if (rc)
            return rc;
        d->written += k;
        step++;
    }
    return 0;
}

static int t_iterate(void *o, vmig_devstate_out *out, uint64_t *remaining)
{
    tdev *d = o;
    int rc = 0;
    if (d->iter_left) {
        d->iter_left--;
        rc = write_range(d, out, VMIG_MIN(d->iter_bytes, d->size - d->written));
    }
    *remaining = d->size - d->written;
    return rc;
}

static uint64_t t_pending(void *o)
{
    tdev *d = o;
    return d->size - d->written;
}

static int t_final(void *o, vmig_devstate_out *out)
{
    tdev *d = o;
    if (!d->ref)
        return write_range(d, out, d->size - d->written);
    /* Copied, referenced (without a copy), copied again: one stream. */
    uint64_t a = 1000, b = d->size - 777;
    int rc = vmig_devstate_write(out, d->ref, a);
    if (!rc)
        rc = vmig_devstate_write_ref(out, d->ref + a, b - a);
    if (!rc)
        rc = vmig_devstate_write(out, d->ref + b, d->size - b);
    d->written = d->size;
    return rc;
}

static int t_load(void *o, const void *buf, size_t len)
{
    tdev *d = o;
    if (d->threads == 0 || !pthread_equal(d->load_thread, pthread_self())) {
        d->load_thread = pthread_self();
        d->threads++;
    }
    const uint8_t *p = buf;
    if (d->fail_at && d->got + len > d->fail_at)
        return VMIG_EIO;
    for (size_t i = 0; i < len; i++)
        if (p[i] != pat(d->seed, d->got + i)) {
            d->bad = 1;
            return VMIG_EPROTO;
        }
    d->got += len;
    return 0;
}

static int t_done(void *o)
{
    tdev *d = o;
    d->done++;
    return d->got == d->size ? 0 : VMIG_EPROTO;
}

static const vmig_device_ops src_ops = {.save_final = t_final, .pending = t_pending};
static const vmig_device_ops src_iter_ops = {
    .save_iterate = t_iterate, .pending = t_pending, .save_final = t_final};
static const vmig_device_ops dst_ops = {.load_chunk = t_load, .load_done = t_done};

static void tdev_reset_dst(tdev *d)
{
    d->got = 0;
    d->bad = 0;
    d->done = 0;
    d->threads = 0;
}

/* ---- a real pair ---- */

static uint8_t *src_ram, *dst_ram;

typedef struct vm {
    int stops, resumes;
} vm;
static int vm_stop(void *o)
{
    ((vm *)o)->stops++;
    return 0;
}
static void vm_resume(void *o)
{
    ((vm *)o)->resumes++;
}

static vmig_session *mk_dst(const char *buffer, char *uri, size_t urilen)
{
    vmig_session *s;
    vmig_error e = {0};
    vmig_params p;
    vmig_params_init(&p);
    if (buffer)
        REQUIRE(!vmig_params_set(&p, "devstate-buffer", buffer, &e), "%s", e.msg);
    REQUIRE(!vmig_session_create(&s, VMIG_ROLE_DEST, &p, &e), "%s", e.msg);
    REQUIRE(!vmig_ram_add(s, "ram", dst_ram, RAM_BYTES, 4096, 0, &e), "%s", e.msg);
    REQUIRE(!vmig_incoming_listen(s, "tcp:127.0.0.1:0", &e), "%s", e.msg);
    vmig_incoming_uri(s, uri, urilen);
    return s;
}

static vmig_session *mk_src(const char *path, const char *chunk, const char *track)
{
    vmig_session *s;
    vmig_error e = {0};
    vmig_params p;
    vmig_params_init(&p);
    p.channels = 4;
    REQUIRE(!vmig_params_set(&p, "devstate-path", path, &e), "%s", e.msg);
    REQUIRE(!vmig_params_set(&p, "devstate-chunk", chunk, &e), "%s", e.msg);
    if (track)
        REQUIRE(!vmig_params_set(&p, "dirty-track", track, &e), "%s", e.msg);
    REQUIRE(!vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, &e), "%s", e.msg);
    REQUIRE(!vmig_ram_add(s, "ram", src_ram, RAM_BYTES, 4096, 0, &e), "%s", e.msg);
    return s;
}

/* Migrate src to dst (both set up); returns the source's rc. */
static int pair_run(vmig_session *src, vmig_session *dst, const char *uri, tu_side *ds)
{
    tu_side ss = {.s = src, .uri = uri};
    *ds = (tu_side){.s = dst};
    pthread_t td, ts;
    pthread_create(&td, NULL, tu_run_dst, ds);
    pthread_create(&ts, NULL, tu_run_src, &ss);
    pthread_join(ts, NULL);
    pthread_join(td, NULL);
    if (ss.rc)
        fprintf(stderr, "  source: %s\n", ss.err.msg);
    return ss.rc;
}

static void reg(vmig_session *s, const char *id, uint32_t inst, const vmig_device_ops *ops, tdev *d)
{
    vmig_error e = {0};
    REQUIRE(!vmig_device_register(s, id, inst, ops, d, &e), "register %s/%u: %s", id, inst, e.msg);
}

/* Two devices of one id (two instances) and a small one with save_iterate. */
static void test_paths(const char *path, const char *track)
{
    char uri[256];
    vmig_session *dst = mk_dst("1M", uri, sizeof(uri));
    vmig_session *src = mk_src(path, "64K", track);
    vm hooks = {0};
    vmig_vm_ops ops = {.stop = vm_stop, .resume = vm_resume};
    vmig_set_vm_ops(src, &ops, &hooks);
    tdev s0 = {.size = 24u << 20, .seed = 11}, s1 = {.size = (8u << 20) + 12345, .seed = 22};
    s1.ref = malloc(s1.size); /* instance 1 sends most of its state by reference */
    REQUIRE(s1.ref, "malloc");
    for (uint64_t i = 0; i < s1.size; i++)
        s1.ref[i] = pat(22, i);
    tdev s2 = {.size = 300000, .seed = 33, .iter_bytes = 100000, .iter_left = 2};
    tdev d0 = {.size = s0.size, .seed = 11}, d1 = {.size = s1.size, .seed = 22};
    tdev d2 = {.size = s2.size, .seed = 33};
    reg(src, "gpu", 0, &src_ops, &s0);
    reg(src, "gpu", 1, &src_ops, &s1);
    reg(src, "cfg", 0, &src_iter_ops, &s2);
    reg(dst, "cfg", 0, &dst_ops, &d2); /* another order than the source's */
    reg(dst, "gpu", 1, &dst_ops, &d1);
    reg(dst, "gpu", 0, &dst_ops, &d0);
    tu_side ds;
    int rc = pair_run(src, dst, uri, &ds);
    CHECK(rc == 0 && ds.rc == 0, "%s/%s: source %d, destination %d: %s", path,
          track ? track : "none", rc, ds.rc, ds.err.msg);
    tdev *dd[] = {&d0, &d1, &d2};
    for (int i = 0; i < 3; i++)
        CHECK(dd[i]->got == dd[i]->size && !dd[i]->bad && dd[i]->done == 1 && dd[i]->threads == 1,
              "%s: device %d: %llu of %llu bytes, bad %d, load_done %d, load threads %d", path, i,
              (unsigned long long)dd[i]->got, (unsigned long long)dd[i]->size, dd[i]->bad,
              dd[i]->done, dd[i]->threads);
    CHECK(!memcmp(src_ram, dst_ram, RAM_BYTES), "%s: RAM differs", path);
    vmig_stats ss, st;
    vmig_stats_get(src, &ss);
    vmig_stats_get(dst, &st);
    uint64_t total = s0.size + s1.size + s2.size;
    CHECK(ss.devices == 3 && ss.dev_bytes == total && st.dev_bytes == total &&
              ss.dev_chunks == st.dev_chunks,
          "%s: stats: source %u devices %llu bytes %u chunks, destination %llu bytes %u chunks",
          path, ss.devices, (unsigned long long)ss.dev_bytes, ss.dev_chunks,
          (unsigned long long)st.dev_bytes, st.dev_chunks);
    if (track) /* save_iterate ran after pass 1 while the VM ran */
        CHECK(ss.dev_iter_bytes == 100000 && s2.iter_left == 1,
              "%s live: iterate bytes %llu (left %u)", path, (unsigned long long)ss.dev_iter_bytes,
              s2.iter_left);
    else /* a stopped image: no pre-copy, nothing iterative */
        CHECK(ss.dev_iter_bytes == 0 && s2.iter_left == 2, "%s: no iterate for a stopped image",
              path);
    CHECK(st.dev_held_max <= (1u << 20) + 2 * (64u << 10),
          "%s: held %llu bytes out of order, limit 1 MiB", path,
          (unsigned long long)st.dev_held_max);
    CHECK(hooks.resumes == 0, "%s: resumed after success", path);
    fprintf(stderr, "  ok: %-8s %-8s %llu bytes in %u chunks, held at most %llu out of order\n",
            path, track ? track : "stopped", (unsigned long long)st.dev_bytes, st.dev_chunks,
            (unsigned long long)st.dev_held_max);
    vmig_session_free(src);
    vmig_session_free(dst);
    free(s1.ref);
}

/* A device whose load fails: the migration fails, the source resumes, and
 * the destination session migrates again. */
static void test_load_failure(void)
{
    char uri[256];
    vmig_session *dst = mk_dst(NULL, uri, sizeof(uri));
    tdev d0 = {.size = 16u << 20, .seed = 5, .fail_at = 5u << 20};
    reg(dst, "gpu", 0, &dst_ops, &d0);
    for (int round = 0; round < 2; round++) {
        vmig_session *src = mk_src("channels", "256K", NULL);
        vm hooks = {0};
        vmig_vm_ops ops = {.stop = vm_stop, .resume = vm_resume};
        vmig_set_vm_ops(src, &ops, &hooks);
        tdev s0 = {.size = 16u << 20, .seed = 5};
        reg(src, "gpu", 0, &src_ops, &s0);
        tdev_reset_dst(&d0);
        tu_side ds;
        int rc = pair_run(src, dst, uri, &ds);
        if (round == 0) {
            CHECK(rc != 0 && hooks.stops == 1 && hooks.resumes == 1,
                  "failed load: source rc %d, stops %d, resumes %d", rc, hooks.stops,
                  hooks.resumes);
            CHECK(ds.rc == VMIG_EIO && strstr(ds.err.msg, "'gpu' instance 0"),
                  "failed load: destination %d: %s", ds.rc, ds.err.msg);
            fprintf(stderr, "  ok: failing load -> %s\n", ds.err.msg);
            d0.fail_at = 0;
        } else {
            CHECK(rc == 0 && ds.rc == 0 && d0.got == d0.size && !d0.bad,
                  "after a failed load: rc %d/%d, %llu bytes: %s", rc, ds.rc,
                  (unsigned long long)d0.got, ds.err.msg);
        }
        vmig_session_free(src);
    }
    vmig_session_free(dst);
}

static void test_register(void)
{
    vmig_session *s, *d;
    vmig_error e = {0};
    REQUIRE(!vmig_session_create(&s, VMIG_ROLE_SOURCE, NULL, &e), "%s", e.msg);
    REQUIRE(!vmig_session_create(&d, VMIG_ROLE_DEST, NULL, &e), "%s", e.msg);
    tdev t = {0};
    CHECK(vmig_device_register(s, "gpu", 0, &src_ops, &t, &e) == 0, "first");
    CHECK(vmig_device_register(s, "gpu", 0, &src_ops, &t, &e) == VMIG_EEXIST &&
              strstr(e.msg, "already registered"),
          "duplicate: %s", e.msg);
    CHECK(vmig_device_register(s, "gpu", 1, &src_ops, &t, &e) == 0, "another instance");
    CHECK(vmig_device_register(s, "nic", 0, &dst_ops, &t, &e) == VMIG_EINVAL, "no save_final");
    CHECK(vmig_device_register(d, "nic", 0, &src_ops, &t, &e) == VMIG_EINVAL, "no load_chunk");
    CHECK(vmig_device_register(s, "", 0, &src_ops, &t, &e) == VMIG_EINVAL, "empty id");
    char longid[300];
    memset(longid, 'x', 256);
    longid[256] = 0;
    CHECK(vmig_device_register(s, longid, 0, &src_ops, &t, &e) == VMIG_EINVAL, "256-byte id");
    longid[255] = 0;
    CHECK(vmig_device_register(s, longid, 0, &src_ops, &t, &e) == 0, "255-byte id");
    CHECK(vmig_device_register(s, NULL, 0, &src_ops, &t, &e) == VMIG_EINVAL, "NULL id");
    vmig_session_free(s);
    vmig_session_free(d);
}

/* A device on one side only refuses the migration, naming it. */
static void test_mismatch(void)
{
    for (int side = 0; side < 2; side++) {
        char uri[256];
        vmig_session *dst = mk_dst(NULL, uri, sizeof(uri));
        vmig_session *src = mk_src("channels", "1M", NULL);
        tdev a = {.size = 4096, .seed = 1}, b = {.size = 4096, .seed = 1};
        reg(src, "gpu", 0, &src_ops, &a);
        reg(dst, "gpu", 0, &dst_ops, &b);
        if (side == 0)
            reg(src, "extra", 3, &src_ops, &a);
        else
            reg(dst, "extra", 3, &dst_ops, &b);
        tu_side ds;
        int rc = pair_run(src, dst, uri, &ds);
        CHECK(rc != 0 && ds.rc == VMIG_ENOENT && strstr(ds.err.msg, "'extra' instance 3"),
              "device on the %s only: %d: %s", side ? "destination" : "source", ds.rc, ds.err.msg);
        fprintf(stderr, "  ok: %-11s only -> %s\n", side ? "destination" : "source", ds.err.msg);
        vmig_session_free(src);
        vmig_session_free(dst);
    }
}

/* ---- hand-made sources ---- */

#define FCHUNK 4096u
static const uint8_t uuid_f[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6};

static void fk_hello(vmig_conn *c, uint16_t channels, const char *dev)
{
    vmig_wire_block b = {.length = RAM_BYTES, .page_size = 4096};
    snprintf(b.name, sizeof(b.name), "ram");
    vmig_wire_device wd = {.instance = 0};
    snprintf(wd.id, sizeof(wd.id), "%s", dev);
    vmig_wire_hello h = {.packet_pages = 128,
                         .channels = channels,
                         .zero_detect = 2,
                         .verify = 0,
                         .features = VMIG_HELLO_F_DEVICES,
                         .nblocks = 1,
                         .blocks = &b,
                         .dev_path = VMIG_WIRE_DEV_CHANNELS,
                         .dev_chunk = FCHUNK,
                         .ndevices = 1,
                         .devices = &wd};
    uint8_t buf[1024];
    int n = vmig_wire_hello_encode(&h, buf, sizeof(buf));
    REQUIRE(n > 0, "hello encode");
    tf_ctl(c, VMIG_CTL_HELLO, buf, n);
}

/* A DEV packet of chunk `chunk` of device `dev`: `len` bytes of the test
 * pattern from offset chunk * FCHUNK; `send` of them actually sent; the
 * payload's crc spoiled when `corrupt`. */
static void fk_dev(vmig_conn *c, uint64_t seq, const char *dev, uint32_t chunk, uint32_t len,
                   bool last, uint32_t send, bool corrupt)
{
    static uint8_t data[4 * FCHUNK];
    for (uint32_t i = 0; i < len; i++)
        data[i] = pat(77, (uint64_t)chunk * FCHUNK + i);
    vmig_pkt_hdr h = {.type = VMIG_PKT_DEV,
                      .flags = last ? VMIG_PKT_F_LAST : 0,
                      .seq = seq,
                      .pass = 1,
                      .payload_len = len,
                      .instance = 0,
                      .chunk = chunk,
                      .payload_crc = vmig_crc32c(0, data, len) ^ (corrupt ? 1u : 0u)};
    snprintf(h.block, sizeof(h.block), "%s", dev);
    uint8_t hdr[VMIG_PKT_HDR_LEN];
    vmig_wire_pkt_encode(&h, NULL, hdr);
    vmig_conn_write_all(c, hdr, sizeof(hdr), "dev", NULL);
    vmig_conn_write_all(c, data, send, "dev data", NULL);
}

static void fk_marker(vmig_conn *c, uint8_t type, uint64_t seq)
{
    vmig_pkt_hdr h = {.type = type, .seq = seq, .pass = 1};
    uint8_t hdr[VMIG_PKT_HDR_LEN];
    size_t n = vmig_wire_pkt_encode(&h, NULL, hdr);
    vmig_conn_write_all(c, hdr, n, "marker", NULL);
}

static void fk_end(vmig_conn *ctl)
{
    uint8_t dg[1][16] = {{0}};
    vmig_wire_end e = {.nblocks = 1, .digests = dg};
    uint8_t buf[128];
    int n = vmig_wire_end_encode(&e, buf, sizeof(buf));
    tf_ctl(ctl, VMIG_CTL_END, buf, n);
}

typedef struct fk_case {
    const char *what;
    const char *dev; /* device id the packets name */
    /* chunks in sending order: channel, index, length, sent, last, corrupt */
    struct {
        int ch;
        uint32_t chunk, len, send;
        bool last, corrupt;
    } c[8];
    int n;
    bool cut; /* close everything after the chunks (truncation) */
    int code; /* expected destination result */
    const char *needle;
} fk_case;

static void run_fake(vmig_session *dst, const char *uri, tdev *d0, const fk_case *k)
{
    tdev_reset_dst(d0);
    tu_side ds = {.s = dst};
    pthread_t td;
    pthread_create(&td, NULL, tu_run_dst, &ds);
    vmig_conn *ctl = tf_connect(uri, VMIG_CH_CONTROL, 0, 2, uuid_f);
    fk_hello(ctl, 2, "gpu");
    unsigned t = tf_read_frame(ctl);
    REQUIRE(t == VMIG_CTL_READY, "%s: expected READY, got %u", k->what, t);
    vmig_conn *data[2];
    for (uint16_t i = 0; i < 2; i++)
        data[i] = tf_connect(uri, VMIG_CH_DATA, i, 2, uuid_f);
    uint64_t seq[2] = {0, 0};
    for (int i = 0; i < k->n; i++)
        fk_dev(data[k->c[i].ch], ++seq[k->c[i].ch], k->dev, k->c[i].chunk, k->c[i].len,
               k->c[i].last, k->c[i].send, k->c[i].corrupt);
    if (!k->cut) {
        for (int i = 0; i < 2; i++) {
            fk_marker(data[i], VMIG_PKT_SYNC, ++seq[i]);
            fk_marker(data[i], VMIG_PKT_FIN, ++seq[i]);
        }
        fk_end(ctl);
        if (k->code == 0) {
            t = tf_read_frame(ctl);
            CHECK(t == VMIG_CTL_RESULT, "%s: expected RESULT, got %u", k->what, t);
            tf_ctl(ctl, VMIG_CTL_COMMIT, NULL, 0);
        }
    }
    if (k->cut) { /* the channel of the cut chunk closes first: its error is the one */
        int ch = k->c[k->n - 1].ch;
        vmig_conn_close(data[ch]);
        data[ch] = NULL;
        usleep(200000);
    }
    if (k->code != 0 || k->cut) {
        for (int i = 0; i < 2; i++)
            vmig_conn_close(data[i]);
        data[0] = data[1] = NULL;
    }
    pthread_join(td, NULL);
    for (int i = 0; i < 2; i++)
        vmig_conn_close(data[i]);
    vmig_conn_close(ctl);
    if (k->code == 0)
        CHECK(ds.rc == 0 && d0->got == d0->size && !d0->bad && d0->done == 1,
              "%s: rc %d, %llu of %llu bytes in order (bad %d): %s", k->what, ds.rc,
              (unsigned long long)d0->got, (unsigned long long)d0->size, d0->bad, ds.err.msg);
    else
        CHECK(ds.rc == k->code && strstr(ds.err.msg, k->needle),
              "%s: got %d (%s), expected %d mentioning '%s'", k->what, ds.rc, ds.err.msg, k->code,
              k->needle);
    fprintf(stderr, "  ok: %-30s -> %s\n", k->what, ds.rc ? ds.err.msg : "loaded in order");
}

static void test_fake_sources(void)
{
    char uri[256];
    vmig_session *dst = mk_dst("1M", uri, sizeof(uri));
    tdev d0 = {.size = 8 * FCHUNK - 100, .seed = 77};
    reg(dst, "gpu", 0, &dst_ops, &d0);
    const uint32_t L = FCHUNK, E = FCHUNK - 100; /* the last chunk is shorter */
    fk_case cases[] = {
        {"reversed across channels",
         "gpu",
         {{1, 7, E, E, true, false},
          {1, 6, L, L, false, false},
          {0, 5, L, L, false, false},
          {1, 4, L, L, false, false},
          {0, 3, L, L, false, false},
          {0, 2, L, L, false, false},
          {1, 1, L, L, false, false},
          {0, 0, L, L, false, false}},
         8,
         false,
         0,
         NULL},
        {"oversized chunk",
         "gpu",
         {{0, 0, 2 * L, 2 * L, false, false}},
         1,
         false,
         VMIG_EPROTO,
         "more than the 4096 announced"},
        {"truncated chunk",
         "gpu",
         {{0, 0, L, 100, false, false}},
         1,
         true,
         VMIG_ECONN,
         "device state"},
        {"corrupted chunk", "gpu", {{1, 0, L, L, false, true}}, 1, false, VMIG_EPROTO, "crc"},
        {"chunk sent twice",
         "gpu",
         {{0, 1, L, L, false, false}, {1, 1, L, L, false, false}},
         2,
         false,
         VMIG_EPROTO,
         "received twice"},
        {"no last chunk",
         "gpu",
         {{0, 0, L, L, false, false}, {1, 1, L, L, false, false}},
         2,
         false,
         VMIG_EPROTO,
         "without the last one"},
        {"a chunk missing",
         "gpu",
         {{0, 0, L, L, false, false}, {1, 2, E, E, true, false}},
         2,
         false,
         VMIG_EPROTO,
         "never arrived"},
        {"unknown device",
         "gpx",
         {{0, 0, L, L, false, false}},
         1,
         false,
         VMIG_EPROTO,
         "was not announced"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_fake(dst, uri, &d0, &cases[i]);
        /* Every refusal leaves the session whole: a real source migrates. */
        if (cases[i].code) {
            vmig_session *src = mk_src("channels", "4K", NULL);
            tdev s0 = {.size = d0.size, .seed = 77};
            reg(src, "gpu", 0, &src_ops, &s0);
            tdev_reset_dst(&d0);
            tu_side ds;
            int rc = pair_run(src, dst, uri, &ds);
            CHECK(rc == 0 && ds.rc == 0 && d0.got == d0.size,
                  "%s: the next migration failed: %d/%d %s", cases[i].what, rc, ds.rc, ds.err.msg);
            vmig_session_free(src);
        }
    }
    vmig_session_free(dst);
}

int main(void)
{
    src_ram = tu_map(RAM_BYTES);
    dst_ram = tu_map(RAM_BYTES);
    for (size_t i = 0; i < RAM_BYTES; i += 512)
        src_ram[i] = (uint8_t)(i >> 9);
    test_register();
    test_paths("channels", NULL);
    test_paths("control", NULL);
    if (vmig_dirty_track_probe(VMIG_DIRTY_WP, NULL) == 0) {
        test_paths("channels", "wp");
        test_paths("control", "wp");
    } else {
        fprintf(stderr, "  (no userfaultfd write-protect here: the live cases are not run)\n");
    }
    test_load_failure();
    test_mismatch();
    test_fake_sources();
    return tu_result("test_e2e_devstate");
}
