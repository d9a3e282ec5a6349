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

// TestDefaultBundleOps pins the operators of the embedded default bundle's
// graphs, the table in docs/decisions/0001-inference-runtime.md: a re-export
// that adds one fails here, so the table and the runtime choice are looked at
// again. (ONNX Runtime runs them all: the golden parity test in pipeline.)
func TestDefaultBundleOps(t *testing.T) {
	want := map[string]string{
		BackboneFile:    "Add Cast Concat Constant Conv Gather MaxPool Relu Resize Shape Slice Unsqueeze",
		BoxHeadFile:     "Cast Clip Constant Div Expand Flatten Gemm ReduceL2 Relu Shape",
		TextEncoderFile: "Add ArgMax Cast Clip Concat Constant Div Erf Expand Flatten Gather Gemm LayerNormalization MatMul Mul Range ReduceL2 Reshape Shape Slice Softmax Transpose Unsqueeze",
	}
	for _, name := range []string{BackboneFile, BoxHeadFile, TextEncoderFile} {
		data, err := os.ReadFile(filepath.Join("..", "models", "default", name))
		if err != nil {
			t.Fatal(err)
		}
		ops, err := GraphOps(data)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(SortedOps(ops), " "); got != want[name] {
			t.Errorf("%s: operators\n  %s\nwant\n  %s", name, got, want[name])
		}
	}
}
