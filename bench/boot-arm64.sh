#!/bin/sh
# arm64 boot-time and memory benchmark: bench/boot.sh --arch aarch64 (see there).
# Usage: bench/boot-arm64.sh [RUNS]   (default 5).
exec "$(dirname "$0")/boot.sh" --arch aarch64 "$@"
