#!/usr/bin/env bash
# Debian packages: PyTorch stack for training (with OpenBLAS: without
# libopenblas0-pthread PyTorch links the reference BLAS and runs ~25x slower),
# librsvg2-bin to rasterise OpenMoji SVGs, pytest, Chromium for the web test,
# and the real services of the scale-out tests: redis-server and HAProxy (the
# tests start their own on free loopback ports; a service the package may
# start on its default port is not used), and Prometheus (its promtool checks
# deploy/prometheus in make test; a test runs a real prometheus against vild).
set -euo pipefail
pkgs=(python3-torch python3-torchvision python3-onnx python3-pil python3-numpy
      python3-pytest libopenblas0-pthread librsvg2-bin chromium redis-server haproxy
      prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: apt-get install ${missing[*]}" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
