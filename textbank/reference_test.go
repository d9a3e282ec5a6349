package textbank

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
)

// referenceSamples is how many of the reference bundle's categories
// TestReferenceBundleText encodes again: each is 12 prompts through the
// 77-token CLIP B/32 text tower (about 2.9 GMAC a prompt), so all 1,000 would
// take most of an hour on two cores.
const referenceSamples = 10

// TestReferenceBundleText runs TestBundleParity's checks on the reference
// bundle ($VILD_REFERENCE_BUNDLE; `make reference`): the tokenizer gives the
// exporter's ids, the text encoder under ONNX Runtime its embeddings (1e-4),
// and the prompt ensembles of evenly spaced categories, recomputed from their
// names, equal category_embeddings.npy (1e-4). Skipped when the variable is unset.
func TestReferenceBundleText(t *testing.T) {
	dir := os.Getenv("VILD_REFERENCE_BUNDLE")
	if dir == "" {
		t.Skip("skipping: VILD_REFERENCE_BUNDLE is not set (make reference sets it)")
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(testbundle.Root(t), dir)
	}
	rt := testbundle.Runtime(t, ort.Config{})
	b, err := bundle.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkTextParity(t, rt, b, referenceSamples)
}
