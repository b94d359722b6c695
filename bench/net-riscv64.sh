#!/bin/sh
# riscv64 network benchmark: bench/net.sh --arch riscv64 (see there).
# Usage: bench/net-riscv64.sh [SECONDS [ROUNDS]]   (default 5 and 3).
exec "$(dirname "$0")/net.sh" --arch riscv64 "$@"
