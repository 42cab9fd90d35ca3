/*
 * The destination's queue of one device's state chunks: chunks arrive on
 * any data channel in any order, each with its index; the device's load
 * thread takes them strictly in index order, while more arrive.
 *
 *   channel threads ── put(index, buf) ──▶ [held: out of order] ──▶ get() ── load thread
 *                                          bounded by `limit` bytes
 *
 * Memory: chunks that arrive before their turn are held, up to `limit`
 * bytes for the queue. A channel whose chunk does not fit waits in put()
 * until the load thread has taken enough; the chunk whose turn it is never
 * waits (it goes straight to the load thread), so a full queue cannot
 * deadlock as long as the source sends each device's chunks in index order
 * over its channels (every channel's oldest chunk is then either the next
 * one or behind it). A single chunk larger than the limit is accepted only
 * in its turn.
 *
 * Every index is checked: a chunk seen twice, one below the next expected,
 * one after the chunk marked last, a second "last", or an index beyond
 * VMIG_DEVQ_MAX_CHUNKS is a clean error that fails the queue (every waiter
 * returns it), never a write anywhere.
 *
 * Threads: put() from any number of channel threads, get() from the one
 * load thread, fail() from anyone; create and free by the owner when
 * nobody else uses the queue.
 */
#ifndef VMIG_DEVQ_H
#define VMIG_DEVQ_H

#include "../base/base.h"

/* Chunks per device and run: 2^24 (16 TiB at 1 MiB chunks). */
#define VMIG_DEVQ_MAX_CHUNKS (1u << 24)

typedef struct vmig_devq vmig_devq;

/* `name` ("gpu0/1") is used in error sentences; limit >= 1. */
int vmig_devq_create(const char *name, uint64_t limit, vmig_devq **out, vmig_error *err);
/* NULL: no-op. Frees chunks still held. */
void vmig_devq_free(vmig_devq *q);

/*
 * Hand over chunk `index` (buf of len bytes, malloc'd; the queue owns it
 * from this call on, whatever it returns). `last`: no chunk comes after
 * it. Waits while the chunk is not the next one and does not fit. Returns
 * 0, the queue's error (VMIG_EPROTO for a bad index, or what fail() was
 * given) with a sentence.
 */
int vmig_devq_put(vmig_devq *q, uint32_t index, void *buf, size_t len, bool last, vmig_error *err);

/*
 * The load thread: the next chunk in order, waiting for it. *buf (the
 * caller frees it), *len, *last. Returns 0, VMIG_ENOENT after the last
 * chunk has been taken, or the queue's error.
 */
int vmig_devq_get(vmig_devq *q, void **buf, size_t *len, bool *last, vmig_error *err);

/*
 * No chunk will be put any more (the source finished): a queue that has
 * not received its last chunk, or misses one before it, fails with
 * VMIG_EPROTO naming what is missing; the load thread then returns from
 * get() with that error. Returns 0 or the queue's error.
 */
int vmig_devq_close(vmig_devq *q, vmig_error *err);

/* Fail the queue (first error wins): wakes every waiter with it. */
void vmig_devq_fail(vmig_devq *q, int code, const char *msg);

/* Statistics: bytes held out of order now and at most, chunks taken. */
void vmig_devq_stats(vmig_devq *q, uint64_t *held, uint64_t *held_max, uint32_t *taken);

#endif /* VMIG_DEVQ_H */
