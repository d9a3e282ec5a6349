# vild: the README's two commands are `make serve` and `make test`.
PY      ?= /usr/bin/python3
export VILD_CACHE   ?= $(CURDIR)/.cache
export VILD_ORT_LIB ?= $(VILD_CACHE)/onnxruntime/libonnxruntime.so

.PHONY: setup serve test test-go test-python test-web build lint fuzz fuzz-ci

# staticcheck, pinned; run from the Go module proxy like any module.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

setup:
	bash scripts/setup.sh

build:
	go build -o bin/vild ./cmd/vild

# (1) Start the server on the embedded model (fetches the ONNX Runtime library if missing).
serve:
	VILD_SETUP_ONLY=onnxruntime bash scripts/setup.sh
	go run ./cmd/vild serve $(ARGS)

# (2) Run every test.
test: setup test-go fuzz-ci test-python test-web

# gofmt, go.mod/go.sum as `go mod tidy` leaves them, vet and staticcheck.
lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt -w needed:"; echo "$$out"; exit 1; fi
	go mod tidy -diff
	go vet ./...
	go run $(STATICCHECK) ./...

# VILD_SERVICES_REQUIRED: tests that run redis-server or HAProxy fail, not
# skip, when they are missing (setup installs them).
# promtool (Debian's prometheus package) checks the alerting and recording
# rules and runs their unit tests (docs/operations.md).
test-go: lint
	CGO_ENABLED=0 go build ./...
	promtool check rules deploy/prometheus/*.rules.yml
	promtool test rules deploy/prometheus/alerts_test.yml
	VILD_SERVICES_REQUIRED=1 go test ./...
	go test -race -run 'Concurrent' ./ort ./pipeline

# The request parsers' and vocabulary normalisation's fuzz targets, bounded:
# part of make test (docs/api.md, Fuzzing).
FUZZ_CI_TIME ?= 20s
fuzz-ci:
	@set -e; for t in request:FuzzDecodeJSON request:FuzzOptionsFromValues request:FuzzMultipart vocabulary:FuzzNormalize; do \
	  echo "== ./$${t%%:*} $${t#*:} ($(FUZZ_CI_TIME))"; \
	  go test ./$${t%%:*} -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZ_CI_TIME); \
	done

# Every Go fuzz target for FUZZTIME each (20 s: about 5 minutes for the 12);
# before a release, make fuzz FUZZTIME=10m.
FUZZTIME ?= 20s
fuzz:
	@set -e; for dir in $$(git grep -l '^func Fuzz' -- '*_test.go' | xargs -n1 dirname | sort -u); do \
	  for f in $$(go test -list '^Fuzz' ./$$dir | grep '^Fuzz'); do \
	    echo "== ./$$dir $$f ($(FUZZTIME))"; \
	    go test ./$$dir -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME); \
	  done; \
	done

test-python:
	cd training && $(PY) -m pytest

# The web page in headless Chromium (Debian's), driven by playwright-core.
test-web:
	cd web/e2e && node --test

# ---- training the embedded default model (see training/README.md) ----
TRAIN := cd training && PYTHONPATH=. nice -n 5 $(PY) -m vildtrain

.PHONY: miniclip detector bundle image-encoder eval-python eval-exemplars
# Mini-CLIP from scratch: writes training/checkpoints/miniclip.pt (committed).
miniclip: setup
	$(TRAIN) train_clip --out runs/miniclip

# ViLD detector on top of the committed mini-CLIP: writes training/runs/detector/detector.pt.
# Up to 3,000 steps: the trainer fits the count to 88 minutes from launch (about 2,000 on the
# 2-core build machine, scenes drawn in-process; training/README.md).
detector: setup
	$(TRAIN) train_detector --out runs/detector --steps 3000 --time-budget 88 --workers 0

# Export the trained detector as the embedded default bundle (models/default).
bundle:
	$(TRAIN) export --checkpoint runs/detector/detector.pt --out ../models/default

# Add the mini-CLIP image encoder (exemplar categories) to the default bundle, no retraining.
image-encoder:
	$(TRAIN) image_encoder --bundle ../models/default

# The paper-style table on the held-out sets (training/README.md).
eval-python:
	$(TRAIN) evaluate --checkpoint runs/detector/detector.pt --data runs/heldout --out runs/eval

# Exemplar categories against names on the held-out set (docs/exemplars.md):
# exemplars are cut from 1,500 other scenes (seed 7), never from the evaluated ones.
HELDOUT := training/runs/heldout/seen
POOL    := training/runs/exemplar-pool
eval-exemplars:
	test -f $(HELDOUT)/annotations.json || $(TRAIN) scenes --set seen --count 500 --out runs/heldout/seen
	test -f $(POOL)/annotations.json || $(TRAIN) scenes --set seen --seed 7 --count 1500 --out runs/exemplar-pool
	go run ./cmd/vild exemplars-eval --annotations $(HELDOUT)/annotations.json --images $(HELDOUT)/images \
	  --pool-annotations $(POOL)/annotations.json --pool-images $(POOL)/images $(ARGS)

# The class-agnostic mask head, a second stage on the bundle's frozen detector (rebuilt from
# models/default when missing), within 30 minutes from launch; then mask AP on the seen set
# (training/README.md "Mask head", docs/decisions/0025-mask-head.md).
.PHONY: mask-head
mask-head: setup
	$(TRAIN) train_mask_head --out runs/mask-head --time-budget 30
	$(TRAIN) evaluate --checkpoint runs/from-bundle/detector.pt --mask-head runs/mask-head/mask_head.pt \
		--data runs/heldout --sets seen --methods ensemble --out runs/mask-head/eval
