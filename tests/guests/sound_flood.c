/*
 * A hostile sound driver: a freestanding x86_64 guest (packaged as a bzImage by
 * sound_flood_entry.S and sound_flood.ld) that drives vmm's virtio-snd device directly through
 * its virtio-mmio registers, next to the serial console (COM1) and a virtio-rng device, to show
 * that a guest sending malformed sound requests in a loop stops neither of them:
 *
 *   1. finds the devices from the kernel command line (vmm adds virtio_mmio.device=SIZE@BASE:IRQ
 *      when it has acpi=off) and sets up virtio-snd (controlq, eventq, txq, rxq) and virtio-rng;
 *   2. ROUNDS rounds (the command line's "rounds=N", default 200), each of them every malformed
 *      request of virtIO 1.2 section 5.14 on the control, tx and rx queues (unknown code, bad
 *      stream and jack ids, parameters outside PCM_INFO, partial frames, I/O on a stream that
 *      is not started, messages in the wrong direction, too-short response and status buffers,
 *      a request without a response buffer), checking that each one comes back with the status
 *      it deserves; after every round a virtio-rng request must be answered and a line goes to
 *      COM1;
 *   3. then a well-formed playback (SET_PARAMS, PREPARE, START, two periods of tx, STOP,
 *      RELEASE): the stream was left in no impossible state;
 *   4. then a chain the virtqueue layer must refuse (a descriptor loop) on the control queue:
 *      that queue breaks (the device asks for a reset), while virtio-rng and COM1 go on; after a
 *      device reset and a new setup, PCM_INFO is answered again.
 * Every step prints "SOUND-FLOOD: ..." on COM1; the last line is "SOUND-FLOOD: PASS" or
 * "SOUND-FLOOD: FAIL ...". No interrupts: the guest polls the used rings, each wait bounded.
 */
#include <stdint.h>

#define COM1 0x3f8
#define MMIO_MAGIC 0x74726976u

/* virtio-mmio registers (virtIO 1.2 section 4.2.2) */
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEVICE_FEATURES 0x010
#define R_DEVICE_FEATURES_SEL 0x014
#define R_DRIVER_FEATURES 0x020
#define R_DRIVER_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_STATUS 0x070
#define R_QUEUE_DESC 0x080
#define R_QUEUE_DRIVER 0x090
#define R_QUEUE_DEVICE 0x0a0
#define R_CONFIG 0x100

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 64

#define ID_RNG 4
#define ID_SOUND 25

/* virtio-snd (virtIO 1.2 section 5.14) */
#define SND_JACK_INFO 1
#define SND_PCM_INFO 0x100
#define SND_PCM_SET_PARAMS 0x101
#define SND_PCM_PREPARE 0x102
#define SND_PCM_RELEASE 0x103
#define SND_PCM_START 0x104
#define SND_PCM_STOP 0x105
#define SND_OK 0x8000
#define SND_BAD_MSG 0x8001
#define SND_NOT_SUPP 0x8002
#define SND_IO_ERR 0x8003
#define FMT_S16 5
#define RATE_48000 7
#define RATE_384000 13
#define OUT_STREAM 0
#define IN_STREAM 1

#define QSIZE 16
#define DESC_NEXT 1
#define DESC_WRITE 2
#define WAIT_SPINS 200000000u /* a bound on every wait: never hang the test */

struct desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct used_elem {
  uint32_t id;
  uint32_t len;
};
struct queue {
  struct desc desc[QSIZE];
  uint16_t avail_flags, avail_idx, avail_ring[QSIZE], avail_event;
  uint8_t pad[4096 - QSIZE * 16 - 6 - 2 * QSIZE];
  uint16_t used_flags, used_idx;
  struct used_elem used_ring[QSIZE];
  uint16_t used_event;
  uint16_t last_used;
} __attribute__((aligned(4096)));

struct device {
  volatile uint8_t* base;
  uint32_t nqueues;
  struct queue* q;
};

static struct queue snd_queues[4];
static struct queue rng_queue;
static uint8_t req[256] __attribute__((aligned(64)));
static uint8_t resp[256] __attribute__((aligned(64)));
static uint8_t data[4096] __attribute__((aligned(64)));
static uint8_t status_buf[16] __attribute__((aligned(16)));
static uint8_t random_buf[32];
static struct device snd, rng;
static unsigned failures;

/* ---- COM1 ---- */
static inline void outb(uint16_t port, uint8_t v) {
  __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static void com_putc(char c) {
  while ((inb(COM1 + 5) & 0x20) == 0) {
  }
  outb(COM1, (uint8_t)c);
}
static void com_puts(const char* s) {
  while (*s) com_putc(*s++);
}
static void com_putu(uint64_t v) {
  char buf[24];
  int n = 0;
  do {
    buf[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) com_putc(buf[--n]);
}
static void com_puthex(uint64_t v) {
  com_puts("0x");
  for (int shift = 60; shift >= 0; shift -= 4) {
    if (shift > 12 && (v >> shift) == 0) continue;
    com_putc("0123456789abcdef"[(v >> shift) & 15]);
  }
}
static void fail(const char* what, uint64_t got) {
  ++failures;
  if (failures > 20) return; /* the first ones say enough */
  com_puts("SOUND-FLOOD: FAIL ");
  com_puts(what);
  com_puts(" (got ");
  com_puthex(got);
  com_puts(")\n");
}

/* ---- helpers ---- */
static void* memset_(void* p, int c, uint64_t n) {
  uint8_t* d = p;
  while (n--) *d++ = (uint8_t)c;
  return p;
}
static void put32(uint8_t* p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}
static uint32_t get32(const uint8_t* p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint32_t rd(struct device* d, uint32_t reg) {
  return *(volatile uint32_t*)(d->base + reg);
}
static void wr(struct device* d, uint32_t reg, uint32_t v) {
  *(volatile uint32_t*)(d->base + reg) = v;
}
static void barrier(void) {
  __asm__ volatile("mfence" ::: "memory");
}

/* ---- virtio-mmio setup ---- */
static int setup(struct device* d, uint32_t nqueues, struct queue* qs) {
  d->nqueues = nqueues;
  d->q = qs;
  wr(d, R_STATUS, 0);
  wr(d, R_STATUS, S_ACK);
  wr(d, R_STATUS, S_ACK | S_DRIVER);
  wr(d, R_DEVICE_FEATURES_SEL, 1);
  const uint32_t high = rd(d, R_DEVICE_FEATURES);
  if ((high & 1) == 0) return 0; /* VIRTIO_F_VERSION_1 */
  wr(d, R_DRIVER_FEATURES_SEL, 0);
  wr(d, R_DRIVER_FEATURES, 0);
  wr(d, R_DRIVER_FEATURES_SEL, 1);
  wr(d, R_DRIVER_FEATURES, 1);
  wr(d, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
  if ((rd(d, R_STATUS) & S_FEATURES_OK) == 0) return 0;
  for (uint32_t i = 0; i < nqueues; ++i) {
    struct queue* q = &qs[i];
    memset_(q, 0, sizeof *q);
    wr(d, R_QUEUE_SEL, i);
    if (rd(d, R_QUEUE_NUM_MAX) < QSIZE) return 0;
    wr(d, R_QUEUE_NUM, QSIZE);
    const uint64_t desc = (uint64_t)(uintptr_t)q->desc;
    const uint64_t avail = (uint64_t)(uintptr_t)&q->avail_flags;
    const uint64_t used = (uint64_t)(uintptr_t)&q->used_flags;
    wr(d, R_QUEUE_DESC, (uint32_t)desc);
    wr(d, R_QUEUE_DESC + 4, (uint32_t)(desc >> 32));
    wr(d, R_QUEUE_DRIVER, (uint32_t)avail);
    wr(d, R_QUEUE_DRIVER + 4, (uint32_t)(avail >> 32));
    wr(d, R_QUEUE_DEVICE, (uint32_t)used);
    wr(d, R_QUEUE_DEVICE + 4, (uint32_t)(used >> 32));
    wr(d, R_QUEUE_READY, 1);
  }
  wr(d, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
  return 1;
}

/* One chain of up to 4 buffers (readable ones first unless the caller says otherwise) made
   available on queue `qi`, notified, then waited for. Returns the used length, or -1 if the
   device did not return it within the bound. */
struct buf {
  void* p;
  uint32_t len;
  int writable;
};
static int64_t submit(struct device* d, uint32_t qi, const struct buf* bufs, int n,
                      uint32_t spins) {
  struct queue* q = &d->q[qi];
  for (int i = 0; i < n; ++i) {
    q->desc[i].addr = (uint64_t)(uintptr_t)bufs[i].p;
    q->desc[i].len = bufs[i].len;
    q->desc[i].flags =
        (uint16_t)((bufs[i].writable ? DESC_WRITE : 0) | (i + 1 < n ? DESC_NEXT : 0));
    q->desc[i].next = (uint16_t)(i + 1);
  }
  q->avail_ring[q->avail_idx % QSIZE] = 0;
  barrier();
  q->avail_idx++;
  barrier();
  wr(d, R_QUEUE_NOTIFY, qi);
  for (uint32_t i = 0; i < spins; ++i) {
    barrier();
    if (*(volatile uint16_t*)&q->used_idx != q->last_used) {
      const uint32_t len = q->used_ring[q->last_used % QSIZE].len;
      q->last_used++;
      return len;
    }
    __asm__ volatile("pause");
  }
  return -1;
}

/* ---- virtio-snd requests ---- */
/* A control request of `len` bytes from req[], a response of `resp_len` writable bytes; the
   status the device wrote (0 if none was written), or ~0 if the request never came back. */
static uint32_t control(uint32_t len, uint32_t resp_len) {
  memset_(resp, 0, sizeof resp);
  struct buf b[2] = {{req, len, 0}, {resp, resp_len, 1}};
  const int64_t used = submit(&snd, 0, b, resp_len ? 2 : 1, WAIT_SPINS);
  if (used < 0) return ~0u;
  return get32(resp);
}
static void pcm_hdr(uint32_t code, uint32_t stream) {
  memset_(req, 0, sizeof req);
  put32(req, code);
  put32(req + 4, stream);
}
static void set_params(uint32_t stream, uint32_t buffer, uint32_t period, uint8_t channels,
                       uint8_t format, uint8_t rate) {
  pcm_hdr(SND_PCM_SET_PARAMS, stream);
  put32(req + 8, buffer);
  put32(req + 12, period);
  put32(req + 16, 0);
  req[20] = channels;
  req[21] = format;
  req[22] = rate;
}
/* An I/O message on the tx (2) or rx (3) queue: header for `stream`, `bytes` of data (readable
   on tx, writable on rx), then a status buffer of `status_len` bytes. The status written. */
static uint32_t xfer(uint32_t qi, uint32_t stream, uint32_t bytes, uint32_t status_len,
                     uint32_t spins) {
  memset_(status_buf, 0xff, sizeof status_buf);
  put32(req, stream);
  struct buf b[3] = {{req, 4, 0}, {data, bytes, qi == 3}, {status_buf, status_len, 1}};
  const int64_t used = submit(&snd, qi, b, 3, spins);
  if (used < 0) return ~0u;
  return status_len >= 4 ? get32(status_buf) : 0;
}

static void expect(const char* what, uint32_t got, uint32_t want) {
  if (got != want) fail(what, got);
}

/* ---- virtio-rng ---- */
static void rng_works(const char* when) {
  memset_(random_buf, 0, sizeof random_buf);
  struct buf b = {random_buf, sizeof random_buf, 1};
  const int64_t used = submit(&rng, 0, &b, 1, WAIT_SPINS);
  uint8_t any = 0;
  for (unsigned i = 0; i < sizeof random_buf; ++i) any |= random_buf[i];
  if (used <= 0 || !any) fail(when, (uint64_t)used);
}

/* Every malformed request once; each must come back with the status it deserves. */
static void malformed_round(void) {
  /* control queue */
  memset_(req, 0, sizeof req);
  put32(req, 0x7777);
  expect("unknown request code", control(4, 64), SND_NOT_SUPP);
  memset_(req, 0, sizeof req);
  put32(req, SND_PCM_INFO);
  put32(req + 4, 0);
  put32(req + 8, 1000);
  put32(req + 12, 32);
  expect("PCM_INFO of 1000 streams", control(16, 128), SND_BAD_MSG);
  memset_(req, 0, sizeof req);
  put32(req, SND_JACK_INFO);
  put32(req + 4, 5);
  put32(req + 8, 1);
  put32(req + 12, 24);
  expect("JACK_INFO of jack 5", control(16, 64), SND_BAD_MSG);
  set_params(7, 4096, 1024, 2, FMT_S16, RATE_48000);
  expect("SET_PARAMS of stream 7", control(24, 16), SND_BAD_MSG);
  set_params(OUT_STREAM, 4096, 1024, 2, FMT_S16, RATE_384000);
  expect("SET_PARAMS at a rate PCM_INFO did not offer", control(24, 16), SND_NOT_SUPP);
  set_params(OUT_STREAM, 4096, 1024, 7, FMT_S16, RATE_48000);
  expect("SET_PARAMS with 7 channels", control(24, 16), SND_NOT_SUPP);
  set_params(OUT_STREAM, 4099, 1024, 2, FMT_S16, RATE_48000);
  expect("SET_PARAMS with a buffer of partial frames", control(24, 16), SND_BAD_MSG);
  pcm_hdr(SND_PCM_START, OUT_STREAM);
  expect("START of a stream never prepared", control(8, 16), SND_BAD_MSG);
  pcm_hdr(SND_PCM_PREPARE, OUT_STREAM);
  expect("PREPARE before SET_PARAMS", control(8, 16), SND_BAD_MSG);
  memset_(req, 0, sizeof req);
  expect("a 2-byte request", control(2, 16), SND_BAD_MSG);
  pcm_hdr(SND_PCM_PREPARE, IN_STREAM);
  expect("a 2-byte response buffer (nothing written)", control(8, 2), 0);
  pcm_hdr(SND_PCM_STOP, OUT_STREAM);
  expect("a request without a response buffer", control(8, 0), 0);
  /* tx and rx queues */
  expect("tx on a stream not started", xfer(2, OUT_STREAM, 64, 8, WAIT_SPINS), SND_BAD_MSG);
  expect("tx for the input stream", xfer(2, IN_STREAM, 64, 8, WAIT_SPINS), SND_BAD_MSG);
  expect("rx for the output stream", xfer(3, OUT_STREAM, 64, 8, WAIT_SPINS), SND_BAD_MSG);
  expect("tx for stream 99", xfer(2, 99, 64, 8, WAIT_SPINS), SND_BAD_MSG);
  expect("tx with a 4-byte status", xfer(2, OUT_STREAM, 64, 4, WAIT_SPINS), 0xffffffffu);
  /* a notification of a queue that does not exist */
  wr(&snd, R_QUEUE_NOTIFY, 9);
}

static uint32_t parse_rounds(const char* cmdline) {
  for (const char* p = cmdline; *p; ++p) {
    if (p[0] == 'r' && p[1] == 'o' && p[2] == 'u' && p[3] == 'n' && p[4] == 'd' && p[5] == 's' &&
        p[6] == '=') {
      uint32_t n = 0;
      for (p += 7; *p >= '0' && *p <= '9'; ++p) n = n * 10 + (uint32_t)(*p - '0');
      return n;
    }
  }
  return 200;
}

/* The devices from "virtio_mmio.device=SIZE@0xBASE:IRQ" words. */
static void find_devices(const char* cmdline) {
  static const char key[] = "virtio_mmio.device=";
  for (const char* p = cmdline; *p; ++p) {
    unsigned k = 0;
    while (key[k] && p[k] == key[k]) ++k;
    if (key[k]) continue;
    const char* at = p + k;
    while (*at && *at != '@' && *at != ' ') ++at;
    if (at[0] != '@' || at[1] != '0' || at[2] != 'x') continue;
    uint64_t base = 0;
    for (at += 3;; ++at) {
      const char c = *at;
      if (c >= '0' && c <= '9')
        base = base * 16 + (uint64_t)(c - '0');
      else if (c >= 'a' && c <= 'f')
        base = base * 16 + (uint64_t)(c - 'a' + 10);
      else
        break;
    }
    volatile uint8_t* regs = (volatile uint8_t*)(uintptr_t)base;
    if (*(volatile uint32_t*)regs != MMIO_MAGIC || *(volatile uint32_t*)(regs + R_VERSION) != 2)
      continue;
    const uint32_t id = *(volatile uint32_t*)(regs + R_DEVICE_ID);
    if (id == ID_SOUND) snd.base = regs;
    if (id == ID_RNG) rng.base = regs;
  }
}

void flood_main(const uint8_t* boot_params) {
  const char* cmdline = (const char*)(uintptr_t)(*(const uint32_t*)(boot_params + 0x228));
  com_puts("SOUND-FLOOD: started\n");
  find_devices(cmdline);
  if (!snd.base || !rng.base) {
    com_puts("SOUND-FLOOD: FAIL no virtio-snd and virtio-rng on the command line\n");
    return;
  }
  if (!setup(&snd, 4, snd_queues) || !setup(&rng, 1, &rng_queue)) {
    com_puts("SOUND-FLOOD: FAIL device setup\n");
    return;
  }
  const uint32_t jacks = rd(&snd, R_CONFIG), streams = rd(&snd, R_CONFIG + 4);
  com_puts("SOUND-FLOOD: virtio-snd with ");
  com_putu(jacks);
  com_puts(" jacks, ");
  com_putu(streams);
  com_puts(" streams; virtio-rng\n");
  rng_works("virtio-rng before the flood");

  const uint32_t rounds = parse_rounds(cmdline);
  for (uint32_t r = 1; r <= rounds; ++r) {
    malformed_round();
    rng_works("virtio-rng during the flood");
    if (r % 20 == 0 || r == rounds) {
      com_puts("SOUND-FLOOD: round ");
      com_putu(r);
      com_puts(" of malformed requests answered; virtio-rng answers\n");
    }
  }
  if ((rd(&snd, R_STATUS) & S_NEEDS_RESET) != 0)
    fail("the device asks for a reset after the flood", 0);

  /* A well-formed playback of two periods of silence: the flood left no stream in a bad state. */
  set_params(OUT_STREAM, 4096, 1024, 2, FMT_S16, RATE_48000);
  expect("SET_PARAMS after the flood", control(24, 16), SND_OK);
  pcm_hdr(SND_PCM_PREPARE, OUT_STREAM);
  expect("PREPARE after the flood", control(8, 16), SND_OK);
  pcm_hdr(SND_PCM_START, OUT_STREAM);
  expect("START after the flood", control(8, 16), SND_OK);
  memset_(data, 0, sizeof data);
  expect("tx of a period", xfer(2, OUT_STREAM, 1024, 8, WAIT_SPINS), SND_OK);
  expect("tx of a second period", xfer(2, OUT_STREAM, 1024, 8, WAIT_SPINS), SND_OK);
  pcm_hdr(SND_PCM_STOP, OUT_STREAM);
  expect("STOP", control(8, 16), SND_OK);
  pcm_hdr(SND_PCM_RELEASE, OUT_STREAM);
  expect("RELEASE", control(8, 16), SND_OK);
  com_puts("SOUND-FLOOD: playback after the flood done\n");

  /* A descriptor loop on the control queue: refused by the virtqueue layer (the queue breaks,
     the device asks for a reset); the other device and the console go on. */
  struct queue* q = &snd.q[0];
  q->desc[0].addr = (uint64_t)(uintptr_t)req;
  q->desc[0].len = 8;
  q->desc[0].flags = DESC_NEXT;
  q->desc[0].next = 0;
  q->avail_ring[q->avail_idx % QSIZE] = 0;
  barrier();
  q->avail_idx++;
  barrier();
  wr(&snd, R_QUEUE_NOTIFY, 0);
  /* The notification reaches the device on vmm's event loop, not on this vCPU's exit: the
     status changes soon after, not at once (a run under ThreadSanitizer read it unchanged). */
  uint32_t status = rd(&snd, R_STATUS);
  for (uint32_t i = 0; (status & S_NEEDS_RESET) == 0 && i < WAIT_SPINS; i += 100000) {
    for (uint32_t j = 0; j < 100000; ++j) __asm__ volatile("pause");
    status = rd(&snd, R_STATUS);
  }
  com_puts("SOUND-FLOOD: descriptor loop sent; device status ");
  com_puthex(status);
  com_puts("\n");
  if ((status & S_NEEDS_RESET) == 0) fail("no DEVICE_NEEDS_RESET after the loop", status);
  rng_works("virtio-rng after the broken sound queue");
  com_puts("SOUND-FLOOD: virtio-rng answers after the broken sound queue\n");
  if (!setup(&snd, 4, snd_queues)) {
    fail("setting the sound device up again after a reset", rd(&snd, R_STATUS));
  } else {
    memset_(req, 0, sizeof req);
    put32(req, SND_PCM_INFO);
    put32(req + 4, 0);
    put32(req + 8, 2);
    put32(req + 12, 32);
    expect("PCM_INFO after the reset", control(16, 4 + 2 * 32), SND_OK);
    com_puts("SOUND-FLOOD: the sound device works again after a reset\n");
  }
  if (failures) {
    com_puts("SOUND-FLOOD: FAIL ");
    com_putu(failures);
    com_puts(" checks\n");
  } else {
    com_puts("SOUND-FLOOD: PASS\n");
  }
}
