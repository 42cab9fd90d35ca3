/* Shared by the guest's C files: the debug-port printer, port I/O, the TSC,
 * and the entry that guest_main gives to the 64-bit stubs of entry.S. */
#ifndef MINIVM_GUEST_H
#define MINIVM_GUEST_H

#include <stdint.h>

extern int guest_under_qemu;

void guest_outb(uint16_t port, uint8_t v);
uint8_t guest_inb(uint16_t port);
uint64_t guest_rdtsc(void);
void guest_puts(const char *s);
void guest_put_hex(uint64_t v);
void guest_put_dec(uint64_t v);

/* vCPU `vcpu` runs its role from the config page; never returns unless
 * the config is unusable (it halts then). */
void guest_main(uint64_t vcpu);
/* The multiboot path: fill the config page from the command line, then
 * guest_main(0). mbi: the multiboot information (physical), magic: EAX. */
void guest_multiboot_main(uint32_t mbi, uint32_t magic);

#endif
