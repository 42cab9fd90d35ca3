/*
 * DSA work queue discovery and portals (src/accel/dsa_portal.c) without a
 * device: fake sysfs trees in a temporary directory (queues of every kind,
 * missing, unreadable and malformed attributes, entries that are not DSA
 * queues), the sentences find() gives, the CPUID helpers, and the portal
 * path up to the device node. On a CPU with MOVDIR64B, a "dedicated
 * portal" mapped from a plain file shows the instruction's encoding: the
 * file must then hold the descriptor.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/accel/dsa_portal.h"

#include "../testutil.h"

#if VMIG_HAVE_IDXD_H

#define MSG_MAX 1024

/* ---- fake sysfs trees ---- */

static void VMIG_PRINTF(3, 4) path_of(char *buf, const char *dir, const char *fmt, ...)
{
    char rel[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    int k = snprintf(buf, 512, "%s/%s", dir, rel);
    REQUIRE(k > 0 && k < 512, "path too long: %s/%s", dir, rel);
}

static void make_dir(const char *dir, const char *rel)
{
    char p[512];
    path_of(p, dir, "%s", rel);
    REQUIRE(mkdir(p, 0755) == 0, "mkdir %s: %s", p, strerror(errno));
}

static void put(const char *dir, const char *rel, const char *text)
{
    char p[512];
    path_of(p, dir, "%s", rel);
    FILE *f = fopen(p, "w");
    REQUIRE(f, "create %s: %s", p, strerror(errno));
    REQUIRE(fputs(text, f) >= 0 && fclose(f) == 0, "write %s", p);
}

static void new_tree(char *dir, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    int k = snprintf(dir, size, "%s/vmig-dsa-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    REQUIRE(k > 0 && (size_t)k < size, "TMPDIR too long");
    REQUIRE(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
}

static int remove_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void remove_tree(const char *dir)
{
    CHECK(nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "cannot remove %s", dir);
}

/* One queue's attributes as text written to its files; NULL: absent. */
struct wq_spec {
    const char *name, *mode, *state, *type, *size, *batch, *xfer;
};

static void make_wq(const char *dir, const struct wq_spec *w)
{
    char rel[256];
    make_dir(dir, w->name);
    const char *attrs[] = {"mode", "state", "type", "size", "max_batch_size", "max_transfer_size"};
    const char *texts[] = {w->mode, w->state, w->type, w->size, w->batch, w->xfer};
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(attrs); i++) {
        if (!texts[i])
            continue;
        snprintf(rel, sizeof(rel), "%s/%s", w->name, attrs[i]);
        put(dir, rel, texts[i]);
    }
}

static const struct wq_spec USABLE_DEDICATED = {"",     "dedicated\n", "enabled\n", "user\n",
                                                "16\n", "32\n",        "2097152\n"};

static void make_like(const char *dir, const char *name, struct wq_spec w)
{
    w.name = name;
    make_wq(dir, &w);
}

/* ---- what discovery must report ---- */

struct want {
    const char *name;
    bool dedicated, enabled, user;
    uint32_t size, max_batch;
    uint64_t max_xfer;
    int device;
    const char *why; /* NULL: usable; else what follows "is" */
};

static void check_info(const vmig_dsa_wq_info *got, const struct want *w)
{
    char dev[64];
    snprintf(dev, sizeof(dev), "/dev/dsa/%s", w->name);
    CHECK(strcmp(got->name, w->name) == 0, "name '%s', want '%s'", got->name, w->name);
    CHECK(strcmp(got->dev_path, dev) == 0, "%s: dev_path '%s'", w->name, got->dev_path);
    CHECK(got->dedicated == w->dedicated, "%s: dedicated %d", w->name, got->dedicated);
    CHECK(got->enabled == w->enabled, "%s: enabled %d", w->name, got->enabled);
    CHECK(got->user == w->user, "%s: user %d", w->name, got->user);
    CHECK(got->size == w->size, "%s: size %u, want %u", w->name, got->size, w->size);
    CHECK(got->max_batch == w->max_batch, "%s: max_batch %u, want %u", w->name, got->max_batch,
          w->max_batch);
    CHECK(got->max_xfer == w->max_xfer, "%s: max_xfer %llu, want %llu", w->name,
          (unsigned long long)got->max_xfer, (unsigned long long)w->max_xfer);
    CHECK(got->device == w->device, "%s: device %d", w->name, got->device);
    CHECK(vmig_dsa_wq_usable(got) == (w->why == NULL), "%s: usable %d", w->name,
          vmig_dsa_wq_usable(got));
}

static void expect_error(const char *what, int rc, const vmig_error *e, int code, const char *want)
{
    CHECK(rc == code && e->code == code, "%s: rc %d, code %d, want %d ('%s')", what, rc, e->code,
          code, e->msg);
    CHECK(strcmp(e->msg, want) == 0, "%s:\n  got  '%s'\n  want '%s'", what, e->msg, want);
}

/* find(root, path) fails with `code` and exactly the sentence `fmt`. */
static void VMIG_PRINTF(4, 5)
    expect_find_error(const char *root, const char *path, int code, const char *fmt, ...)
{
    char want[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof(want), fmt, ap);
    va_end(ap);
    vmig_error e = {0};
    vmig_dsa_wq_info info;
    memset(&info, 0xa5, sizeof(info));
    char what[600];
    snprintf(what, sizeof(what), "find(%s, %s)", root ? root : "NULL", path ? path : "NULL");
    expect_error(what, vmig_dsa_wq_find(root, path, &info, &e), &e, code, want);
    CHECK(info.name[0] == 0 && info.size == 0, "%s: output not cleared", what);
    CHECK(vmig_dsa_wq_find(root, path, &info, NULL) == code, "%s: NULL err", what);
}

/* The main tree: every kind of queue and of noise. */
static uint32_t build_main_tree(const char *dir, struct want *want, bool as_root)
{
    make_dir(dir, "dsa0");
    put(dir, "dsa0/max_batch_size", "1024\n");
    put(dir, "dsa0/max_transfer_size", "2147483648\n");
    make_dir(dir, "dsa2");
    put(dir, "dsa2/max_batch_size", "512\n");
    put(dir, "dsa2/max_transfer_size", "1048576\n");
    make_dir(dir, "iax1");
    make_like(dir, "wq1.0", USABLE_DEDICATED); /* IAA's: left out */

    const struct wq_spec specs[] = {
        {"wq0.0", "dedicated\n", "enabled\n", "user\n", "16\n", "32\n", "2097152\n"},
        {"wq0.1", "shared\n", "enabled\n", "user\n", "128\n", "1024\n", "1048576\n"},
        {"wq0.2", "dedicated\n", "disabled\n", "user\n", "16\n", "32\n", "2097152\n"},
        {"wq0.3", "dedicated\n", "enabled\n", "kernel\n", "16\n", "32\n", "2097152\n"},
        /* Limits absent (kernels before 5.10): the device's. */
        {"wq0.4", "shared\n", "enabled\n", "user\n", "8\n", NULL, NULL},
        {"wq0.5", "shared\n", "enabled\n", "user\n", "12x\n", "-1\n", "99999999999999999999999\n"},
        {"wq0.6", "dedicated\n", NULL, "user\n", "4\n", "8\n", "4096\n"}, /* state: a directory */
        {"wq0.7", NULL, "enabled\n", "user\n", "4\n", NULL, NULL},
        {"wq0.8", "dedicated\n", "locked\n", "user\n", "4\n", "8\n", "4096\n"},
        {"wq0.9", "dedicated\n", "enabled\n", "user\n", "4294967296\n", "4294967295\n",
         "18446744073709551615\n"},
        {"wq0.10", "bogus\x01\n", "enabled\n", "user\n", "4\n", "8\n", "4096\n"},
        {"wq0.11", "shared\n", "enabled\n", "user\n", "0\n", "  5\n", "4096"},
        {"wq0.12", NULL, NULL, NULL, NULL, NULL, NULL},
        {"wq0.13", "dedicated\n", "enabled\n", "user\n", "16\n", "32\n", "2097152\n"},
        {"wq0.15", "shared\n", "enabled\n", "user\n", "007\n", "8\n", "4096\n"},
        {"wq2.0", "dedicated\n", "enabled\n", "user\n", "64\n", "0\n", NULL},
    };
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(specs); i++)
        if (strcmp(specs[i].name, "wq0.13") != 0 || !as_root)
            make_wq(dir, &specs[i]);
    make_dir(dir, "wq0.6/state");

    /* As in sysfs, a link to the queue's directory elsewhere. */
    make_dir(dir, "devices");
    make_like(dir, "devices/wq0.14",
              (struct wq_spec){"", "shared\n", "enabled\n", "user\n", "1\n", "16\n", "65536\n"});
    char link[512];
    path_of(link, dir, "wq0.14");
    REQUIRE(symlink("devices/wq0.14", link) == 0, "symlink: %s", strerror(errno));

    /* Noise: not queues, or not named as the kernel names them. */
    const char *noise[] = {"engine0.0",      "group0.0", "wq0",    "wq0.x",  "wq00.1",
                           "wq0.01",         "wq0.1.2",  "wq-1.0", "wq0.",   "wq.0",
                           "wq3000000000.0", "WQ0.3",    "wq+1.0", "wq1.0 ", "xwq0.0"};
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(noise); i++)
        make_like(dir, noise[i], USABLE_DEDICATED);
    put(dir, "wq0.99", "a file, not a queue\n");

    const uint64_t dx = 2147483648ull; /* dsa0's max_transfer_size */
    const struct want all[] = {
        {"wq0.0", true, true, true, 16, 32, 2097152, 0, NULL},
        {"wq0.1", false, true, true, 128, 1024, 1048576, 0, NULL},
        {"wq0.2", true, false, true, 16, 32, 2097152, 0, "disabled"},
        {"wq0.3", true, true, false, 16, 32, 2097152, 0, "not a user queue (type 'kernel')"},
        {"wq0.4", false, true, true, 8, 1024, dx, 0, NULL},
        {"wq0.5", false, true, true, 0, 0, 0, 0, "unusable (bad size '12x')"},
        {"wq0.6", true, false, true, 4, 8, 4096, 0, "unusable (state: Is a directory)"},
        {"wq0.7", false, false, true, 4, 1024, dx, 0, "unusable (no mode attribute)"},
        {"wq0.8", true, false, true, 4, 8, 4096, 0, "not enabled (state 'locked')"},
        {"wq0.9", true, true, true, 0, 4294967295u, UINT64_MAX, 0,
         "unusable (bad size '4294967296')"},
        {"wq0.10", false, false, true, 4, 8, 4096, 0,
         "unusable (mode 'bogus?' is neither dedicated nor shared)"},
        {"wq0.11", false, true, true, 0, 0, 4096, 0, "unusable (size 0)"},
        {"wq0.12", false, false, false, 0, 1024, dx, 0, "unusable (no state attribute)"},
        {"wq0.13", false, false, false, 0, 0, 0, 0, "unusable (state: Permission denied)"},
        {"wq0.14", false, true, true, 1, 16, 65536, 0, NULL},
        {"wq0.15", false, true, true, 0, 8, 4096, 0, "unusable (bad size '007')"},
        {"wq2.0", true, true, true, 64, 0, 1048576, 2, NULL},
    };
    uint32_t n = 0;
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(all); i++)
        if (strcmp(all[i].name, "wq0.13") != 0 || !as_root)
            want[n++] = all[i];
    return n;
}

static void test_main_tree(void)
{
    bool as_root = geteuid() == 0; /* root reads a mode 000 directory */
    char dir[256];
    new_tree(dir, sizeof(dir));
    struct want want[32];
    uint32_t nwant = build_main_tree(dir, want, as_root);
    char locked[512];
    path_of(locked, dir, "wq0.13");
    if (!as_root)
        REQUIRE(chmod(locked, 0) == 0, "chmod: %s", strerror(errno));
    else
        fprintf(stderr, "note: running as root, the unreadable-directory queue is left out\n");

    /* Everything, in order. */
    vmig_dsa_wq_info out[40];
    uint32_t n = 12345;
    vmig_error e = {0};
    REQUIRE(vmig_dsa_wq_discover(dir, out, 40, &n, &e) == 0, "discover: %s", e.msg);
    CHECK(n == nwant, "%u queues, want %u", n, nwant);
    for (uint32_t i = 0; i < n && i < nwant; i++)
        check_info(&out[i], &want[i]);

    /* Fewer slots than queues: the first ones, and the whole count. */
    memset(out, 0, sizeof(out));
    snprintf(out[3].name, sizeof(out[3].name), "sentinel");
    REQUIRE(vmig_dsa_wq_discover(dir, out, 3, &n, NULL) == 0, "discover 3");
    CHECK(n == nwant, "count with 3 slots: %u", n);
    for (uint32_t i = 0; i < 3; i++)
        check_info(&out[i], &want[i]);
    CHECK(strcmp(out[3].name, "sentinel") == 0, "slot 3 written");
    n = 0;
    CHECK(vmig_dsa_wq_discover(dir, NULL, 0, &n, NULL) == 0 && n == nwant, "count only: %u", n);
    vmig_error e2 = {0};
    CHECK(vmig_dsa_wq_discover(dir, NULL, 1, &n, &e2) == VMIG_EINVAL && e2.code == VMIG_EINVAL,
          "NULL out with max 1");
    CHECK(vmig_dsa_wq_discover(dir, out, 1, NULL, NULL) == VMIG_EINVAL, "NULL count");

    /* find(): the first dedicated usable queue; named ones. */
    vmig_dsa_wq_info info;
    REQUIRE(vmig_dsa_wq_find(dir, NULL, &info, &e) == 0, "find NULL: %s", e.msg);
    check_info(&info, &want[0]);
    const char *names[][2] = {{"wq0.1", "wq0.1"},          {"/dev/dsa/wq0.1", "wq0.1"},
                              {"/dev/dsa/wq0.4", "wq0.4"}, {"wq0.14", "wq0.14"},
                              {"wq2.0", "wq2.0"},          {"wq0.0", "wq0.0"}};
    for (size_t t = 0; t < VMIG_ARRAY_SIZE(names); t++) {
        vmig_error ef = {0};
        int rc = vmig_dsa_wq_find(dir, names[t][0], &info, &ef);
        CHECK(rc == 0, "find %s: %s", names[t][0], ef.msg);
        for (uint32_t i = 0; rc == 0 && i < nwant; i++)
            if (strcmp(want[i].name, names[t][1]) == 0)
                check_info(&info, &want[i]);
    }
    for (uint32_t i = 0; i < nwant; i++)
        if (want[i].why)
            expect_find_error(dir, want[i].name, VMIG_ENOTSUP, "DSA work queue %s is %s",
                              want[i].name, want[i].why);
    expect_find_error(dir, "wq0.99", VMIG_ENOENT,
                      "no DSA work queue wq0.99 (%s/wq0.99 is not a directory)", dir);
    expect_find_error(dir, "/dev/dsa/wq0.20", VMIG_ENOENT,
                      "no DSA work queue wq0.20 (%s/wq0.20 absent)", dir);
    expect_find_error(dir, "wq1.0", VMIG_ENOTSUP,
                      "wq1.0 is a queue of the IAA device iax1, not of a DSA device");
    const char *bad[] = {"/dev/iax/wq1.0",  "wq0",    "",        "dsa0",   "/dev/dsa/", "wq00.1",
                         "/dev/dsa//wq0.1", "wq0.1/", "./wq0.1", "wq0.1\n"};
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(bad); i++)
        expect_find_error(dir, bad[i], VMIG_EINVAL,
                          "'%s' does not name a DSA work queue (expected /dev/dsa/wqX.Y or "
                          "wqX.Y)",
                          bad[i]);
    CHECK(vmig_dsa_wq_find(dir, NULL, NULL, NULL) == VMIG_EINVAL, "NULL out");

    if (!as_root)
        CHECK(chmod(locked, 0755) == 0, "chmod back");
    remove_tree(dir);
}

/* Roots that hold nothing usable, or nothing at all. */
static void test_nothing_usable(void)
{
    char dir[256];
    new_tree(dir, sizeof(dir));
    make_like(dir, "wq0.0", (struct wq_spec){"", "dedicated\n", "disabled\n", "user\n", "4\n"});
    make_like(dir, "wq0.1", (struct wq_spec){"", "shared\n", "enabled\n", "kernel\n", "4\n"});
    make_like(dir, "wq0.2", (struct wq_spec){"", NULL, "enabled\n", "user\n", "4\n"});
    expect_find_error(dir, NULL, VMIG_ENOTSUP,
                      "no usable DSA work queue (3 found: wq0.0 disabled, wq0.1 not a user queue "
                      "(type 'kernel'), wq0.2 unusable (no mode attribute))");
    uint32_t n = 0;
    CHECK(vmig_dsa_wq_discover(dir, NULL, 0, &n, NULL) == 0 && n == 3, "3 listed: %u", n);
    remove_tree(dir);

    /* So many that the sentence is cut, between two queues. */
    new_tree(dir, sizeof(dir));
    for (int i = 0; i < 40; i++) {
        char name[32];
        snprintf(name, sizeof(name), "wq0.%d", i);
        make_like(dir, name, (struct wq_spec){"", "dedicated\n", "disabled\n", "user\n", "4\n"});
    }
    vmig_error e = {0};
    vmig_dsa_wq_info info;
    CHECK(vmig_dsa_wq_find(dir, NULL, &info, &e) == VMIG_ENOTSUP, "40 disabled");
    const char *head = "no usable DSA work queue (40 found: wq0.0 disabled, wq0.1 disabled, ";
    size_t len = strlen(e.msg);
    CHECK(strncmp(e.msg, head, strlen(head)) == 0, "long sentence: '%s'", e.msg);
    /* Cut by find() between two queues, not by the message's size. */
    CHECK(len + 1 < sizeof(e.msg) && len >= 14 && strcmp(e.msg + len - 14, "disabled, ...)") == 0,
          "long sentence end: '%s'", e.msg);
    remove_tree(dir);

    /* An empty root, an absent one, one that is a file. */
    new_tree(dir, sizeof(dir));
    expect_find_error(dir, NULL, VMIG_ENOTSUP, "no usable DSA work queue (none under %s)", dir);
    char gone[512], file[512];
    path_of(gone, dir, "absent");
    expect_find_error(gone, NULL, VMIG_ENOTSUP,
                      "no usable DSA work queue (%s absent: no idxd driver or no DSA device)",
                      gone);
    expect_find_error(gone, "wq0.1", VMIG_ENOENT, "no DSA work queue wq0.1 (%s/wq0.1 absent)",
                      gone);
    n = 7;
    CHECK(vmig_dsa_wq_discover(gone, NULL, 0, &n, NULL) == 0 && n == 0, "absent root: %u", n);
    path_of(file, dir, "file");
    put(dir, "file", "x\n");
    n = 7;
    e = (vmig_error){0};
    char want[MSG_MAX];
    snprintf(want, sizeof(want), "cannot list DSA devices in %s: Not a directory", file);
    expect_error("discover(file)", vmig_dsa_wq_discover(file, NULL, 0, &n, &e), &e, VMIG_EIO, want);
    CHECK(n == 0, "discover(file): count %u", n);
    expect_find_error(file, NULL, VMIG_EIO, "cannot list DSA devices in %s: Not a directory", file);
    expect_find_error(file, "wq0.0", VMIG_EIO, "cannot read %s: Not a directory", file);
    remove_tree(dir);

    /* The default root, when this machine has no DSA driver loaded. */
    struct stat st;
    if (stat(VMIG_DSA_SYSFS_ROOT, &st) != 0)
        expect_find_error(NULL, "wq0.1", VMIG_ENOENT,
                          "no DSA work queue wq0.1 (/sys/bus/dsa/devices/wq0.1 absent)");
}

/* Dedicated queues first, else the first shared one; IAA queues never. */
static void test_preference(void)
{
    char dir[256];
    new_tree(dir, sizeof(dir));
    make_like(dir, "wq0.0", (struct wq_spec){"", "dedicated\n", "disabled\n", "user\n", "4\n"});
    make_like(dir, "wq0.1", (struct wq_spec){"", "dedicated\n", "enabled\n", "kernel\n", "4\n"});
    make_like(dir, "wq0.2", (struct wq_spec){"", "shared\n", "enabled\n", "user\n", "32\n"});
    make_like(dir, "wq0.3", (struct wq_spec){"", "shared\n", "enabled\n", "user\n", "64\n"});
    make_dir(dir, "iax1");
    make_like(dir, "wq1.0", USABLE_DEDICATED);
    vmig_dsa_wq_info info;
    vmig_error e = {0};
    REQUIRE(vmig_dsa_wq_find(dir, NULL, &info, &e) == 0, "find: %s", e.msg);
    CHECK(strcmp(info.name, "wq0.2") == 0 && !info.dedicated && info.size == 32, "picked %s",
          info.name);
    /* A dedicated one later in the order wins over the shared ones. */
    make_like(dir, "wq3.7", USABLE_DEDICATED);
    REQUIRE(vmig_dsa_wq_find(dir, NULL, &info, &e) == 0, "find: %s", e.msg);
    CHECK(strcmp(info.name, "wq3.7") == 0 && info.dedicated && info.device == 3, "picked %s",
          info.name);
    remove_tree(dir);
}

/* ---- the CPU ---- */

static bool cpuinfo_has(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return false;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "flags", 5) != 0 || !colon)
            continue;
        for (char *t = strtok(colon + 1, " \n"); t && !found; t = strtok(NULL, " \n"))
            found = strcmp(t, flag) == 0;
        break;
    }
    fclose(f);
    return found;
}

static void test_cpuid(void)
{
    bool m = vmig_cpu_has_movdir64b(), q = vmig_cpu_has_enqcmd();
    fprintf(stderr, "CPU: movdir64b %s, enqcmd %s\n", m ? "yes" : "no", q ? "yes" : "no");
    CHECK(vmig_cpu_has_movdir64b() == m && vmig_cpu_has_enqcmd() == q, "CPUID answers changed");
#if defined(__x86_64__)
    /* The kernel lists a flag only when CPUID has it (it may hide one the
     * CPU has, as it does ENQCMD without PASID support). */
    if (cpuinfo_has("movdir64b"))
        CHECK(m, "/proc/cpuinfo lists movdir64b, CPUID bit 28 not seen");
    if (cpuinfo_has("enqcmd"))
        CHECK(q, "/proc/cpuinfo lists enqcmd, CPUID bit 29 not seen");
#else
    CHECK(!m && !q, "MOVDIR64B or ENQCMD claimed on a CPU that is not x86-64");
    (void)cpuinfo_has;
#endif
}

/* ---- portals ---- */

static vmig_dsa_wq_info fake_wq(const char *name, const char *dev_path, bool dedicated)
{
    vmig_dsa_wq_info wq;
    memset(&wq, 0, sizeof(wq));
    snprintf(wq.name, sizeof(wq.name), "%s", name);
    int k = snprintf(wq.dev_path, sizeof(wq.dev_path), "%s", dev_path);
    REQUIRE(k > 0 && (size_t)k < sizeof(wq.dev_path), "device path too long: %s", dev_path);
    wq.dedicated = dedicated;
    wq.enabled = wq.user = true;
    wq.size = 16;
    wq.max_batch = 32;
    wq.max_xfer = 4096;
    return wq;
}

static void expect_open_error(const vmig_dsa_wq_info *wq, int code, const char *want)
{
    vmig_error e = {0};
    vmig_dsa_portal *p = (vmig_dsa_portal *)&e; /* must be reset to NULL */
    char what[128];
    snprintf(what, sizeof(what), "open(%s)", wq->dev_path);
    expect_error(what, vmig_dsa_portal_open(wq, &p, &e), &e, code, want);
    CHECK(p == NULL, "%s: out not cleared", what);
}

/* A plain file mapped as a dedicated portal: MOVDIR64B stores the 64
 * bytes at the start of the page, and the file keeps them. */
static void test_file_portal(const char *file)
{
    REQUIRE(truncate(file, 4096) == 0, "truncate: %s", strerror(errno));
    vmig_dsa_wq_info wq = fake_wq("wq9.0", file, true);
    vmig_dsa_portal *p = NULL;
    vmig_error e = {0};
    REQUIRE(vmig_dsa_portal_open(&wq, &p, &e) == 0, "open: %s", e.msg);
    CHECK(vmig_dsa_portal_dedicated(p) && vmig_dsa_portal_size(p) == 16 &&
              vmig_dsa_portal_max_batch(p) == 32,
          "accessors: %d %u %u", vmig_dsa_portal_dedicated(p), vmig_dsa_portal_size(p),
          vmig_dsa_portal_max_batch(p));
    struct dsa_hw_desc *d = aligned_alloc(64, 64);
    REQUIRE(d, "alloc");
    uint8_t bytes[64] = {0};
    for (int i = 4; i < 64; i++)
        bytes[i] = (uint8_t)(i * 7 + 1);
    memcpy(d, bytes, 64);
    CHECK(vmig_dsa_portal_submit(p, d) == 0, "submit to a dedicated portal");
    vmig_dsa_portal_free(p);
    free(d);

    uint8_t back[4096];
    int fd = open(file, O_RDONLY);
    REQUIRE(fd >= 0 && read(fd, back, sizeof(back)) == (ssize_t)sizeof(back), "read back");
    close(fd);
    CHECK(memcmp(back, bytes, 64) == 0, "the file does not hold the descriptor");
    bool rest_zero = true;
    for (size_t i = 64; i < sizeof(back); i++)
        rest_zero &= back[i] == 0;
    CHECK(rest_zero, "MOVDIR64B wrote beyond 64 bytes");
}

static void test_portal(void)
{
    vmig_dsa_portal *p = NULL;
    vmig_dsa_wq_info wq = fake_wq("wq9.0", "/nonexistent/dsa/wq9.0", true);
    CHECK(vmig_dsa_portal_open(NULL, &p, NULL) == VMIG_EINVAL && p == NULL, "NULL wq");
    CHECK(vmig_dsa_portal_open(&wq, NULL, NULL) == VMIG_EINVAL, "NULL out");
    vmig_dsa_wq_info empty;
    memset(&empty, 0, sizeof(empty));
    CHECK(vmig_dsa_portal_open(&empty, &p, NULL) == VMIG_EINVAL && p == NULL, "no dev_path");
    vmig_dsa_portal_free(NULL);

#if defined(__x86_64__)
    char dir[256], file[512], want[MSG_MAX];
    new_tree(dir, sizeof(dir));
    path_of(file, dir, "portal");
    put(dir, "portal", "");

    if (vmig_cpu_has_movdir64b()) {
        snprintf(want, sizeof(want),
                 "cannot open %s: no such device node (is wq9.0 enabled as a user queue?)",
                 wq.dev_path);
        expect_open_error(&wq, VMIG_ENOENT, want);
        if (geteuid() != 0) {
            vmig_dsa_wq_info locked = fake_wq("wq9.0", file, true);
            REQUIRE(chmod(file, 0) == 0, "chmod");
            snprintf(want, sizeof(want),
                     "cannot open %s: Permission denied (its owner must grant this user read "
                     "and write access)",
                     file);
            expect_open_error(&locked, VMIG_ENOTSUP, want);
            REQUIRE(chmod(file, 0644) == 0, "chmod back");
        }
        test_file_portal(file);
    } else {
        expect_open_error(&wq, VMIG_ENOTSUP,
                          "DSA work queue wq9.0 is dedicated and takes MOVDIR64B, which this CPU "
                          "lacks (CPUID.(EAX=7,ECX=0):ECX bit 28)");
        fprintf(stderr, "note: no MOVDIR64B, the file portal is not tried\n");
    }
    /* ENQCMD is not tried on a file: only an enqueue register answers it. */
    vmig_dsa_wq_info shared = fake_wq("wq9.1", "/nonexistent/dsa/wq9.1", false);
    if (vmig_cpu_has_enqcmd()) {
        snprintf(want, sizeof(want),
                 "cannot open %s: no such device node (is wq9.1 enabled as a user queue?)",
                 shared.dev_path);
        expect_open_error(&shared, VMIG_ENOENT, want);
    } else {
        expect_open_error(&shared, VMIG_ENOTSUP,
                          "DSA work queue wq9.1 is shared and takes ENQCMD, which this CPU lacks "
                          "(CPUID.(EAX=7,ECX=0):ECX bit 29)");
    }
    remove_tree(dir);
#else
    expect_open_error(&wq, VMIG_ENOTSUP,
                      "DSA work queue wq9.0: DSA portals are not built for this CPU (x86-64 "
                      "only)");
    (void)test_file_portal;
#endif
}

int main(void)
{
    test_main_tree();
    test_nothing_usable();
    test_preference();
    test_cpuid();
    test_portal();
    return tu_result("test_dsa_portal");
}

#else

int main(void)
{
    SKIP("built without <linux/idxd.h>");
}

#endif
