#!/usr/bin/env bash
# Installs everything vild's build, tests and training need on a fresh Debian
# machine, then runs each step in scripts/setup.d in name order.
# Idempotent: re-running skips what is already there.
#   usage: scripts/setup.sh            (everything)
#          VILD_SETUP_ONLY=go scripts/setup.sh   (steps whose name contains "go")
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
for step in "$root"/scripts/setup.d/*.sh; do
  name="$(basename "$step" .sh)"
  if [[ -n "${VILD_SETUP_ONLY:-}" && "$name" != *"$VILD_SETUP_ONLY"* ]]; then continue; fi
  echo "setup: $name" >&2
  bash "$step"
done
