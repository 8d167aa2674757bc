; The guest's only ring-0 code. Every path leaves the VM with one `out` (a KVM_EXIT_IO the host's
; vCPU loop handles) and returns to ring 3. Offsets must match layout.hpp.
BITS 64
DEFAULT ABS

SYSCALL_PORT   equ 0x10
EXCEPTION_PORT equ 0x20

; 0x000, MSR_LSTAR. The host reads the syscall from the registers, writes the result to rax and
; resumes after the `out`. rcx/r11 hold the user rip/rflags as the syscall instruction left them.
syscall_entry:
    out SYSCALL_PORT, al
    o64 sysret

times 0x40 - ($ - $$) db 0xf4
; 0x040: the host placed an iretq frame at rsp (signal delivery, sigreturn, thread switch).
iret_entry:
    iretq

times 0x60 - ($ - $$) db 0xf4
; 0x060: like iret_entry, after flushing the TLB because the host removed or reduced page mappings.
; rcx is clobbered by the syscall ABI anyway; leave it as sysret would (the user rip).
flush_iret_entry:
    mov rcx, cr3
    mov cr3, rcx
    mov rcx, [rsp]
    iretq

times 0x100 - ($ - $$) db 0xf4
; 0x100: one 16-byte stub per exception vector, all on IST1. The port number names the vector; the
; frame (error code when the vector has one, rip, cs, rflags, rsp, ss) is at rsp.
%assign vector 0
%rep 32
    out EXCEPTION_PORT + vector, al
    hlt
    align 16, db 0xf4
%assign vector vector + 1
%endrep
