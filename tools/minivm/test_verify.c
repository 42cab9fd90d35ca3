/*
 * minivm's destination check (verify.c) without KVM: a guest RAM image is
 * built as the VMM and the guest would leave it (the content mix, pages
 * written under the generation table's seqlock, a write cut in the middle),
 * then damaged in each way the check must catch. Exit 0 pass, 1 fail.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "minivm.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define MEM (64ull << 20)

static uint32_t *gen_table(struct minivm *vm)
{
    return minivm_gpa(vm, MINIVM_GEN_TABLE, 4);
}

/* What the guest's writer does to page i (generation g), in full. */
static void guest_write(struct minivm *vm, uint64_t i, uint32_t g)
{
    uint64_t *pg = minivm_page_ptr(vm, i);
    pg[0] = i;
    pg[1] = g;
    for (unsigned k = 2; k < MINIVM_STAMP_BYTES / 8; k++)
        pg[k] = minivm_pattern(i, g, k);
    gen_table(vm)[i] = 2 * g;
}

static int verify(struct minivm *vm, uint64_t *n, char *msg)
{
    return minivm_verify(vm, n, msg, 300);
}

int main(void)
{
    struct minivm vm = {.kvm_fd = -1, .vm_fd = -1};
    uint8_t *ram = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    vm.slot[0] = (struct minivm_slot){.host = ram, .gpa = 0, .size = MEM};
    struct minivm_config *c = minivm_config_page(&vm);
    c->magic = MINIVM_CONFIG_MAGIC;
    c->seed = 7;
    c->slot0_pages = MEM / MINIVM_PAGE;
    c->data_first = MINIVM_DATA_START / MINIVM_PAGE;
    c->data_pages = c->slot0_pages - c->data_first;
    if (minivm_fill_mix(&vm, c->seed)) {
        fprintf(stderr, "FAIL: minivm_fill_mix\n");
        return 1;
    }
    uint64_t n = 0;
    char msg[300] = "";
    CHECK(verify(&vm, &n, msg) == 0, "fresh image: %s", msg);
    CHECK(n == c->data_pages, "fresh image: %llu pages checked, want %llu", (unsigned long long)n,
          (unsigned long long)c->data_pages);

    /* Pages written by the guest, some several times. */
    uint64_t first = c->data_first, last = c->data_first + c->data_pages - 1;
    for (uint64_t i = first; i < first + 1000; i += 3)
        guest_write(&vm, i, 1);
    guest_write(&vm, first + 3, 2);
    guest_write(&vm, last, 5);
    CHECK(verify(&vm, &n, msg) == 0, "written pages: %s", msg);

    /* A write cut by the stop: entry odd, the first words of generation 3,
     * the rest still of 2 -- allowed. */
    uint64_t i = first + 3, *pg = minivm_page_ptr(&vm, i);
    gen_table(&vm)[i] = 2 * 3 - 1;
    pg[0] = i;
    pg[1] = 3;
    pg[2] = minivm_pattern(i, 3, 2);
    CHECK(verify(&vm, &n, msg) == 0, "torn write: %s", msg);
    /* ... but not a word of neither generation. */
    pg[4] = 0x1234;
    CHECK(verify(&vm, &n, msg) != 0 && strstr(msg, "word 4"), "torn write with garbage: '%s'", msg);
    guest_write(&vm, i, 3);
    CHECK(verify(&vm, &n, msg) == 0, "rewritten: %s", msg);

    /* One flipped bit in the mix part of a written page. */
    i = first + 6;
    pg = minivm_page_ptr(&vm, i);
    pg[100] ^= 1;
    CHECK(verify(&vm, &n, msg) != 0 && strstr(msg, "word 100"), "mix bit flip: '%s'", msg);
    pg[100] ^= 1;
    /* A stamp of the wrong generation (a lost write: the page is older
     * than the table says). */
    pg[1] = 0;
    CHECK(verify(&vm, &n, msg) != 0 && strstr(msg, "word 1"), "stale stamp: '%s'", msg);
    guest_write(&vm, i, 1);
    /* A page never written by the guest that lost its content (a zero page
     * where the mix has data, or the other way round). */
    for (i = first; i <= last; i++) {
        pg = minivm_page_ptr(&vm, i);
        if (gen_table(&vm)[i] == 0 && pg[0] != 0)
            break;
    }
    CHECK(i <= last, "no non-zero mix page found");
    uint64_t saved = pg[0];
    pg[0] = 0;
    CHECK(verify(&vm, &n, msg) != 0 && strstr(msg, "word 0"), "lost mix page: '%s'", msg);
    char want[64];
    snprintf(want, sizeof(want), "page %llu ", (unsigned long long)i);
    CHECK(strstr(msg, want) != NULL, "the message must name page %llu: '%s'", (unsigned long long)i,
          msg);
    pg[0] = saved;
    CHECK(verify(&vm, &n, msg) == 0, "restored: %s", msg);

    /* A config page that does not match the RAM (hostile or damaged). */
    c->data_pages++;
    CHECK(verify(&vm, &n, msg) != 0 && strstr(msg, "layout"), "bad layout: '%s'", msg);
    c->data_pages--;
    c->magic = 0;
    CHECK(verify(&vm, &n, msg) != 0 && strstr(msg, "magic"), "bad magic: '%s'", msg);

    munmap(ram, MEM);
    if (failures)
        return 1;
    printf("test_verify: all checks passed\n");
    return 0;
}
