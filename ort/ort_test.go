//go:build cgo

package ort

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vild/vild/bundle"
)

// openRuntime opens the runtime or skips the test when the library is absent
// (`make test` fetches it, so CI runs these tests).
func openRuntime(t testing.TB, cfg Config) Runtime {
	t.Helper()
	rt, err := Open(cfg)
	if errors.Is(err, ErrLibraryMissing) {
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

func loadSession(t testing.TB, rt Runtime, file string) Session {
	t.Helper()
	model, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	s, err := rt.NewSession(file, model)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func readNPY(t testing.TB, name string) *bundle.Array {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	a, err := bundle.ReadNPY(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestMissingLibrary(t *testing.T) {
	_, err := Open(Config{LibraryPath: filepath.Join(t.TempDir(), "libonnxruntime.so")})
	if !errors.Is(err, ErrLibraryMissing) {
		t.Fatalf("err = %v, want ErrLibraryMissing", err)
	}
	for _, hint := range []string{"make serve", "scripts/setup.d/30-onnxruntime.sh", "VILD_ORT_LIB", "--ort-lib"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("error %q does not mention %s", err, hint)
		}
	}
}

func TestRunMatchesNumPy(t *testing.T) {
	rt := openRuntime(t, Config{})
	s := loadSession(t, rt, "mlp.onnx")
	if got := fmt.Sprint(s.Inputs()); got != "[x float32 [-1 8]]" {
		t.Errorf("inputs %s", got)
	}
	if got := fmt.Sprint(s.Outputs()); got != "[y float32 [-1 4] n int64 [1]]" {
		t.Errorf("outputs %s", got)
	}
	x, y := readNPY(t, "mlp_x.npy"), readNPY(t, "mlp_y.npy")
	out, err := s.Run(context.Background(), map[string]Tensor{"x": {Shape: []int64{3, 8}, F32: x.F32}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out["y"].Shape) != "[3 4]" || fmt.Sprint(out["n"].I64) != "[3]" {
		t.Fatalf("outputs %v", out)
	}
	for i, v := range out["y"].F32 {
		if d := math.Abs(float64(v - y.F32[i])); d > 1e-5 {
			t.Errorf("y[%d] = %v, NumPy says %v", i, v, y.F32[i])
		}
	}
	// Dynamic batch of zero rows.
	out, err = s.Run(context.Background(), map[string]Tensor{"x": {Shape: []int64{0, 8}, F32: []float32{}}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out["y"].Shape) != "[0 4]" {
		t.Errorf("empty batch: shape %v", out["y"].Shape)
	}
}

// TestRunInto: outputs written into the caller's buffers equal Run's, and
// buffers that do not fit the graph's outputs are ErrInput, or the graph's
// own error for a shape only the run reveals.
func TestRunInto(t *testing.T) {
	rt := openRuntime(t, Config{})
	s := loadSession(t, rt, "mlp.onnx")
	x := readNPY(t, "mlp_x.npy")
	in := map[string]Tensor{"x": {Shape: []int64{3, 8}, F32: x.F32}}
	want, err := s.Run(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	y, n := make([]float32, 12), make([]int64, 1)
	if err := s.(IntoRunner).RunInto(context.Background(), in, map[string]Tensor{
		"y": {Shape: []int64{3, 4}, F32: y}, "n": {Shape: []int64{1}, I64: n}}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(y) != fmt.Sprint(want["y"].F32) || n[0] != 3 {
		t.Fatalf("RunInto gave y %v n %v, Run %v %v", y, n, want["y"].F32, want["n"].I64)
	}
	for _, tc := range []struct {
		name    string
		outputs map[string]Tensor
		text    string
	}{
		{"missing output", map[string]Tensor{"y": {Shape: []int64{3, 4}, F32: y}}, "outputs [y]"},
		{"short buffer", map[string]Tensor{"y": {Shape: []int64{3, 4}, F32: y[:8]}, "n": {Shape: []int64{1}, I64: n}}, `output "y" has 8 values`},
	} {
		err := s.(IntoRunner).RunInto(context.Background(), in, tc.outputs)
		if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: err = %v, want ErrInput saying %q", tc.name, err, tc.text)
		}
	}
	err = s.(IntoRunner).RunInto(context.Background(), in, map[string]Tensor{
		"y": {Shape: []int64{2, 4}, F32: y[:8]}, "n": {Shape: []int64{1}, I64: n}})
	if err == nil || !strings.Contains(err.Error(), "mlp.onnx") {
		t.Errorf("2 rows of output for 3 rows of input: err = %v, want the run's error", err)
	}
}

func TestInt64Input(t *testing.T) {
	rt := openRuntime(t, Config{})
	s := loadSession(t, rt, "ids.onnx")
	out, err := s.Run(context.Background(), map[string]Tensor{"ids": {Shape: []int64{2, 5},
		I64: []int64{49406, 320, 49407, 0, 0, 49406, 7, 8, 9, 49407}}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out["pos"].F32) != "[2 4]" {
		t.Errorf("end-token positions %v, want [2 4]", out["pos"].F32)
	}
}

func TestBadInputs(t *testing.T) {
	rt := openRuntime(t, Config{})
	s := loadSession(t, rt, "mlp.onnx")
	tests := []struct {
		name   string
		inputs map[string]Tensor
		text   string
	}{
		{"wrong name", map[string]Tensor{"image": {Shape: []int64{1, 8}, F32: make([]float32, 8)}}, `"x" missing`},
		{"extra input", map[string]Tensor{"x": {Shape: []int64{1, 8}, F32: make([]float32, 8)}, "z": {}}, "graph wants"},
		{"wrong dtype", map[string]Tensor{"x": {Shape: []int64{1, 8}, I64: make([]int64, 8)}}, "int64"},
		{"wrong rank", map[string]Tensor{"x": {Shape: []int64{8}, F32: make([]float32, 8)}}, "shape [8]"},
		{"wrong fixed dim", map[string]Tensor{"x": {Shape: []int64{2, 4}, F32: make([]float32, 8)}}, "shape [2 4]"},
		{"short data", map[string]Tensor{"x": {Shape: []int64{2, 8}, F32: make([]float32, 8)}}, "8 values"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Run(context.Background(), tc.inputs)
			if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), tc.text) || !strings.Contains(err.Error(), "mlp.onnx") {
				t.Fatalf("err = %v, want ErrInput naming the graph and %q", err, tc.text)
			}
		})
	}
}

func TestBadModels(t *testing.T) {
	rt := openRuntime(t, Config{})
	good, err := os.ReadFile("testdata/mlp.onnx")
	if err != nil {
		t.Fatal(err)
	}
	for name, model := range map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)/2],
		"not onnx":  []byte("<html>hello</html>"),
	} {
		t.Run(name, func(t *testing.T) {
			s, err := rt.NewSession("broken.onnx", model)
			if err == nil {
				s.Close()
				t.Fatal("loaded a broken model")
			}
			if !errors.Is(err, ErrModel) || !strings.Contains(err.Error(), "broken.onnx") {
				t.Fatalf("err = %v, want ErrModel naming the file", err)
			}
		})
	}
	s := loadSession(t, rt, "mlp.onnx")
	err = CheckSignature(s, []Info{{Name: "image", DType: Float32, Shape: []int64{1, 3, -1, -1}}}, nil)
	if !errors.Is(err, ErrModel) || !strings.Contains(err.Error(), `no input "image"`) {
		t.Errorf("renamed input: %v", err)
	}
	err = CheckSignature(s, []Info{{Name: "x", DType: Float32, Shape: []int64{-1, 9}}}, []Info{{Name: "y", DType: Float32, Shape: []int64{-1, 4}}})
	if !errors.Is(err, ErrModel) || !strings.Contains(err.Error(), "shape") {
		t.Errorf("wrong shape: %v", err)
	}
	if err := CheckSignature(s, []Info{{Name: "x", DType: Float32, Shape: []int64{-1, 8}}}, []Info{{Name: "n", DType: Int64, Shape: []int64{1}}}); err != nil {
		t.Errorf("matching signature: %v", err)
	}
}

func TestCancel(t *testing.T) {
	rt := openRuntime(t, Config{})
	s := loadSession(t, rt, "slow.onnx")
	x := Tensor{Shape: []int64{256, 256}, F32: make([]float32, 256*256)}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Run(ctx, map[string]Tensor{"x": x}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled before the run: err = %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := s.Run(ctx, map[string]Tensor{"x": x}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled during the run: err = %v, want context.Canceled", err)
	}
	// The session still works after a terminated run.
	if _, err := s.Run(context.Background(), map[string]Tensor{"x": {Shape: []int64{256, 256}, F32: make([]float32, 256*256)}}); err != nil && !testing.Short() {
		t.Fatalf("run after cancel: %v", err)
	}
}

// TestConcurrentRuns shares one session among 64 goroutines (run with -race)
// and checks every output equals the serial one.
func TestConcurrentRuns(t *testing.T) {
	rt := openRuntime(t, Config{IntraOpThreads: 1})
	s := loadSession(t, rt, "mlp.onnx")
	const n = 64
	inputs := make([]Tensor, n)
	want := make([][]float32, n)
	for i := range inputs {
		rows := 1 + i%5
		x := make([]float32, rows*8)
		for j := range x {
			x[j] = float32(math.Sin(float64(i*100 + j)))
		}
		inputs[i] = Tensor{Shape: []int64{int64(rows), 8}, F32: x}
		out, err := s.Run(context.Background(), map[string]Tensor{"x": inputs[i]})
		if err != nil {
			t.Fatal(err)
		}
		want[i] = out["y"].F32
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			for range 4 {
				out, err := s.Run(context.Background(), map[string]Tensor{"x": inputs[i]})
				if err != nil {
					errs <- err
					return
				}
				if fmt.Sprint(out["y"].F32) != fmt.Sprint(want[i]) {
					errs <- fmt.Errorf("goroutine %d: concurrent output differs from serial", i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestClosedSession(t *testing.T) {
	rt := openRuntime(t, Config{})
	model, err := os.ReadFile("testdata/mlp.onnx")
	if err != nil {
		t.Fatal(err)
	}
	s, err := rt.NewSession("mlp.onnx", model)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run(context.Background(), map[string]Tensor{"x": {Shape: []int64{1, 8}, F32: make([]float32, 8)}}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("run on closed session: %v", err)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSGEMM runs ort/testdata/matmul.onnx (one MatMul, written by
// `python3 -m vildtrain kernel_graphs`) on 1024×1024 by 1024×1024
// float32 matrices, into a buffer of the caller's (RunInto: no copy of the
// output), with one intra-op thread and with one per core, and
// reports the rate as GFLOP/s (2·M·N·K floating-point operations a run) of
// wall time and as cpu-GFLOP/s of the process's CPU time (less disturbed by
// other work on a shared machine): the SGEMM peak that `make bench` divides
// the model's operation count by.
func BenchmarkSGEMM(b *testing.B) {
	const n = 1024
	a := make([]float32, n*n)
	for i := range a {
		a[i] = float32(i%17) / 17
	}
	for _, threads := range []int{1, goruntime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			s := loadSession(b, openRuntime(b, Config{IntraOpThreads: threads}), "matmul.onnx")
			in := map[string]Tensor{"a": {Shape: []int64{n, n}, F32: a}, "b": {Shape: []int64{n, n}, F32: a}}
			out := map[string]Tensor{"c": {Shape: []int64{n, n}, F32: make([]float32, n*n)}}
			cpu0 := cpuTime()
			for b.Loop() {
				if err := s.(IntoRunner).RunInto(context.Background(), in, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			b.ReportMetric(2*n*n*n*float64(b.N)/(cpuTime()-cpu0).Seconds()/1e9, "cpu-GFLOP/s")
		})
	}
}
