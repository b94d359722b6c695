#!/bin/sh
# arm64 block benchmark: bench/block.sh --arch aarch64 (see there).
# Usage: bench/block-arm64.sh [SECONDS [ROUNDS]]   (default 5 and 3).
exec "$(dirname "$0")/block.sh" --arch aarch64 "$@"
