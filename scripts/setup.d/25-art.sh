#!/usr/bin/env bash
# Held-out emoji art: rasterise the OpenMoji SVGs (rsvg-convert) and decode the
# Fluent 3D WebPs of the categories and distractors into $VILD_CACHE/art/.
# Needs the npm packages (20-npm-assets). Idempotent: a re-run is a no-op.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root/training"
exec /usr/bin/python3 -m vildtrain assets
