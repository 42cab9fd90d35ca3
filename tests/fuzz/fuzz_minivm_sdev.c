/*
 * libFuzzer target: the state of minivm's synthetic device
 * (tools/minivm/sdev.c), the bytes a destination minivm takes from the
 * network into its device's buffer, chunk by chunk.
 *
 * Input: one byte that sets the chunk sizes, then the device's stream. A
 * 1 MiB device loads it; every load_chunk must return 0 or a refusal
 * (VMIG_EPROTO, VMIG_EINVAL), never write outside the buffer (ASan), and
 * load_done must accept exactly a whole state.
 */
#include <stdlib.h>
#include <string.h>

#include "minivm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct minivm_sdev *dev;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!dev && minivm_sdev_create(1u << 20, false, &dev))
        abort();
    size_t step = (size_t)data[0] * 97 + 1;
    data++;
    size--;
    minivm_sdev_reset_load(dev);
    size_t off = 0;
    int rc = 0;
    while (off < size && !rc) {
        size_t n = size - off < step ? size - off : step;
        /* An exact-size copy of each chunk: reads beyond it are ASan reports. */
        uint8_t *c = malloc(n);
        if (!c)
            abort();
        memcpy(c, data + off, n);
        rc = minivm_sdev_ops.load_chunk(dev, c, n);
        free(c);
        if (rc != 0 && rc != VMIG_EPROTO && rc != VMIG_EINVAL)
            __builtin_trap();
        off += n;
    }
    if (!rc) {
        int done = minivm_sdev_ops.load_done(dev);
        if ((done == 0) != (size == MINIVM_SDEV_HDR_LEN + (1u << 20)))
            __builtin_trap();
    }
    return 0;
}
