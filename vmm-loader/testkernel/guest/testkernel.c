/*
 * jek test kernel: a few hundred bytes of x86-64 that a loader boots like Linux (64-bit
 * boot protocol: long mode, identity-mapped, RSI = zero page) and that reports over COM1
 * exactly what it received, then resets through the i8042 (0xFE to port 0x64).
 *
 * Report, one line each (all numbers hex):
 *   JEKTEST start
 *   JEKTEST boot_flag=aa55 header=53726448 loader=<type_of_loader>
 *   JEKTEST cmdline=<the zero-terminated command line>
 *   JEKTEST e820 count=<n>
 *   JEKTEST e820 <addr> <size> <type>         (n times)
 *   JEKTEST initrd addr=<a> size=<s> fnv1a=<32-bit FNV-1a of the bytes>
 *   JEKTEST done
 *   JEK-POWEROFF {"status":0}                 (jek-init's power-off line, so that
 *                                             `jek boot` sees a pod that ended cleanly)
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define COM1 0x3f8

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc(char c) {
    while (!(inb(COM1 + 5) & 0x20)) { }
    outb(COM1, (u8)c);
}
static void puts(const char *s) { while (*s) putc(*s++); }
static void hex(u64 v) {
    char buf[17];
    int i = 16;
    buf[16] = 0;
    do { buf[--i] = "0123456789abcdef"[v & 0xf]; v >>= 4; } while (v && i > 0);
    puts(&buf[i]);
}
static u8 r8(const u8 *zp, u32 off) { return zp[off]; }
static u16 r16(const u8 *zp, u32 off) { return (u16)(zp[off] | (zp[off + 1] << 8)); }
static u32 r32(const u8 *zp, u32 off) { return (u32)r16(zp, off) | ((u32)r16(zp, off + 2) << 16); }
static u64 r64(const u8 *zp, u32 off) { return (u64)r32(zp, off) | ((u64)r32(zp, off + 4) << 32); }

void kmain(const u8 *zp) {
    puts("JEKTEST start\n");
    puts("JEKTEST boot_flag="); hex(r16(zp, 0x1fe));
    puts(" header="); hex(r32(zp, 0x202));
    puts(" loader="); hex(r8(zp, 0x210));
    puts("\n");

    u64 cmd = (u64)r32(zp, 0x228) | ((u64)r32(zp, 0x0c8) << 32);
    puts("JEKTEST cmdline=");
    if (cmd) puts((const char *)cmd);
    puts("\n");

    u32 n = r8(zp, 0x1e8);
    puts("JEKTEST e820 count="); hex(n); puts("\n");
    for (u32 i = 0; i < n && i < 128; i++) {
        u32 e = 0x2d0 + i * 20;
        puts("JEKTEST e820 "); hex(r64(zp, e));
        puts(" "); hex(r64(zp, e + 8));
        puts(" "); hex(r32(zp, e + 16));
        puts("\n");
    }

    u64 rd = (u64)r32(zp, 0x218) | ((u64)r32(zp, 0x0c0) << 32);
    u64 rs = (u64)r32(zp, 0x21c) | ((u64)r32(zp, 0x0c4) << 32);
    u32 h = 0x811c9dc5u;
    const volatile u8 *p = (const volatile u8 *)rd;
    for (u64 i = 0; i < rs; i++) { h ^= p[i]; h *= 0x01000193u; }
    puts("JEKTEST initrd addr="); hex(rd);
    puts(" size="); hex(rs);
    puts(" fnv1a="); hex(h);
    puts("\n");
    puts("JEKTEST done\n");
    puts("JEK-POWEROFF {\"status\":0}\n");
    outb(0x64, 0xfe);
    for (;;) __asm__ volatile("hlt");
}
