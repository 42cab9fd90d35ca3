/*
 * /proc/self/maps lines: "start-end perms offset dev inode [path]", sorted
 * by address. A private anonymous mapping has perms "..p" and inode 0 (its
 * path is empty or a name such as [heap], [stack] or [anon:NAME]); a
 * MAP_SHARED|MAP_ANONYMOUS one says "s" (shmem, "/dev/zero (deleted)").
 */
#include <inttypes.h>
#include <stdio.h>

#include "vma.h"

bool vmig_vma_private_anon(const void *addr, size_t len)
{
    uintptr_t at = (uintptr_t)addr, end = at + len;
    if (len == 0 || end < at)
        return false;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return false;
    char line[512];
    bool ok = false;
    while (at < end && fgets(line, sizeof(line), f)) {
        uintptr_t lo, hi;
        char perms[8];
        unsigned long long inode;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s %*s %*s %llu", &lo, &hi, perms, &inode) !=
            4)
            break;
        if (hi <= at)
            continue;
        if (lo > at || perms[3] != 'p' || inode != 0)
            break; /* a hole, or not private anonymous */
        at = hi;
        ok = at >= end;
    }
    fclose(f);
    return ok;
}
