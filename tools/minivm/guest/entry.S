/*
 * Entries of the minivm guest.
 *
 *   0x100000  _start       minivm: 64-bit long mode already, RDI = vCPU
 *                          index, RSP = its stack top (guest_abi.h)
 *   +0x10     multiboot v1 header (a.out kludge: QEMU refuses 64-bit ELF
 *             multiboot kernels, but loads these addresses from any file)
 *   mb_entry               multiboot: 32-bit protected mode, paging off,
 *                          EAX = magic, EBX = multiboot info; builds its own
 *                          GDT and page tables (first 4 GiB, 2 MiB pages),
 *                          enters long mode, guest_multiboot_main(EBX, EAX)
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00010002 /* memory info, a.out kludge addresses */

#define CR0_PE (1 << 0)
#define CR0_MP (1 << 1)
#define CR0_EM (1 << 2)
#define CR0_ET (1 << 4)
#define CR0_NE (1 << 5)
#define CR0_WP (1 << 16)
#define CR0_NW (1 << 29)
#define CR0_CD (1 << 30)
#define CR0_PG (1 << 31)
#define CR4_PAE (1 << 5)
#define CR4_OSFXSR (1 << 9)
#define CR4_OSXMMEXCPT (1 << 10)
#define MSR_EFER 0xC0000080
#define EFER_LME (1 << 8)

#define MB_STACK_TOP (0x20000 + 0x4000) /* vCPU 0's stack of guest_abi.h */

    .section .text.start, "ax"
    .code64
    .globl _start
_start:
    cld
    call guest_main /* RDI = vCPU index, as the VMM set it */
1:  cli
    hlt
    jmp 1b

    .p2align 4
    .globl mb_header
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header      /* header_addr */
    .long __image_start  /* load_addr */
    .long __load_end     /* load_end_addr */
    .long __bss_end      /* bss_end_addr */
    .long mb_entry       /* entry_addr */

    .code32
    .globl mb_entry
mb_entry:
    cli
    cld
    mov %eax, %ebp /* magic */
    mov %ebx, %esi /* multiboot info */
    lgdt mb_gdt_ptr
    ljmp $0x18, $2f
2:  mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $MB_STACK_TOP, %esp

    /* PML4, PDPT, 4 page directories: 6 pages in .bss, cleared first. */
    mov $mb_pml4, %edi
    xor %eax, %eax
    mov $(6 * 1024), %ecx
    rep stosl
    movl $(mb_pdpt + 3), mb_pml4
    mov $mb_pdpt, %edi
    mov $(mb_pd + 3), %eax
    mov $4, %ecx
3:  mov %eax, (%edi)
    add $8, %edi
    add $0x1000, %eax
    loop 3b
    mov $mb_pd, %edi
    mov $0x83, %eax /* present, writable, 2 MiB */
    mov $2048, %ecx
4:  mov %eax, (%edi)
    add $8, %edi
    add $0x200000, %eax
    loop 4b

    mov %cr4, %eax
    or $(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
    mov %eax, %cr4
    mov $mb_pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    and $~(CR0_EM | CR0_NW | CR0_CD), %eax
    or $(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG), %eax
    mov %eax, %cr0
    ljmp $0x08, $mb_long

    .code64
mb_long:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $MB_STACK_TOP, %rsp
    mov %esi, %edi /* mbi */
    mov %ebp, %esi /* magic */
    call guest_multiboot_main
5:  cli
    hlt
    jmp 5b

    .section .rodata
    .p2align 3
/* Same selectors as minivm's GDT, plus 0x18: 32-bit code for mb_entry. */
mb_gdt:
    .quad 0
    .quad 0x00af9a000000ffff /* 0x08 64-bit code */
    .quad 0x00cf92000000ffff /* 0x10 data */
    .quad 0x00cf9a000000ffff /* 0x18 32-bit code */
mb_gdt_end:
mb_gdt_ptr:
    .word mb_gdt_end - mb_gdt - 1
    .long mb_gdt

    .section .bss
    .p2align 12
mb_pml4: .skip 0x1000
mb_pdpt: .skip 0x1000
mb_pd:   .skip 0x4000

    .section .note.GNU-stack, "", @progbits
