/* 32-bit entry (offset 0, unused by 64-bit loaders) and 64-bit entry (offset 0x200), as in
   a Linux bzImage's protected-mode payload. */
    .section .entry32, "ax"
    .code32
    .globl entry32
entry32:
    hlt
    jmp entry32

    .section .entry64, "ax"
    .code64
    .globl entry64
entry64:
    lea stack_top(%rip), %rsp
    mov %rsi, %rdi
    call kmain
1:  hlt
    jmp 1b

    .section .bss
    .balign 16
stack:
    .skip 16384
stack_top:
