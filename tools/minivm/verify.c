/*
 * Destination check of the workload invariant at host speed, before the
 * vCPUs resume. For workload page i with generation-table entry e:
 *   e == 0     the page is the mix content of its index;
 *   e even     the first MINIVM_STAMP_BYTES hold generation e / 2 (stamp
 *              {i, g} and minivm_pattern words), the rest is mix content;
 *   e odd      a write of g = (e + 1) / 2 was cut by the stop: each stamp
 *              word is of generation g or g - 1 (g - 1 == 0: mix content).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mix.h"
#include "minivm.h"

struct verify_job {
    struct minivm *vm;
    const struct minivm_config *c;
    const struct vmig_mix_run *runs;
    size_t first_run, end_run;
    uint64_t checked;
    uint64_t bad_index; /* UINT64_MAX: none */
    char msg[256];
};

static uint64_t stamp_word(uint64_t i, uint64_t g, uint64_t k, const uint64_t *mix)
{
    if (g == 0)
        return mix[k];
    return k == 0 ? i : k == 1 ? g : minivm_pattern(i, g, k);
}

static bool check_page(struct verify_job *j, uint64_t i, const uint64_t *page, const uint64_t *mix,
                       uint32_t e)
{
    const size_t nstamp = MINIVM_STAMP_BYTES / 8;
    uint64_t g = (e + 1) / 2;
    for (size_t k = 0; k < nstamp; k++) {
        uint64_t want = stamp_word(i, e / 2, k, mix);
        if (page[k] == want)
            continue;
        if (e & 1) {
            uint64_t alt = stamp_word(i, g, k, mix), alt2 = stamp_word(i, g - 1, k, mix);
            if (page[k] == alt || page[k] == alt2)
                continue;
        }
        snprintf(j->msg, sizeof(j->msg),
                 "page %llu (generation entry %u): word %zu is 0x%llx, expected 0x%llx",
                 (unsigned long long)i, e, k, (unsigned long long)page[k],
                 (unsigned long long)want);
        return false;
    }
    if (memcmp(page + nstamp, mix + nstamp, MINIVM_PAGE - MINIVM_STAMP_BYTES)) {
        size_t k = nstamp;
        while (page[k] == mix[k])
            k++;
        snprintf(j->msg, sizeof(j->msg),
                 "page %llu (generation entry %u): word %zu is 0x%llx, the mix content is "
                 "0x%llx",
                 (unsigned long long)i, e, k, (unsigned long long)page[k],
                 (unsigned long long)mix[k]);
        return false;
    }
    return true;
}

static void *verify_thread(void *arg)
{
    struct verify_job *j = arg;
    const struct minivm_config *c = j->c;
    const uint32_t *gen = minivm_gpa(j->vm, MINIVM_GEN_TABLE, 4 * (c->data_first + c->data_pages));
    uint64_t mix[MINIVM_PAGE / 8];
    for (size_t r = j->first_run; r < j->end_run; r++) {
        const struct vmig_mix_run *run = &j->runs[r];
        for (uint64_t p = run->first_page; p < run->first_page + run->npages; p++) {
            uint64_t i = c->data_first + p;
            vmig_mix_page_fill(c->seed, (enum vmig_mix_class)run->cls, p, mix);
            const uint64_t *page = minivm_page_ptr(j->vm, i);
            if (!page || !check_page(j, i, page, mix, gen[i])) {
                if (!page)
                    snprintf(j->msg, sizeof(j->msg), "page %llu is not in guest RAM",
                             (unsigned long long)i);
                j->bad_index = i;
                return NULL;
            }
            j->checked++;
        }
    }
    return NULL;
}

int minivm_verify(struct minivm *vm, uint64_t *checked, char *msg, size_t msglen)
{
    const struct minivm_config *c = minivm_config_page(vm);
    *checked = 0;
    if (!c || c->magic != MINIVM_CONFIG_MAGIC) {
        snprintf(msg, msglen, "the config page has no minivm magic");
        return -1;
    }
    uint64_t low = vm->slot[0].size / MINIVM_PAGE, high = vm->slot[1].size / MINIVM_PAGE;
    if (c->slot0_pages != low || c->slot1_pages != high || c->data_first >= low ||
        c->data_pages != low + high - c->data_first ||
        !minivm_gpa(vm, MINIVM_GEN_TABLE, 4 * (low + high))) {
        snprintf(msg, msglen, "the config page's layout does not match the RAM received");
        return -1;
    }
    struct vmig_mix_params mp;
    vmig_mix_params_default(&mp);
    mp.seed = c->seed;
    struct vmig_mix_plan *plan;
    if (vmig_mix_plan_create(&mp, c->data_pages, &plan)) {
        snprintf(msg, msglen, "cannot plan the mix");
        return -1;
    }
    size_t nruns;
    const struct vmig_mix_run *runs = vmig_mix_plan_runs(plan, &nruns);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned nt = ncpu < 1 ? 1 : ncpu > 16 ? 16 : (unsigned)ncpu;
    struct verify_job job[16];
    pthread_t th[16];
    bool started[16] = {0};
    for (unsigned t = 0; t < nt; t++) {
        job[t] = (struct verify_job){.vm = vm,
                                     .c = c,
                                     .runs = runs,
                                     .first_run = nruns * t / nt,
                                     .end_run = nruns * (t + 1) / nt,
                                     .bad_index = UINT64_MAX};
        if (t > 0)
            started[t] = pthread_create(&th[t], NULL, verify_thread, &job[t]) == 0;
    }
    verify_thread(&job[0]);
    for (unsigned t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            verify_thread(&job[t]);
    }
    int rc = 0;
    uint64_t first_bad = UINT64_MAX;
    for (unsigned t = 0; t < nt; t++) {
        *checked += job[t].checked;
        if (job[t].bad_index < first_bad) {
            first_bad = job[t].bad_index;
            snprintf(msg, msglen, "%s", job[t].msg);
            rc = -1;
        }
    }
    vmig_mix_plan_free(plan);
    return rc;
}
