#!/bin/sh
# Writes the golden files of the Go tokenizer tests from the Python reference
# (training/vildtrain/text/clip_tokenizer.py) and the committed vocabulary.
#   usage: sh tokenizer/testdata/generate.sh    (from the repository root, or via go generate)
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../../training"
/usr/bin/python3 -m vildtrain clip_tokenizer \
  --goldens "$here/goldens.json" \
  --clip-shape-goldens "$here/goldens_clip_shape.json" \
  --unicode-table "$here/unicode.json"
