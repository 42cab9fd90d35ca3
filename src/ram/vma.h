/*
 * What the kernel's memory map (/proc/self/maps) says about a range of this
 * process's memory.
 */
#ifndef VMIG_VMA_H
#define VMIG_VMA_H

#include "../base/base.h"

/*
 * True when every byte of [addr, addr + len) lies in private anonymous
 * mappings (MAP_PRIVATE | MAP_ANONYMOUS: the heap, malloc'd or mmap'd
 * memory, not a file, memfd or shared mapping), where a page with no page
 * table entry and no swap entry reads as zero. False when it cannot tell.
 * Reads /proc/self/maps: call it once per block, not per page.
 */
bool vmig_vma_private_anon(const void *addr, size_t len);

#endif /* VMIG_VMA_H */
