/*
 * The synthetic device without KVM: port commands, the whole-buffer check
 * against the seeds and the guest's record, and loading its state from
 * chunks of odd sizes, with the refusals of a bad header or extra bytes.
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

static uint32_t io(struct minivm_sdev *d, unsigned vcpu, uint16_t port, bool out, uint32_t v)
{
    CHECK(minivm_sdev_io(d, vcpu, port, out, &v), "port 0x%x not the device's", port);
    return v;
}

/* Word k of region r through the ports of vCPU `vcpu`. */
static uint64_t read_word(struct minivm_sdev *d, unsigned vcpu, uint32_t r, uint32_t k)
{
    io(d, vcpu, MINIVM_PORT_DEV_SELECT, true, r << MINIVM_DEV_WORD_BITS | k);
    uint64_t lo = io(d, vcpu, MINIVM_PORT_DEV_LO, false, 0);
    return lo | (uint64_t)io(d, vcpu, MINIVM_PORT_DEV_HI, false, 0) << 32;
}

/* The state as save_final writes it: header, then the buffer. */
static uint8_t *saved(struct minivm_sdev *d, const uint8_t *buf, size_t *len)
{
    uint64_t size = minivm_sdev_size(d);
    uint8_t *s = malloc(MINIVM_SDEV_HDR_LEN + size);
    minivm_sdev_header(d, s);
    memcpy(s + MINIVM_SDEV_HDR_LEN, buf, size);
    *len = MINIVM_SDEV_HDR_LEN + size;
    return s;
}

/* One load as vmig makes it: chunks in order, then load_done. */
static int load_cycle(struct minivm_sdev *d, const uint8_t *s, size_t len, size_t step)
{
    for (size_t off = 0; off < len;) {
        size_t n = len - off < step ? len - off : step;
        int rc = minivm_sdev_ops.load_chunk(d, s + off, n);
        if (rc)
            return rc;
        off += n;
        step = step * 3 + 1; /* uneven */
    }
    return minivm_sdev_ops.load_done(d);
}

static int load_all(struct minivm_sdev *d, const uint8_t *s, size_t len, size_t step)
{
    minivm_sdev_reset_load(d);
    return load_cycle(d, s, len, step);
}

int main(void)
{
    const uint64_t size = 1u << 20;
    struct minivm_sdev *src, *dst;
    CHECK(minivm_sdev_create(size + 4096, true, &src) < 0, "a size not a multiple of 1 MiB");
    if (minivm_sdev_create(size, true, &src) || minivm_sdev_create(size, false, &dst)) {
        fprintf(stderr, "cannot create the devices\n");
        return 1;
    }
    uint64_t words = minivm_sdev_region_words(src);
    CHECK(words == size / MINIVM_DEV_REGIONS / 8, "region words %llu", (unsigned long long)words);
    struct minivm_config *c = calloc(1, sizeof(*c));
    uint64_t cmds;
    char msg[256];
    CHECK(minivm_sdev_verify(src, c, &cmds, msg, sizeof(msg)) == 0 && cmds == 0, "fresh: %s", msg);
    CHECK(read_word(src, 0, 7, 3) == minivm_dev_word(7, 0, 3), "seed-0 content");

    /* Rewrites: the guest records each seed; a replayed command changes nothing. */
    for (uint32_t i = 0; i < 40; i++) {
        uint32_t r = (i * 37) % MINIVM_DEV_REGIONS, seed = (i * 0x9E37u + 1) & MINIVM_DEV_SEED_MASK;
        c->dev_seed[r] = seed;
        io(src, 0, MINIVM_PORT_DEV_REWRITE, true, r << 24 | seed);
        if (i == 5)
            io(src, 0, MINIVM_PORT_DEV_REWRITE, true, r << 24 | seed);
    }
    CHECK(read_word(src, 1, 37, words - 1) == minivm_dev_word(37, c->dev_seed[37], words - 1),
          "word after a rewrite");
    CHECK(minivm_sdev_verify(src, c, &cmds, msg, sizeof(msg)) == 0 && cmds == 41, "%s (%llu)", msg,
          (unsigned long long)cmds);
    /* Selections are per vCPU; one beyond the region reads all ones. */
    io(src, 2, MINIVM_PORT_DEV_SELECT, true, 3u << MINIVM_DEV_WORD_BITS | (uint32_t)words);
    io(src, 3, MINIVM_PORT_DEV_SELECT, true, 3u << MINIVM_DEV_WORD_BITS);
    CHECK(io(src, 2, MINIVM_PORT_DEV_LO, false, 0) == 0xffffffffu, "word past the region");
    CHECK(io(src, 3, MINIVM_PORT_DEV_LO, false, 0) ==
              (uint32_t)minivm_dev_word(3, c->dev_seed[3], 0),
          "vCPU 3's own selection");
    uint32_t v = 0;
    CHECK(!minivm_sdev_io(src, 0, 0x520, false, &v), "0x520 is not the device's");

    /* The guest's record disagrees: refused, unless that rewrite was in flight. */
    c->dev_seed[100] ^= 1;
    CHECK(minivm_sdev_verify(src, c, &cmds, msg, sizeof(msg)) < 0 && strstr(msg, "region 100"),
          "record mismatch: %s", msg);
    c->dev_busy = 101;
    CHECK(minivm_sdev_verify(src, c, &cmds, msg, sizeof(msg)) == 0, "in flight: %s", msg);
    c->dev_seed[100] ^= 1;
    c->dev_busy = 0;

    /* Loading in odd chunks gives the same device; a flipped bit is found. */
    uint8_t *copy = malloc(size);
    for (uint32_t r = 0; r < MINIVM_DEV_REGIONS; r++)
        for (uint64_t k = 0; k < words; k++) {
            uint64_t w = read_word(src, 0, r, (uint32_t)k);
            memcpy(copy + (r * words + k) * 8, &w, 8);
        }
    size_t len;
    uint8_t *st = saved(src, copy, &len);
    CHECK(load_all(dst, st, len, 1) == 0, "load from 1-byte first chunk");
    CHECK(minivm_sdev_verify(dst, c, &cmds, msg, sizeof(msg)) == 0 && cmds == 41, "loaded: %s",
          msg);
    CHECK(load_all(dst, st, len, 70000) == 0, "load from 70000-byte chunks");
    st[MINIVM_SDEV_HDR_LEN + 12345] ^= 4;
    CHECK(load_all(dst, st, len, 4096) == 0, "a corrupted buffer still loads");
    CHECK(minivm_sdev_verify(dst, c, &cmds, msg, sizeof(msg)) < 0 && strstr(msg, "word"),
          "corrupted word found: %s", msg);
    st[MINIVM_SDEV_HDR_LEN + 12345] ^= 4;
    /* Refusals: magic, size, a seed beyond 24 bits, bytes beyond the end, too few. */
    st[0] ^= 1;
    CHECK(load_all(dst, st, len, 4096) == VMIG_EPROTO && strstr(minivm_sdev_refusal(dst), "magic"),
          "bad magic: %s", minivm_sdev_refusal(dst));
    st[0] ^= 1;
    st[9] ^= 1;
    CHECK(load_all(dst, st, len, 4096) == VMIG_EINVAL &&
              strstr(minivm_sdev_refusal(dst), "--device-state"),
          "other size: %s", minivm_sdev_refusal(dst));
    st[9] ^= 1;
    st[32 + 3] = 1;
    CHECK(load_all(dst, st, len, 4096) == VMIG_EPROTO, "seed beyond 24 bits");
    st[32 + 3] = 0;
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, st, len);
    longer[len] = 0;
    CHECK(load_all(dst, longer, len + 1, 4096) == VMIG_EPROTO, "a byte too many");
    CHECK(load_all(dst, st, len - 1, 4096) == VMIG_EPROTO &&
              strstr(minivm_sdev_refusal(dst), "bytes arrived"),
          "a byte too few: %s", minivm_sdev_refusal(dst));
    CHECK(load_all(dst, st, len, 4096) == 0 && !minivm_sdev_refusal(dst)[0], "no refusal");

    /* A COLO secondary: one load per checkpoint, back to back, without a
     * reset; each replaces the state of the one before (here: a region
     * rewritten between the two saves, and a selection changed). */
    uint64_t loads = minivm_sdev_loads(dst);
    CHECK(load_cycle(dst, st, len, 5000) == 0, "checkpoint 1: %s", minivm_sdev_refusal(dst));
    uint32_t seed9 = c->dev_seed[9];
    io(src, 0, MINIVM_PORT_DEV_REWRITE, true, 9u << 24 | 0x1234);
    c->dev_seed[9] = 0x1234;
    io(src, 1, MINIVM_PORT_DEV_SELECT, true, 9u << MINIVM_DEV_WORD_BITS | 2);
    for (uint64_t k = 0; k < words; k++) {
        uint64_t w = read_word(src, 0, 9, (uint32_t)k);
        memcpy(copy + (9 * words + k) * 8, &w, 8);
    }
    uint8_t *st2 = saved(src, copy, &len);
    CHECK(load_cycle(dst, st2, len, 3) == 0, "checkpoint 2: %s", minivm_sdev_refusal(dst));
    CHECK(minivm_sdev_loads(dst) == loads + 2, "loads counted: %llu",
          (unsigned long long)(minivm_sdev_loads(dst) - loads));
    CHECK(minivm_sdev_verify(dst, c, &cmds, msg, sizeof(msg)) == 0 && cmds == 42,
          "after checkpoint 2: %s (%llu)", msg, (unsigned long long)cmds);
    CHECK(io(dst, 1, MINIVM_PORT_DEV_LO, false, 0) == (uint32_t)minivm_dev_word(9, 0x1234, 2),
          "checkpoint 2's selection of vCPU 1");
    /* A load that fell short does not poison the next one. */
    CHECK(load_cycle(dst, st2, len / 2, 4096) == VMIG_EPROTO, "half a load is refused");
    CHECK(load_cycle(dst, st, len, 4096) == 0, "the next full load: %s", minivm_sdev_refusal(dst));
    c->dev_seed[9] = seed9;
    CHECK(minivm_sdev_verify(dst, c, &cmds, msg, sizeof(msg)) == 0 && cmds == 41,
          "back at checkpoint 1's state: %s", msg);
    free(st2);
    free(longer);
    free(st);
    free(copy);
    free(c);
    minivm_sdev_free(src);
    minivm_sdev_free(dst);
    if (failures) {
        fprintf(stderr, "test_minivm_sdev: %d check(s) failed\n", failures);
        return 1;
    }
    fprintf(stderr, "test_minivm_sdev: all checks passed\n");
    return 0;
}
