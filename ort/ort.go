// Package ort runs ONNX graphs with ONNX Runtime. It is vild's only cgo
// package: everything else talks to the Runtime and Session interfaces and is
// tested without the native library. Builds with CGO_ENABLED=0 get a twin whose
// Open says how to enable the runtime (ort_disabled.go).
//
// One Session per graph is shared by all goroutines (ONNX Runtime's Run is
// thread-safe). A Run is aborted when its context ends, through
// RunOptions.Terminate.
package ort

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DType is a tensor element type.
type DType int

// The element types vild's graphs use.
const (
	Float32 DType = iota + 1
	Int64
)

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Int64:
		return "int64"
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// Tensor is a dense tensor in C order: F32 holds float32 data, I64 int64 data.
type Tensor struct {
	Shape []int64
	F32   []float32
	I64   []int64
}

// DType reports the element type: int64 when I64 is set, float32 otherwise.
func (t Tensor) DType() DType {
	if t.I64 != nil {
		return Int64
	}
	return Float32
}

// Len is the element count the shape implies.
func (t Tensor) Len() int {
	n := 1
	for _, d := range t.Shape {
		n *= int(d)
	}
	return n
}

// Info describes a graph input or output. Dynamic dimensions are -1.
type Info struct {
	Name  string
	DType DType
	Shape []int64
}

func (i Info) String() string { return fmt.Sprintf("%s %s %v", i.Name, i.DType, i.Shape) }

// Session is one loaded graph.
type Session interface {
	// Name is the name the session was created with, for messages.
	Name() string
	Inputs() []Info
	Outputs() []Info
	// Run evaluates every output of the graph. All inputs must be given, with
	// the graph's element types and the graph's fixed dimensions.
	Run(ctx context.Context, inputs map[string]Tensor) (map[string]Tensor, error)
	// Close releases the native session; Run must not be called after.
	Close() error
}

// IntoRunner is a Session that writes its outputs into the caller's buffers
// instead of new ones: no allocation and no copy of the outputs, for a caller
// that knows their shapes. The sessions of this package's Runtime implement
// it; other Sessions (test fakes) need not.
type IntoRunner interface {
	// RunInto is Run with outputs[name] receiving output name: every output of
	// the graph must be given, with its element type, its shape as the graph
	// will compute it, and as many values as the shape implies.
	RunInto(ctx context.Context, inputs, outputs map[string]Tensor) error
}

// Runtime creates sessions.
type Runtime interface {
	// NewSession loads an ONNX model; name labels it in errors.
	NewSession(name string, model []byte) (Session, error)
	// Close releases the runtime once its sessions are closed.
	Close() error
}

// Config configures the runtime and its sessions.
type Config struct {
	// LibraryPath is the ONNX Runtime shared library; empty means
	// DefaultLibraryPath().
	LibraryPath string
	// IntraOpThreads is the thread pool size of one graph's operators; 0 means 1.
	// Keep concurrent inferences × IntraOpThreads ≤ cores
	// (docs/decisions/0001-inference-runtime.md).
	IntraOpThreads int
	// InterOpThreads is the thread pool for parallel branches; 0 means 1
	// (graphs run in sequential mode).
	InterOpThreads int
	// Spinning lets idle pool threads spin; off by default because vild runs on
	// shared CPUs where spinning steals time from other requests.
	Spinning bool
}

// LibraryEnv is the environment variable holding the library path.
const LibraryEnv = "VILD_ORT_LIB"

// DefaultLibraryRel is where `make serve` and scripts/setup.d/30-onnxruntime.sh
// place the library, relative to the repository root.
const DefaultLibraryRel = ".cache/onnxruntime/libonnxruntime.so"

// Errors returned by Open and Run.
var (
	// ErrLibraryMissing: the shared library is not where the config says.
	ErrLibraryMissing = errors.New("ort: ONNX Runtime library not found")
	// ErrDisabled: the binary was built without cgo.
	ErrDisabled = errors.New("ort: ONNX Runtime support not compiled in: this binary was built with CGO_ENABLED=0; rebuild with CGO_ENABLED=1 (and gcc) to run models")
	// ErrInput: the inputs (or RunInto's output buffers) do not fit the graph
	// (name, type or shape).
	ErrInput = errors.New("ort: bad input")
	// ErrModel: the model could not be loaded (corrupt or not ONNX).
	ErrModel = errors.New("ort: cannot load model")
)

// DefaultLibraryPath returns $VILD_ORT_LIB when set; otherwise the first
// DefaultLibraryRel found in the working directory or one of its parents
// (so tests and `go run` work from any package directory); otherwise
// DefaultLibraryRel itself.
func DefaultLibraryPath() string {
	if p := os.Getenv(LibraryEnv); p != "" {
		return p
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, filepath.FromSlash(DefaultLibraryRel))
			if _, err := os.Stat(p); err == nil {
				return p
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return DefaultLibraryRel
}

// checkLibrary returns a clear error when the library file is absent.
func checkLibrary(path string) error {
	st, err := os.Stat(path)
	if err == nil && !st.IsDir() {
		return nil
	}
	return fmt.Errorf("%w at %s: run `make serve` or `bash scripts/setup.d/30-onnxruntime.sh` to fetch it, or point --ort-lib / %s at libonnxruntime.so",
		ErrLibraryMissing, path, LibraryEnv)
}

// checkTensors validates the tensors given for a graph's inputs (kind
// "input") or for its outputs (kind "output", RunInto) against the infos.
func checkTensors(session, kind string, infos []Info, tensors map[string]Tensor) error {
	if len(tensors) != len(infos) {
		var want, got []string
		for _, in := range infos {
			want = append(want, in.Name)
		}
		for name := range tensors {
			got = append(got, name)
		}
		return fmt.Errorf("%w: %s: %ss %v, graph wants %v", ErrInput, session, kind, got, want)
	}
	for _, in := range infos {
		t, ok := tensors[in.Name]
		if !ok {
			return fmt.Errorf("%w: %s: %s %q missing", ErrInput, session, kind, in.Name)
		}
		if t.DType() != in.DType {
			return fmt.Errorf("%w: %s: %s %q is %s, graph wants %s", ErrInput, session, kind, in.Name, t.DType(), in.DType)
		}
		if len(t.Shape) != len(in.Shape) {
			return fmt.Errorf("%w: %s: %s %q has shape %v, graph wants %v", ErrInput, session, kind, in.Name, t.Shape, in.Shape)
		}
		for i, d := range t.Shape {
			if d < 0 || (in.Shape[i] >= 0 && d != in.Shape[i]) {
				return fmt.Errorf("%w: %s: %s %q has shape %v, graph wants %v", ErrInput, session, kind, in.Name, t.Shape, in.Shape)
			}
		}
		n := t.Len()
		if (t.DType() == Float32 && len(t.F32) != n) || (t.DType() == Int64 && len(t.I64) != n) {
			return fmt.Errorf("%w: %s: %s %q has %d values for shape %v", ErrInput, session, kind, in.Name, len(t.F32)+len(t.I64), t.Shape)
		}
	}
	return nil
}

// CheckSignature reports, as an ErrModel error, how a session's inputs or
// outputs differ from the names, types and ranks a caller needs. Dynamic
// dimensions (-1) in want match anything.
func CheckSignature(s Session, inputs, outputs []Info) error {
	var problems []string
	check := func(kind string, have, want []Info) {
		byName := map[string]Info{}
		for _, h := range have {
			byName[h.Name] = h
		}
		for _, w := range want {
			h, ok := byName[w.Name]
			if !ok {
				var names []string
				for _, h := range have {
					names = append(names, h.Name)
				}
				problems = append(problems, fmt.Sprintf("no %s %q (has %v)", kind, w.Name, names))
				continue
			}
			if h.DType != w.DType || len(h.Shape) != len(w.Shape) {
				problems = append(problems, fmt.Sprintf("%s %q is %s %v, want %s %v", kind, w.Name, h.DType, h.Shape, w.DType, w.Shape))
				continue
			}
			for i := range w.Shape {
				if w.Shape[i] >= 0 && h.Shape[i] >= 0 && w.Shape[i] != h.Shape[i] {
					problems = append(problems, fmt.Sprintf("%s %q has shape %v, want %v", kind, w.Name, h.Shape, w.Shape))
					break
				}
			}
		}
		if kind == "input" && len(have) != len(want) {
			problems = append(problems, fmt.Sprintf("%d inputs, want %d", len(have), len(want)))
		}
	}
	check("input", s.Inputs(), inputs)
	check("output", s.Outputs(), outputs)
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s: %s", ErrModel, s.Name(), strings.Join(problems, "; "))
	}
	return nil
}
