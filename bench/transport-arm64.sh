#!/bin/sh
# virtio-mmio against virtio-pci on arm64: bench/transport.sh --arch aarch64 (see there).
# Usage: bench/transport-arm64.sh [ROUNDS [READS]]   (default 5 and 4000).
exec "$(dirname "$0")/transport.sh" --arch aarch64 "$@"
