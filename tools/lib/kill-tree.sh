# shellcheck shell=bash
# Sourced by tools/run-tests and tools/emuhost/emuhost.
# kill_tree PID: PID and every process under it (each stopped before its children are looked
# for, so it forks nothing the walk would miss), then SIGTERM, which takes effect as it goes on.
kill_tree() {
  local child
  kill -STOP "$1" 2>/dev/null || true
  for child in $(pgrep -P "$1"); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
  kill -CONT "$1" 2>/dev/null || true
}
