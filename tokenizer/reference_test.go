package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// EnvReferenceBundle names the environment variable holding the directory of a
// reference bundle (python3 -m vildtrain export_reference; `make reference`),
// absolute or relative to the repository root. Tests that need it skip when it
// is unset.
const EnvReferenceBundle = "VILD_REFERENCE_BUNDLE"

func referenceBundle(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(EnvReferenceBundle)
	if dir == "" {
		t.Skipf("skipping: %s is not set (make reference sets it)", EnvReferenceBundle)
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join("..", dir) // tests run in tokenizer/
	}
	return dir
}

// TestReferenceVocabulary: the Go tokenizer equals the Python reference
// (golden/tokenizer/goldens.json, written by the exporter) on the tricky
// inputs under the reference bundle's 49,408-token vocabulary in CLIP's file
// format, read both as vocab.json + merges.txt and as CLIP's own
// bpe_simple_vocab_16e6.txt.gz made from the same merges.
func TestReferenceVocabulary(t *testing.T) {
	dir := referenceBundle(t)
	data, err := os.ReadFile(filepath.Join(dir, "golden", "tokenizer", "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if g.VocabSize != 49408 || g.ContextLength != 77 || len(g.Cases) < 30 {
		t.Fatalf("goldens: vocab %d, context %d, %d cases; want CLIP's 49,408 and 77, 30 cases or more",
			g.VocabSize, g.ContextLength, len(g.Cases))
	}
	hf, err := LoadDir(filepath.Join(dir, "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	merges, err := os.ReadFile(filepath.Join(dir, "tokenizer", "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	header := []byte("#version: 0.2\n")
	if !bytes.HasPrefix(merges, header) {
		t.Fatalf("merges.txt does not start with %q", header)
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("\"bpe_simple_vocab_16e6.txt#version: 0.2\n"))
	zw.Write(merges[len(header):])
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	gz, err := LoadCLIPGzip(&z)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]*Tokenizer{"vocab.json+merges.txt": hf, ClipGzipName: gz} {
		t.Run(name, func(t *testing.T) {
			if ids, _ := tok.EncodeContext("", 3); !slices.Equal(ids, []int64{49406, 49407, 0}) {
				t.Errorf("start and end ids %v, want CLIP's 49406, 49407", ids[:2])
			}
			checkGoldens(t, tok, g)
		})
	}
	// The trained merges are multi-level (a merge of merges), as real CLIP's are.
	if ids := hf.Encode("photo"); len(ids) != 1 {
		t.Errorf("\"photo\" is %d tokens, want one (the trained merges build it)", len(ids))
	}
}
