/*
 * Store-buffering litmus test between a TCG guest and a host process (docs/findings.md,
 * "QEMU 7.2's TCG drops a single-CPU guest's memory barriers"). test/guest/tcg-barriers.test.ts
 * builds it twice: static for the guest (`sb-litmus guest`) and for the host
 * (`sb-litmus host RAMFILE PFN ROUNDS SECONDS`).
 *
 * Round i, on one page of guest memory that the host maps from the guest's RAM file:
 *   guest: X = i; smp_mb() (Linux x86-64's, the one virtio_mb() is); r1 = Y
 *   host:  Y = i; mfence;                                               r2 = X
 * This is the handshake of split-ring notification suppression (2.7.10): the driver publishes
 * avail.idx then reads avail_event, the device publishes avail_event then reads avail.idx (and
 * the same with used.idx / used_event). With both barriers working, at least one side sees the
 * other's store: r1 < i && r2 < i is forbidden. The host counts the rounds where it happened
 * (each is a lost kick or a lost interrupt waiting to happen).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* One 32-bit word per cache line: X, Y, the host's round, the guest's round done, r1, a magic. */
enum { X = 0, Y = 64, ROUND = 128, DONE = 192, R1 = 256, MAGIC = 320 };
#define W(p, off) (*(volatile uint32_t *)((p) + (off)))
#define MAGIC_VALUE 0x5b5b5b5bu
#define STOP 0xffffffffu

static int guest(void) {
  char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
  if (p == MAP_FAILED) return perror("mmap"), 1;
  memset(p, 0, 4096);
  /* The page's frame: /proc/self/pagemap, bits 0-54 (root sees them). */
  int fd = open("/proc/self/pagemap", O_RDONLY);
  uint64_t e = 0;
  if (fd < 0 || pread(fd, &e, 8, (off_t)((uintptr_t)p / 4096) * 8) != 8 || !(e >> 63)) return perror("pagemap"), 1;
  W(p, MAGIC) = MAGIC_VALUE;
  printf("SB-PFN %llu\n", (unsigned long long)(e & ((1ULL << 55) - 1)));
  fflush(stdout);
  unsigned seed = 1;
  for (uint32_t i = 1;; i++) {
    uint32_t r;
    while ((r = W(p, ROUND)) != i) {
      if (r == STOP) return printf("SB-GUEST rounds %u\n", i - 1), 0;
    }
    /* A random delay so that the two sides' stores and loads meet in every alignment. */
    seed = seed * 1103515245 + 12345;
    for (volatile unsigned d = (seed >> 16) % 64; d > 0; d--) {}
    W(p, X) = i;
    __asm__ volatile("lock; addl $0,-4(%%rsp)" ::: "memory", "cc");
    W(p, R1) = W(p, Y);
    W(p, DONE) = i;
  }
}

static int host(const char *ram, unsigned long long pfn, unsigned rounds, int seconds) {
  int fd = open(ram, O_RDWR);
  if (fd < 0) return perror(ram), 1;
  char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)(pfn * 4096));
  if (p == MAP_FAILED) return perror("mmap"), 1;
  if (W(p, MAGIC) != MAGIC_VALUE) return printf("SB-HOST not the guest's page (magic %x)\n", W(p, MAGIC)), 1;
  unsigned seed = 7, forbidden = 0, i;
  time_t end = time(NULL) + seconds;
  for (i = 1; i <= rounds && time(NULL) < end; i++) {
    W(p, ROUND) = i;
    seed = seed * 1103515245 + 12345;
    for (volatile unsigned d = (seed >> 16) % 512; d > 0; d--) {}
    W(p, Y) = i;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t r2 = W(p, X);
    while (W(p, DONE) != i) {}
    if (W(p, R1) < i && r2 < i) forbidden++;
  }
  W(p, ROUND) = STOP;
  printf("SB-HOST rounds %u forbidden %u\n", i - 1, forbidden);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "guest") == 0) return guest();
  if (argc == 6 && strcmp(argv[1], "host") == 0) return host(argv[2], strtoull(argv[3], NULL, 10), (unsigned)atoi(argv[4]), atoi(argv[5]));
  fprintf(stderr, "usage: sb-litmus guest | sb-litmus host RAMFILE PFN ROUNDS SECONDS\n");
  return 2;
}
