# vild: the README's two commands are `make serve` and `make test`.
PY      ?= /usr/bin/python3
export VILD_CACHE   ?= $(CURDIR)/.cache
export VILD_ORT_LIB ?= $(VILD_CACHE)/onnxruntime/libonnxruntime.so

.PHONY: setup serve test test-go test-python test-web build

setup:
	bash scripts/setup.sh

build:
	go build -o bin/vild ./cmd/vild

# (1) Start the server on the embedded model (fetches the ONNX Runtime library if missing).
serve:
	VILD_SETUP_ONLY=onnxruntime bash scripts/setup.sh
	go run ./cmd/vild serve $(ARGS)

# (2) Run every test.
test: setup test-go test-python test-web

test-go:
	go vet ./...
	go test ./...

test-python:
	cd training && $(PY) -m pytest

# The web page in headless Chromium (Debian's), driven by playwright-core.
test-web:
	cd web/e2e && node --test
