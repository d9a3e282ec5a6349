# vild: the README's two commands are `make serve` and `make test`.
PY      ?= /usr/bin/python3
export VILD_CACHE   ?= $(CURDIR)/.cache
export VILD_ORT_LIB ?= $(VILD_CACHE)/onnxruntime/libonnxruntime.so

.PHONY: setup serve test test-go test-python test-web build lint fuzz fuzz-ci bench

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
	go test -race -run 'Concurrent' ./ort ./pipeline ./scoring

# The request parsers' and vocabulary normalisation's fuzz targets, bounded:
# part of make test (docs/api.md, Fuzzing). Each runs a count of inputs,
# about 20 s of this machine's rate, not a duration: a duration races Go's
# fuzzing coordinator at its deadline and fails with "context deadline
# exceeded" and no input on a loaded machine. FUZZ_CI_TIME=30s (or 1000x)
# sets one budget for all four.
FUZZ_CI_TIME ?=
fuzz-ci:
	@set -e; for t in request:FuzzDecodeJSON:60000x request:FuzzOptionsFromValues:200000x \
	    request:FuzzMultipart:200000x vocabulary:FuzzNormalize:500000x; do \
	  pkg=$${t%%:*}; rest=$${t#*:}; target=$${rest%%:*}; budget=$${FUZZ_CI_TIME:-$${rest#*:}}; \
	  echo "== ./$$pkg $$target ($$budget)"; \
	  go test ./$$pkg -run '^$$' -fuzz "^$$target\$$" -fuzztime $$budget; \
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

# The speed of the shipped model (docs/performance.md): ONNX Runtime's SGEMM
# peak, scoring's two kernels, the default bundle's stages at 1 and all
# intra-op threads with 10, 703 and 1,203 classes, and serve's worker x thread
# settings, all in one run; then each figure as a ratio to the backbone and to
# the model's FLOP limit, as JSON and a table (python3 -m vildtrain bench_report),
# beside the same weights in PyTorch eager timed in each round (bench_torch).
# BENCH_COUNT rounds of every benchmark for BENCH_TIME each, one round after
# the other (so that a change in the machine's load reaches every figure
# alike, not the benchmarks that -count would have run last); the raw output
# stays in $(BENCH_OUT).
BENCH_COUNT ?= 3
BENCH_TIME  ?= 1s
BENCH_OUT   ?= $(VILD_CACHE)/bench
bench:
	VILD_SETUP_ONLY=onnxruntime bash scripts/setup.sh
	mkdir -p $(BENCH_OUT)
	rm -f $(BENCH_OUT)/bench.txt $(BENCH_OUT)/torch-*.json
	for round in $$(seq $(BENCH_COUNT)); do \
	  go test -run '^$$' -bench '^(BenchmarkSGEMM|BenchmarkProbabilities|BenchmarkDefaultBundle|BenchmarkDefaultBundleWorkers)$$' \
	    -benchtime $(BENCH_TIME) -count 1 ./ort ./scoring ./pipeline > $(BENCH_OUT)/round.txt 2>&1; status=$$?; \
	  cat $(BENCH_OUT)/round.txt; cat $(BENCH_OUT)/round.txt >> $(BENCH_OUT)/bench.txt; \
	  [ $$status -eq 0 ] || exit $$status; \
	  (cd training && $(PY) -m vildtrain bench_torch --out $(BENCH_OUT)/torch-$$round.json) || exit 1; \
	done
	cd training && $(PY) -m vildtrain bench_report $(BENCH_OUT)/bench.txt --json $(BENCH_OUT)/bench.json \
	  --torch $(BENCH_OUT)/torch-*.json

# The web page in headless Chromium (Debian's), driven by playwright-core.
test-web:
	cd web/e2e && node --test

# ---- training the embedded default model (see training/README.md) ----
TRAIN := cd training && PYTHONPATH=. nice -n 5 $(PY) -m vildtrain

.PHONY: miniclip miniclip-base detector bundle image-encoder eval-python eval-exemplars
# The teacher (training/README.md "Mini-CLIP"), in two stages of at most 60 minutes each.
# make miniclip: the base mini-CLIP (MINICLIP_BASE, by default the committed
# training/checkpoints/miniclip.pt) taught all the teacher styles, its text tower frozen
# (4,500 steps, ~25 min); writes TEACHER, the bundle's teacher (not committed: the bundle
# carries its image tower). `make miniclip-base` trains a base from scratch on two styles
# (~60 min) into training/runs/miniclip-base; pass it as MINICLIP_BASE=runs/miniclip-base/miniclip.pt
# (after removing training/runs/teacher if a run from another base left its state there).
MINICLIP_BASE ?= checkpoints/miniclip.pt
TEACHER       := runs/teacher/miniclip.pt
miniclip: setup
	$(TRAIN) train_clip --out runs/teacher --checkpoint $(TEACHER) --init $(MINICLIP_BASE) \
	  --freeze-text --styles teacher --randconv 0.5 --shade 0.5 --steps 4500 --lr 1e-3 --warmup 50
miniclip-base: setup
	$(TRAIN) train_clip --out runs/miniclip-base --checkpoint runs/miniclip-base/miniclip.pt
training/$(TEACHER):
	$(MAKE) miniclip

# ViLD detector distilled from the teacher (made by `make miniclip` when missing): writes
# training/runs/detector/detector.pt. Up to 3,000 steps: the trainer fits the count to
# 88 minutes from launch (2,000 to 2,500 on the 2-core build machine, scenes drawn
# in-process; training/README.md).
detector: setup training/$(TEACHER)
	$(TRAIN) train_detector --out runs/detector --miniclip $(TEACHER) --steps 3000 --time-budget 88 --workers 0

# Export the trained detector as the embedded default bundle (models/default).
bundle:
	$(TRAIN) export --checkpoint runs/detector/detector.pt --out ../models/default

# Add the mini-CLIP image encoder (exemplar categories) to the default bundle, no retraining.
image-encoder: training/$(TEACHER)
	$(TRAIN) image_encoder --bundle ../models/default --miniclip $(TEACHER)

# The paper-style table on the held-out sets (training/README.md).
eval-python:
	$(TRAIN) evaluate --checkpoint runs/detector/detector.pt --data runs/heldout --out runs/eval

# Exemplar categories against names on the held-out set (docs/exemplars.md):
# exemplars are cut from 1,500 other scenes (seed 7), never from the evaluated ones.
HELDOUT := training/runs/heldout/seen
POOL    := training/runs/exemplar-pool
eval-exemplars:
	test -f $(HELDOUT)/annotations.json || ($(TRAIN) scenes --set seen --count 500 --out runs/heldout/seen)
	test -f $(POOL)/annotations.json || ($(TRAIN) scenes --set seen --seed 7 --count 1500 --out runs/exemplar-pool)
	go run ./cmd/vild exemplars-eval --annotations $(HELDOUT)/annotations.json --images $(HELDOUT)/images \
	  --pool-annotations $(POOL)/annotations.json --pool-images $(POOL)/images $(ARGS)

# Scores across vocabulary sizes, stable against softmax (docs/evaluation.md
# "Calibration", docs/decisions/0027): rerun after the model changes;
# ARGS="--limit 500" for the whole set, ARGS="--model DIR" for another bundle.
.PHONY: calibration
calibration:
	test -f $(HELDOUT)/annotations.json || ($(TRAIN) scenes --set seen --count 500 --out runs/heldout/seen)
	go run ./cmd/vild calibration --annotations $(HELDOUT)/annotations.json --images $(HELDOUT)/images $(ARGS)

# ---- the reference-size bundle (docs/reference.md) ----
# Random-weight R50-FPN + CLIP ViT-B/32 text tower at 1,024 px with 1,000 proposals
# and 1,000 categories, exported to training/runs/reference (not committed), then
# the Go parity tests on it: the golden stages and chain, the text encoder and
# sampled category embeddings, and the tokenizer on its 49,408-token vocabulary.
REFERENCE ?= training/runs/reference
.PHONY: reference
reference:
	VILD_SETUP_ONLY=onnxruntime bash scripts/setup.sh
	cd training && PYTHONPATH=. $(PY) -m vildtrain export_reference --arch r50-fpn-clip-b32 --out $(abspath $(REFERENCE))
	VILD_TEST_BUNDLES=$(abspath $(REFERENCE)) go test -count=1 -timeout 60m -v -run 'TestGoldenParity/r50-fpn-clip-b32' ./pipeline
	VILD_REFERENCE_BUNDLE=$(abspath $(REFERENCE)) go test -count=1 -timeout 60m -v -run 'TestReferenceBundleText|TestReferenceVocabulary' ./textbank ./tokenizer

# The class-agnostic mask head, a second stage on the bundle's frozen detector (rebuilt from
# models/default when missing), within 30 minutes from launch; then mask AP on the seen set
# (training/README.md "Mask head", docs/decisions/0025-mask-head.md).
.PHONY: mask-head
mask-head: setup training/$(TEACHER)
	$(TRAIN) train_mask_head --out runs/mask-head --time-budget 30
	$(TRAIN) evaluate --checkpoint runs/from-bundle/detector.pt --miniclip $(TEACHER) --mask-head runs/mask-head/mask_head.pt \
		--data runs/heldout --sets seen --methods ensemble --out runs/mask-head/eval
