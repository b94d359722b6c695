// sockline PATH LINE: a client of a Unix stream socket (a console's socket backend) for the
// Linux tests, whose emulated host has no socat. Connects to PATH, copies what arrives there to
// standard output, and answers LINE and a newline once the first newline arrived. Stays
// connected until the peer closes or a signal ends it: the test decides when the client goes.
// Built static by the test that uses it (tests/integration/linux_virtio.sh).
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: sockline PATH LINE\n");
    return 2;
  }
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof address.sun_path) {
    fprintf(stderr, "sockline: %s: path too long\n", argv[1]);
    return 2;
  }
  strcpy(address.sun_path, argv[1]);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr*)&address, sizeof address) != 0) {
    perror("sockline: connect");
    return 1;
  }
  int answered = 0;
  char buffer[4096];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n <= 0) return n == 0 ? 0 : 1;
    if (write(STDOUT_FILENO, buffer, (size_t)n) != n) return 1;
    if (!answered && memchr(buffer, '\n', (size_t)n) != NULL) {
      answered = 1;
      if (dprintf(fd, "%s\n", argv[2]) < 0) return 1;
    }
  }
}
