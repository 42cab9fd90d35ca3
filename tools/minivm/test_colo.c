/*
 * What minivm does for continuous checkpoints, without KVM:
 *  - a secondary's vCPU device (cpus_keep) loads the whole state once per
 *    checkpoint; each good load replaces the kept one, a refused one keeps
 *    the one before, and a load cut short does not leak into the next;
 *  - the console's output commit: lines written before a checkpoint's
 *    pause come out at its acknowledgement, lines after it wait for the
 *    next one, and ending the protection releases everything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minivm.h"

static int failures;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* A blob of `n` vCPUs whose rip says which checkpoint it belongs to. */
static void *blob(unsigned n, uint64_t rip, size_t *len)
{
    struct minivm_state *st = calloc(1, sizeof(*st));
    st->nvcpus = n;
    st->tsc_khz = 2000000;
    for (unsigned i = 0; i < n; i++) {
        st->vcpu[i].seen = 1u << MINIVM_SEC_REGS | 1u << MINIVM_SEC_SREGS;
        st->vcpu[i].regs.rip = rip + i;
        st->vcpu[i].regs.rflags = 2;
    }
    void *buf = NULL;
    if (minivm_state_serialize(st, &buf, len))
        buf = NULL;
    free(st);
    return buf;
}

/* One load as vmig makes it: chunks of `step` bytes, then load_done. */
static int load(struct minivm *vm, const uint8_t *b, size_t len, size_t step)
{
    for (size_t off = 0; off < len; off += step) {
        int rc = minivm_cpus_ops.load_chunk(vm, b + off, len - off < step ? len - off : step);
        if (rc)
            return rc;
    }
    return minivm_cpus_ops.load_done(vm);
}

static uint64_t kept_rip(struct minivm *vm)
{
    struct minivm_state *st = malloc(sizeof(*st));
    char msg[128];
    uint64_t rip = 0;
    if (vm->cpus_kept &&
        !minivm_state_parse(vm->cpus_kept, vm->cpus_kept_len, st, msg, sizeof(msg)))
        rip = st->vcpu[0].regs.rip;
    free(st);
    return rip;
}

static void test_cpus_keep(void)
{
    struct minivm vm = {.kvm_fd = -1, .vm_fd = -1, .cpus_keep = true};
    size_t l1, l2, l3;
    uint8_t *b1 = blob(2, 0x1000, &l1), *b2 = blob(2, 0x2000, &l2), *b3 = blob(3, 0x3000, &l3);
    CHECK(b1 && b2 && b3, "cannot serialize");
    if (!b1 || !b2 || !b3)
        return;
    CHECK(load(&vm, b1, l1, 100) == 0, "checkpoint 0");
    CHECK(kept_rip(&vm) == 0x1000 && vm.cpus_loads == 1 && !vm.cpus_in, "checkpoint 0 kept");
    CHECK(vm.nvcpus == 0, "nothing went into KVM (no vCPU created)");
    CHECK(load(&vm, b2, l2, 7) == 0, "checkpoint 1");
    CHECK(kept_rip(&vm) == 0x2000 && vm.cpus_loads == 2, "checkpoint 1 replaced checkpoint 0");
    /* Another vCPU count than the checkpoints before: refused, 1 stays. */
    CHECK(load(&vm, b3, l3, 4096) == VMIG_EPROTO, "3 vCPUs after 2");
    CHECK(kept_rip(&vm) == 0x2000, "the refused one did not replace it");
    /* A damaged blob: refused, and the next load starts from its first byte. */
    b1[9] ^= 0x40;
    CHECK(load(&vm, b1, l1, 64) == VMIG_EPROTO, "bad blob");
    b1[9] ^= 0x40;
    CHECK(kept_rip(&vm) == 0x2000 && vm.cpus_in_len == 0, "still checkpoint 1, nothing pending");
    CHECK(load(&vm, b1, l1, l1) == 0 && kept_rip(&vm) == 0x1000, "a later checkpoint loads");
    /* A blob beyond the limit is refused at its chunk and leaves nothing. */
    uint8_t *big = calloc(1, MINIVM_CPUS_STATE_MAX + 1);
    CHECK(minivm_cpus_ops.load_chunk(&vm, big, MINIVM_CPUS_STATE_MAX) == 0, "1 MiB");
    CHECK(minivm_cpus_ops.load_chunk(&vm, big, 1) == VMIG_EPROTO && vm.cpus_in_len == 0,
          "beyond 1 MiB");
    free(big);
    CHECK(load(&vm, b2, l2, 1000) == 0 && kept_rip(&vm) == 0x2000, "after the refusal");
    free(b1);
    free(b2);
    free(b3);
    free(vm.cpus_kept);
    free(vm.cpus_in);
}

static size_t out_len(FILE *f)
{
    fflush(f);
    return (size_t)ftell(f);
}

static void test_console(void)
{
    struct minivm_console c;
    minivm_console_init(&c);
    char *text = NULL;
    size_t tlen = 0;
    c.out = open_memstream(&text, &tlen);
    minivm_console_line(&c, "before");
    CHECK(out_len(c.out) == strlen("guest: before\n"), "unprotected: printed at once");
    minivm_console_hold(&c, true);
    minivm_console_line(&c, "a1");
    minivm_console_line(&c, "a2");
    size_t at = out_len(c.out);
    minivm_console_release(&c); /* an ack before any pause releases nothing */
    CHECK(out_len(c.out) == at, "nothing sealed yet");
    minivm_console_seal(&c);       /* checkpoint 1's pause */
    minivm_console_line(&c, "b1"); /* after the resume */
    CHECK(out_len(c.out) == at, "held until the ack");
    minivm_console_release(&c); /* checkpoint 1 acknowledged */
    CHECK(out_len(c.out) == at + strlen("guest: a1\nguest: a2\n"), "checkpoint 1's lines");
    CHECK(!strcmp(text + at, "guest: a1\nguest: a2\n"), "in order: '%s'", text + at);
    at = out_len(c.out);
    minivm_console_release(&c); /* a second ack of the same seal */
    CHECK(out_len(c.out) == at, "b1 waits for its own checkpoint");
    minivm_console_seal(&c);
    minivm_console_line(&c, "c1");
    minivm_console_line(&c, "c2");
    uint64_t held, released, dropped;
    minivm_console_counts(&c, &held, &released, &dropped);
    CHECK(held == 3 && released == 2 && dropped == 0, "counts %llu %llu %llu",
          (unsigned long long)held, (unsigned long long)released, (unsigned long long)dropped);
    minivm_console_release(&c);
    CHECK(!strcmp(text + at, "guest: b1\n"), "checkpoint 2: '%s'", text + at);
    at = out_len(c.out);
    /* The protection ends: the rest comes out at once, and later lines too. */
    minivm_console_hold(&c, false);
    CHECK(!strcmp(text + at, "guest: c1\nguest: c2\n"), "released at the end: '%s'", text + at);
    minivm_console_line(&c, "after");
    minivm_console_counts(&c, &held, &released, &dropped);
    CHECK(held == 0 && released == 5, "all released (%llu, %llu)", (unsigned long long)held,
          (unsigned long long)released);
    CHECK(strstr(text, "guest: after\n"), "unprotected again");
    /* Held again (a second protection): the old seal is gone. */
    minivm_console_hold(&c, true);
    at = out_len(c.out);
    minivm_console_line(&c, "d1");
    minivm_console_release(&c);
    CHECK(out_len(c.out) == at, "a new protection starts with nothing sealed");
    minivm_console_hold(&c, false);
    fclose(c.out);
    c.out = NULL;
    free(text);
    minivm_console_free(&c);
}

int main(void)
{
    test_cpus_keep();
    test_console();
    if (failures) {
        fprintf(stderr, "test_minivm_colo: %d check(s) failed\n", failures);
        return 1;
    }
    fprintf(stderr, "test_minivm_colo: all checks passed\n");
    return 0;
}
