#!/bin/sh
# riscv64 boot-time and memory benchmark: bench/boot.sh --arch riscv64 (see there).
# Usage: bench/boot-riscv64.sh [RUNS]   (default 5).
exec "$(dirname "$0")/boot.sh" --arch riscv64 "$@"
