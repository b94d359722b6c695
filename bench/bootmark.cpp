// bootmark: runs a VMM command, and reports how long it took until its output showed a marker
// line (the guest's /init announcing itself) and the VMM's peak RSS up to then. Once the
// marker is seen the VMM is killed: how a guest shuts down differs between VMMs and is not
// what is measured.
//   bootmark [--timeout SECONDS] [--at-marker SHELL-COMMAND] MARKER COMMAND [ARGS...]
// prints: marker_ms=1234.5 maxrss_kib=23456 (marker_ms=-1 if the VMM exited without it, or
// was killed at the timeout, default 300 s: a hung guest costs one run, not the rest)
// With --at-marker, the VMM is stopped (SIGSTOP: its vCPUs leave the guest) when the marker
// shows, SHELL-COMMAND runs (/bin/sh -c) while it stands still, and then the VMM is killed:
// bench/exits.sh reads KVM's exit counters there.
// Used by bench/boot.sh and bench/exits.sh inside the emulated KVM host, for our vmm and QEMU
// alike.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  const char* at_marker = nullptr;
  double timeout_s = 300;
  if (argc >= 3 && std::strcmp(argv[1], "--timeout") == 0) {
    timeout_s = std::atof(argv[2]);
    argc -= 2;
    argv += 2;
  }
  if (argc >= 3 && std::strcmp(argv[1], "--at-marker") == 0) {
    at_marker = argv[2];
    argc -= 2;
    argv += 2;
  }
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: bootmark [--timeout SECONDS] [--at-marker SHELL-COMMAND] MARKER "
                 "COMMAND [ARGS...]\n");
    return 2;
  }
  const std::string marker = argv[1];
  int out[2];
  if (pipe(out) != 0) return perror("pipe"), 1;
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int devnull = open("/dev/null", O_RDONLY);  // a console on stdin changes how VMMs behave
    dup2(devnull, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execvp(argv[2], argv + 2);
    _exit(127);
  }
  close(out[1]);
  auto ms_since_start = [&] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
  };
  double marker_ms = -1;
  std::string window;  // the tail of the output, enough to find a marker split across reads
  char buf[4096];
  bool timed_out = false;
  while (true) {
    if (marker_ms < 0 && !timed_out) {
      const double left_ms = timeout_s * 1000 - ms_since_start();
      pollfd pfd{out[0], POLLIN, 0};
      if (left_ms <= 0 || poll(&pfd, 1, static_cast<int>(left_ms) + 1) == 0) {
        std::fprintf(stderr, "bootmark: no marker after %.0f s; the VMM is killed\n", timeout_s);
        kill(pid, SIGKILL);
        timed_out = true;  // read on to the end of its output
      }
    }
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) continue;
    if (marker_ms < 0) {
      window.append(buf, static_cast<size_t>(n));
      if (window.find(marker) != std::string::npos) {
        marker_ms = ms_since_start();
        if (at_marker != nullptr) {
          kill(pid, SIGSTOP);
          int stopped = 0;
          waitpid(pid, &stopped, WUNTRACED);  // every thread has stopped
          std::fflush(stdout);
          if (std::system(at_marker) != 0) std::fprintf(stderr, "bootmark: %s failed\n", at_marker);
        }
        kill(pid, SIGKILL);
      }
      if (window.size() > marker.size()) window.erase(0, window.size() - marker.size());
    }
  }
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  std::printf("marker_ms=%.1f maxrss_kib=%ld\n", marker_ms, usage.ru_maxrss);
  return 0;
}
