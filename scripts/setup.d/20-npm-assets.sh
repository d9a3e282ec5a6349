#!/usr/bin/env bash
# Pinned npm tarballs (emoji art, emoji metadata, the ONNX Runtime library),
# integrity-checked against scripts/npm-pins.txt.
set -euo pipefail
exec bash "$(dirname "$0")/../fetch-npm.sh"
