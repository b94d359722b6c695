#!/bin/sh
# arm64 network benchmark: bench/net.sh --arch aarch64 (see there).
# Usage: bench/net-arm64.sh [SECONDS [ROUNDS]]   (default 5 and 3).
exec "$(dirname "$0")/net.sh" --arch aarch64 "$@"
