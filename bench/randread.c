// randread: random 4 KiB O_DIRECT reads on a block device, for bench/vfio.sh (run in the
// emulated host and in its guest; built there as a static binary).
//   randread DEVICE COUNT   COUNT pread()s of 4 KiB at random 4 KiB-aligned offsets over the
//                           whole device, one at a time; prints
//                           "randread mib_s=X iops=Y ops=COUNT seconds=S"
//   randread --clock        prints CLOCK_MONOTONIC in seconds with nanoseconds (busybox's date
//                           has no %N; the script times its sequential dd with this)
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc == 2 && argv[1][0] == '-' && argv[1][1] == '-') {
    printf("%.9f\n", now());
    return 0;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: randread DEVICE COUNT | randread --clock\n");
    return 2;
  }
  const long count = strtol(argv[2], NULL, 10);
  if (count <= 0) return fprintf(stderr, "randread: COUNT must be positive\n"), 2;
  const int fd = open(argv[1], O_RDONLY | O_DIRECT);
  if (fd < 0) return perror(argv[1]), 1;
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
    const off_t end = lseek(fd, 0, SEEK_END);  // a regular file, for trying it out
    if (end < 0) return perror("size"), 1;
    size = (uint64_t)end;
  }
  const uint64_t blocks = size / 4096;
  if (blocks == 0) return fprintf(stderr, "randread: %s is smaller than 4 KiB\n", argv[1]), 1;
  void* buf;
  if (posix_memalign(&buf, 4096, 4096) != 0) return 1;
  // xorshift64, seeded from the clock: each round reads other blocks.
  uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)(now() * 1e9);
  const double start = now();
  for (long i = 0; i < count; ++i) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    const off_t off = (off_t)((seed % blocks) * 4096);
    if (pread(fd, buf, 4096, off) != 4096) return perror("pread"), 1;
  }
  const double seconds = now() - start;
  printf("randread mib_s=%.2f iops=%.0f ops=%ld seconds=%.3f\n",
         (double)count * 4096 / 1048576 / seconds, (double)count / seconds, count, seconds);
  return 0;
}
