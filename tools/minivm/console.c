/*
 * The guest's console (its debug-port text) and output commit under
 * continuous checkpoints (minivm run --colo-primary).
 *
 * A protected guest's output must not leave the host before a checkpoint
 * that covers it is acknowledged: if the primary died after showing a line
 * that no checkpoint holds, the secondary would take over from a state in
 * which the line was never written, and the world would have seen an
 * output of a run that did not happen. So while held, complete lines go
 * into one buffer instead of stderr, and each checkpoint's pause (all
 * vCPUs stopped, so nothing is half way into the buffer) marks how much of
 * it that checkpoint covers:
 *
 *   buf  [ line line line | line line ........ ]
 *          ^ released      ^ sealed at the      ^ len: written after the
 *          (printed)         last pause           resume, waits for the
 *                                                 next checkpoint's pause
 *
 * The acknowledgement of that checkpoint prints and drops everything up to
 * the seal. Checkpoints are taken one after the other (the next pause comes
 * after the previous acknowledgement), so one seal is enough. A partial
 * line stays in its vCPU's line buffer until its newline, so it counts in
 * the checkpoint after the one that covered its first characters: later,
 * never earlier. When the protection ends, what is held is released at
 * once: the guest runs on unprotected, its output is this host's again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minivm.h"

void minivm_console_init(struct minivm_console *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
}

void minivm_console_free(struct minivm_console *c)
{
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = c->sealed = 0;
    pthread_mutex_destroy(&c->lock);
}

/* Print and drop the first n bytes, which hold `lines` lines (under c->lock). */
static void release_locked(struct minivm_console *c, size_t n, uint64_t lines)
{
    FILE *f = c->out ? c->out : stderr;
    if (n) {
        fwrite(c->buf, 1, n, f);
        fflush(f);
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
    }
    c->sealed = c->sealed > n ? c->sealed - n : 0;
    c->held_lines -= lines;
    c->released_lines += lines;
}

void minivm_console_line(struct minivm_console *c, const char *line)
{
    pthread_mutex_lock(&c->lock);
    if (!c->hold) {
        pthread_mutex_unlock(&c->lock);
        fprintf(c->out ? c->out : stderr, "guest: %s\n", line);
        return;
    }
    size_t n = strlen(line) + sizeof("guest: \n") - 1;
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n)
            cap *= 2;
        char *nb = cap <= MINIVM_CONSOLE_MAX ? realloc(c->buf, cap) : NULL;
        if (!nb) {
            /* Never released early: a line that cannot be held is lost
             * (and counted), as it would be if this host died now. */
            c->dropped++;
            pthread_mutex_unlock(&c->lock);
            return;
        }
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, "guest: ", 7);
    memcpy(c->buf + c->len + 7, line, n - 8);
    c->buf[c->len + n - 1] = '\n';
    c->len += n;
    c->held_lines++;
    pthread_mutex_unlock(&c->lock);
}

void minivm_console_hold(struct minivm_console *c, bool on)
{
    pthread_mutex_lock(&c->lock);
    if (!on)
        release_locked(c, c->len, c->held_lines);
    c->sealed = 0;
    c->sealed_lines = 0;
    c->hold = on;
    pthread_mutex_unlock(&c->lock);
}

void minivm_console_seal(struct minivm_console *c)
{
    pthread_mutex_lock(&c->lock);
    c->sealed = c->len;
    c->sealed_lines = c->held_lines;
    pthread_mutex_unlock(&c->lock);
}

void minivm_console_release(struct minivm_console *c)
{
    pthread_mutex_lock(&c->lock);
    release_locked(c, c->sealed, c->sealed_lines);
    c->sealed_lines = 0;
    pthread_mutex_unlock(&c->lock);
}

void minivm_console_counts(struct minivm_console *c, uint64_t *held, uint64_t *released,
                           uint64_t *dropped)
{
    pthread_mutex_lock(&c->lock);
    *held = c->held_lines;
    *released = c->released_lines;
    *dropped = c->dropped;
    pthread_mutex_unlock(&c->lock);
}
