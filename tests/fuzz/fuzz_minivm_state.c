/*
 * libFuzzer target: minivm's device-state blob (tools/minivm/vcpu_state_format.c),
 * the bytes a destination minivm takes from the source before it touches KVM.
 *
 * Input: one blob. minivm_state_parse() must return 0 or -1, and -1 only
 * with a sentence. A blob it accepts must be within the limits of the format
 * and re-serialize to the same bytes (the format is canonical).
 */
#include <stdlib.h>
#include <string.h>

#include "minivm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct minivm_state st;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: reads beyond it are ASan reports. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    memcpy(buf, data, size);
    char msg[256] = "";
    int rc = minivm_state_parse(buf, size, &st, msg, sizeof(msg));
    if (rc != 0 && (rc != -1 || !msg[0]))
        __builtin_trap();
    if (rc == 0) {
        if (msg[0] || st.nvcpus < 1 || st.nvcpus > MINIVM_MAX_VCPUS)
            __builtin_trap();
        for (unsigned i = 0; i < st.nvcpus; i++) {
            const struct minivm_vcpu_state *v = &st.vcpu[i];
            if (!(v->seen & (1u << MINIVM_SEC_REGS)) || !(v->seen & (1u << MINIVM_SEC_SREGS)) ||
                v->xcrs.nr_xcrs > KVM_MAX_XCRS || v->nmsrs > MINIVM_STATE_NMSRS)
                __builtin_trap();
        }
        void *re = NULL;
        size_t relen = 0;
        if (minivm_state_serialize(&st, &re, &relen))
            __builtin_trap();
        if (relen != size || memcmp(re, buf, size))
            __builtin_trap();
        free(re);
    }
    free(buf);
    return 0;
}
