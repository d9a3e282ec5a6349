// Package testbundle gives tests the bundles that the golden parity harness
// runs over — the committed random-weight fixture testdata/tinybundle (made by
// `python3 -m vildtrain fixture_bundle`), the default bundle models/default
// when it is present, and any bundle directories listed in $VILD_TEST_BUNDLES
// — and an ONNX Runtime, or a skip when the library is absent.
package testbundle

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/ort"
)

// FixtureDir is the random-weight fixture bundle, relative to the repository root.
const FixtureDir = "testdata/tinybundle"

// EnvBundles names the environment variable that adds bundle directories to
// All: a list separated like $PATH (":" on Unix), each absolute or relative
// to the repository root. It lets the harness check any export, for example
// `VILD_TEST_BUNDLES=/tmp/export go test ./detector/... ./textbank/...`.
const EnvBundles = "VILD_TEST_BUNDLES"

// Root returns the repository root (the directory holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testbundle: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Fixture opens testdata/tinybundle.
func Fixture(t testing.TB) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Open(filepath.Join(Root(t), FixtureDir))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// All opens every bundle the parity harness covers: the fixture,
// models/default when it holds a manifest, and every directory listed in
// $VILD_TEST_BUNDLES (which must each be a bundle: a typo fails the test
// rather than silently testing less).
func All(t testing.TB) []*bundle.Bundle {
	t.Helper()
	root := Root(t)
	out := []*bundle.Bundle{Fixture(t)}
	open := func(dir string) {
		b, err := bundle.Open(dir)
		if err != nil {
			t.Fatalf("testbundle: %v", err)
		}
		out = append(out, b)
	}
	def := filepath.Join(root, "models", "default")
	if _, err := os.Stat(filepath.Join(def, bundle.ManifestFile)); err == nil {
		open(def)
	} else {
		t.Logf("testbundle: no default bundle in models/default yet")
	}
	for _, dir := range filepath.SplitList(os.Getenv(EnvBundles)) {
		if dir == "" {
			continue
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(root, dir)
		}
		open(dir)
	}
	return out
}

// Runtime opens ONNX Runtime with cfg, or skips the test when the library is
// absent or the build has no cgo. `make test` fetches the library, so CI runs
// these tests.
func Runtime(t testing.TB, cfg ort.Config) ort.Runtime {
	t.Helper()
	rt, err := ort.Open(cfg)
	if errors.Is(err, ort.ErrLibraryMissing) || errors.Is(err, ort.ErrDisabled) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Error(err)
		}
	})
	return rt
}

// Array reads a .npy file of bundle b (for golden files).
func Array(t testing.TB, b *bundle.Bundle, name string) *bundle.Array {
	t.Helper()
	data, err := b.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	a, err := bundle.ReadNPY(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return a
}

// MaxAbsDiff returns the largest |a[i] - b[i]| and its index; a length
// mismatch gives +Inf.
func MaxAbsDiff(a, b []float32) (float64, int) {
	if len(a) != len(b) {
		return math.Inf(1), -1
	}
	worst, at := 0.0, -1
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if d > worst || math.IsNaN(d) {
			worst, at = d, i
			if math.IsNaN(d) {
				return math.Inf(1), i
			}
		}
	}
	return worst, at
}
