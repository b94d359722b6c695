// blkio: the block benchmark's job runner (bench/block.sh runs it on the emulated host and in
// its guests; tests/integration/linux_virtio.sh uses its polled read). Built as a static binary.
//   blkio seqwrite|seqread|randread PATH SECONDS [buffered|polled]
//       one job for SECONDS: 1 MiB sequential writes or reads, or 4 KiB reads at random
//       4 KiB-aligned offsets, over the first 128 MiB of PATH, one request at a time, O_DIRECT
//       unless buffered; polled: through a polling io_uring (below). Prints
//       "MODE kib_s=N iops=N ops=N".
//   blkio cat PATH [polled]
//       writes the first 4 KiB of PATH (read with O_DIRECT) to standard output.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

// A one-entry io_uring with IORING_SETUP_IOPOLL: the kernel submits each request as a polled
// bio and io_uring_enter() spins on the device's poll queue for its completion instead of
// sleeping until an interrupt (the guest's virtio_blk.poll_queues). Raw system calls: the
// guest has no liburing.
struct polled {
  int fd;
  unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe* sqe;
  struct io_uring_cqe* cqes;
};

static int polled_setup(struct polled* r) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_IOPOLL;
  r->fd = (int)syscall(__NR_io_uring_setup, 1, &p);
  if (r->fd < 0) return -1;
  char* sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  char* cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
                  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
  r->sqe = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
  if (sq == MAP_FAILED || cq == MAP_FAILED || r->sqe == MAP_FAILED) return -1;
  r->sq_tail = (unsigned*)(sq + p.sq_off.tail), r->sq_mask = (unsigned*)(sq + p.sq_off.ring_mask);
  r->sq_array = (unsigned*)(sq + p.sq_off.array);
  r->cq_head = (unsigned*)(cq + p.cq_off.head), r->cq_tail = (unsigned*)(cq + p.cq_off.tail);
  r->cq_mask = (unsigned*)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe*)(cq + p.cq_off.cqes);
  return 0;
}

// One request, waited for by polling; returns its result (bytes or -errno).
static long polled_io(struct polled* r, int fd, int writing, void* buf, size_t len, long long off) {
  const unsigned tail = *r->sq_tail;
  memset(r->sqe, 0, sizeof *r->sqe);
  r->sqe->opcode = writing ? IORING_OP_WRITE : IORING_OP_READ;
  r->sqe->fd = fd;
  r->sqe->addr = (unsigned long long)(unsigned long)buf;
  r->sqe->len = (unsigned)len;
  r->sqe->off = (unsigned long long)off;
  r->sq_array[tail & *r->sq_mask] = 0;
  __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
  if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) return -errno;
  unsigned head = *r->cq_head;
  while (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
    if (syscall(__NR_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
      return -errno;
  const long res = r->cqes[head & *r->cq_mask].res;
  __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
  return res;
}

// blkio cat PATH [polled]
static int cat_first_block(const char* path, int polling) {
  const int fd = open(path, O_RDONLY | O_DIRECT);
  if (fd < 0) return perror(path), 1;
  void* buf;
  if (posix_memalign(&buf, 4096, 4096) != 0) return 1;
  struct polled ring;
  if (polling && polled_setup(&ring) != 0) return perror("io_uring_setup(IOPOLL)"), 1;
  const long n = polling ? polled_io(&ring, fd, 0, buf, 4096, 0) : pread(fd, buf, 4096, 0);
  if (n < 0 && polling) return fprintf(stderr, "polled read: %s\n", strerror((int)-n)), 1;
  if (n != 4096) return perror("read"), 1;
  return fwrite(buf, 1, 4096, stdout) == 4096 ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc >= 3 && argc <= 4 && strcmp(argv[1], "cat") == 0)
    return cat_first_block(argv[2], argc == 4 && strcmp(argv[3], "polled") == 0);
  if (argc != 4 && argc != 5) {
    fprintf(stderr,
            "usage: blkio seqread|seqwrite|randread PATH SECONDS [buffered|polled]\n"
            "       blkio cat PATH [polled]\n");
    return 2;
  }
  const char* mode = argv[1];
  const int writing = strcmp(mode, "seqwrite") == 0;
  const int random = strcmp(mode, "randread") == 0;
  const size_t bs = random ? 4096 : 1 << 20;
  const long long span = 128ll << 20;  // bytes the job moves over
  const double seconds = atof(argv[3]);
  const int polling = argc == 5 && strcmp(argv[4], "polled") == 0;
  const int direct = argc == 4 || polling ? O_DIRECT : 0;
  const int fd = open(argv[2], (writing ? O_WRONLY : O_RDONLY) | direct);
  if (fd < 0) return perror(argv[2]), 1;
  void* buf;
  if (posix_memalign(&buf, 4096, bs) != 0) return 1;
  memset(buf, 0x5a, bs);
  struct polled ring;
  if (polling && polled_setup(&ring) != 0) return perror("io_uring_setup(IOPOLL)"), 1;
  unsigned long long seed = 88172645463325252ull ^ (unsigned long long)getpid(), ops = 0;
  long long off = 0;
  const double start = now();
  double elapsed = 0;
  while (elapsed < seconds) {
    if (random) {
      seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
      off = (long long)(seed % (unsigned long long)(span / (long long)bs)) * (long long)bs;
    }
    const ssize_t n = polling   ? polled_io(&ring, fd, writing, buf, bs, off)
                      : writing ? pwrite(fd, buf, bs, off)
                                : pread(fd, buf, bs, off);
    if (n < 0 && polling) return fprintf(stderr, "polled I/O: %s\n", strerror((int)-n)), 1;
    if (n != (ssize_t)bs) return perror("I/O"), 1;
    if (!random) off = (off + (long long)bs) % span;
    ++ops;
    if ((ops & 7) == 0 || !random) elapsed = now() - start;
  }
  elapsed = now() - start;
  printf("%s kib_s=%.0f iops=%.0f ops=%llu\n", mode, (double)ops * (double)bs / 1024 / elapsed,
         (double)ops / elapsed, ops);
  return 0;
}
