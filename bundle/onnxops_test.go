package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGraphOps lists the operators of the fixture bundle's graphs (run with
// -v to print them; docs/decisions/0001-inference-runtime.md records them).
func TestGraphOps(t *testing.T) {
	dir := filepath.Join("..", "testdata", "tinybundle")
	want := map[string][]string{
		BackboneFile:    {"Conv", "MaxPool", "Resize"},
		BoxHeadFile:     {"Gemm", "Relu", "ReduceL2"},
		TextEncoderFile: {"Gather", "ArgMax", "Softmax", "LayerNormalization"},
	}
	for _, name := range []string{BackboneFile, BoxHeadFile, TextEncoderFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		ops, err := GraphOps(data)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", name, strings.Join(SortedOps(ops), " "))
		for _, op := range want[name] {
			if ops[op] == 0 {
				t.Errorf("%s: no %s among %v", name, op, SortedOps(ops))
			}
		}
		if _, err := GraphOps(data[:len(data)/3]); !errors.Is(err, ErrONNX) {
			t.Errorf("%s truncated: err = %v, want ErrONNX", name, err)
		}
	}
}

func FuzzGraphOps(f *testing.F) {
	data, err := os.ReadFile(filepath.Join("..", "testdata", "tinybundle", BoxHeadFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte{0x3a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, err := GraphOps(data)
		if err != nil && !errors.Is(err, ErrONNX) {
			t.Fatalf("error %v does not wrap ErrONNX", err)
		}
		if err == nil && ops == nil {
			t.Fatal("nil map without error")
		}
	})
}
