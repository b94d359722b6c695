#!/bin/sh
# riscv64 block benchmark: bench/block.sh --arch riscv64 (see there).
# Usage: bench/block-riscv64.sh [SECONDS [ROUNDS]]   (default 5 and 3).
exec "$(dirname "$0")/block.sh" --arch riscv64 "$@"
