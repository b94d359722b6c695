/* wavtool: the WAV files of the sound tests, on the host and in the guest.
 *   wavtool gen FILE RATE CHANNELS u8|s16 FREQ SECONDS   writes a sine tone (amplitude 1/2)
 *   wavtool info FILE                                      prints "format=S16_LE rate=48000
 *       channels=2 frames=96000 freq=440.02 tone=1.998": the frequency of channel 0 from its
 *       rising zero crossings (interpolated between samples), over the whole file, and the
 *       seconds from the first of those crossings to the last
 * Exit status 1 with a message for a file it cannot read as PCM U8 or S16_LE WAV. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put16(FILE* f, unsigned v) { fputc(v & 0xff, f); fputc((v >> 8) & 0xff, f); }
static void put32(FILE* f, unsigned long v) { put16(f, v & 0xffff); put16(f, (v >> 16) & 0xffff); }
static unsigned get16(const unsigned char* p) { return p[0] | (p[1] << 8); }
static unsigned long get32(const unsigned char* p) { return get16(p) | ((unsigned long)get16(p + 2) << 16); }

static int gen(const char* path, long rate, int channels, int bytes, double freq, double seconds) {
  FILE* f = fopen(path, "wb");
  if (!f) { perror(path); return 1; }
  long frames = (long)(rate * seconds);
  unsigned long data = (unsigned long)frames * channels * bytes;
  fwrite("RIFF", 1, 4, f); put32(f, 36 + data); fwrite("WAVEfmt ", 1, 8, f);
  put32(f, 16); put16(f, 1); put16(f, channels); put32(f, rate);
  put32(f, rate * channels * bytes); put16(f, channels * bytes); put16(f, bytes * 8);
  fwrite("data", 1, 4, f); put32(f, data);
  for (long i = 0; i < frames; ++i) {
    double s = 0.5 * sin(2 * M_PI * freq * (double)i / rate);
    for (int c = 0; c < channels; ++c) {
      if (bytes == 1) fputc((int)lround(128 + 127 * s) & 0xff, f);
      else put16(f, (unsigned)(lround(32767 * s) & 0xffff));
    }
  }
  return fclose(f) != 0;
}

static int info(const char* path) {
  FILE* f = fopen(path, "rb");
  if (!f) { perror(path); return 1; }
  static unsigned char buf[64 << 20];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  if (n < 12 || memcmp(buf, "RIFF", 4) || memcmp(buf + 8, "WAVE", 4)) {
    fprintf(stderr, "%s: not a RIFF/WAVE file\n", path); return 1;
  }
  unsigned fmt_tag = 0, channels = 0, bits = 0; unsigned long rate = 0;
  size_t at = 12;
  while (at + 8 <= n) {
    unsigned long size = get32(buf + at + 4);
    if (!memcmp(buf + at, "fmt ", 4) && at + 24 <= n) {
      fmt_tag = get16(buf + at + 8); channels = get16(buf + at + 10);
      rate = get32(buf + at + 12); bits = get16(buf + at + 22);
    } else if (!memcmp(buf + at, "data", 4)) {
      if (fmt_tag != 1 || (bits != 8 && bits != 16) || channels < 1 || rate == 0) {
        fprintf(stderr, "%s: not PCM U8 or S16_LE (tag %u, %u bits)\n", path, fmt_tag, bits);
        return 1;
      }
      size_t avail = n - (at + 8);
      if (size > avail) { fprintf(stderr, "%s: data chunk of %lu bytes, %zu in the file\n", path, size, avail); return 1; }
      unsigned frame = channels * bits / 8;
      long frames = (long)(size / frame);
      const unsigned char* d = buf + at + 8;
      double first = -1, last = -1, prev = 0; long crossings = 0;
      for (long i = 0; i < frames; ++i) {
        double s = bits == 8 ? (double)d[i * frame] - 128 : (double)(int16_t)get16(d + i * frame);
        if (i > 0 && prev < 0 && s >= 0) {
          double t = (i - 1) + (-prev) / (s - prev);
          if (first < 0) first = t;
          last = t; ++crossings;
        }
        prev = s;
      }
      double freq = crossings > 1 ? (crossings - 1) * (double)rate / (last - first) : 0;
      double tone = crossings > 1 ? (last - first) / rate : 0;
      printf("format=%s rate=%lu channels=%u frames=%ld freq=%.2f tone=%.3f\n",
             bits == 8 ? "U8" : "S16_LE", rate, channels, frames, freq, tone);
      return 0;
    }
    at += 8 + size + (size & 1);
  }
  fprintf(stderr, "%s: no data chunk\n", path);
  return 1;
}

int main(int argc, char** argv) {
  if (argc == 8 && !strcmp(argv[1], "gen")) {
    return gen(argv[2], atol(argv[3]), atoi(argv[4]), strcmp(argv[5], "u8") ? 2 : 1,
               atof(argv[6]), atof(argv[7]));
  }
  if (argc == 3 && !strcmp(argv[1], "info")) return info(argv[2]);
  fprintf(stderr, "usage: wavtool gen FILE RATE CHANNELS u8|s16 FREQ SECONDS | wavtool info FILE\n");
  return 2;
}
