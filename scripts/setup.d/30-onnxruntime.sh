#!/usr/bin/env bash
# The ONNX Runtime shared library, taken from the pinned onnxruntime-node npm
# package (bin/napi-v6/linux/x64/libonnxruntime.so.1) and placed at
# $VILD_CACHE/onnxruntime/libonnxruntime.so, where vild looks by default
# (override with --ort-lib or VILD_ORT_LIB).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${VILD_CACHE:-$root/.cache}"
bash "$root/scripts/fetch-npm.sh" onnxruntime-node
src="$cache/npm/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1"
dst="$cache/onnxruntime/libonnxruntime.so"
[[ -f "$src" ]] || { echo "setup: $src missing from onnxruntime-node" >&2; exit 1; }
mkdir -p "$(dirname "$dst")"
if ! cmp -s "$src" "$dst" 2>/dev/null; then cp "$src" "$dst"; fi
echo "setup: ONNX Runtime at $dst" >&2
