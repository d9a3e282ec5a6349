//go:build cgo

package ort

import (
	"context"
	"fmt"
	"sync"

	onnx "github.com/yalue/onnxruntime_go"
)

// The ONNX Runtime environment is process-wide; runtimes share it and the
// last Close destroys it.
var env struct {
	sync.Mutex
	refs int
	path string
}

type runtime struct {
	cfg    Config
	mu     sync.Mutex
	closed bool
}

// Open loads the ONNX Runtime library (once per process) and returns a
// Runtime whose sessions use cfg's thread settings.
func Open(cfg Config) (Runtime, error) {
	if cfg.LibraryPath == "" {
		cfg.LibraryPath = DefaultLibraryPath()
	}
	if cfg.IntraOpThreads <= 0 {
		cfg.IntraOpThreads = 1
	}
	if cfg.InterOpThreads <= 0 {
		cfg.InterOpThreads = 1
	}
	env.Lock()
	defer env.Unlock()
	if env.refs > 0 {
		if env.path != cfg.LibraryPath {
			return nil, fmt.Errorf("ort: open %s: the process already uses %s", cfg.LibraryPath, env.path)
		}
		env.refs++
		return &runtime{cfg: cfg}, nil
	}
	if err := checkLibrary(cfg.LibraryPath); err != nil {
		return nil, err
	}
	onnx.SetSharedLibraryPath(cfg.LibraryPath)
	if err := onnx.InitializeEnvironment(onnx.WithLogLevelError()); err != nil {
		return nil, fmt.Errorf("ort: load %s: %w", cfg.LibraryPath, err)
	}
	env.refs, env.path = 1, cfg.LibraryPath
	return &runtime{cfg: cfg}, nil
}

// Version is the loaded ONNX Runtime's version string.
func Version() string { return onnx.GetVersion() }

func (r *runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	env.Lock()
	defer env.Unlock()
	env.refs--
	if env.refs == 0 {
		if err := onnx.DestroyEnvironment(); err != nil {
			return fmt.Errorf("ort: close: %w", err)
		}
	}
	return nil
}

func (r *runtime) NewSession(name string, model []byte) (Session, error) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("ort: %s: runtime closed", name)
	}
	if len(model) == 0 {
		return nil, fmt.Errorf("%w: %s: empty model", ErrModel, name)
	}
	opts, err := r.sessionOptions()
	if err != nil {
		return nil, fmt.Errorf("ort: %s: session options: %w", name, err)
	}
	defer opts.Destroy()
	ins, outs, err := onnx.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrModel, name, err)
	}
	s := &session{name: name}
	var inNames, outNames []string
	for _, in := range ins {
		info, err := convertInfo(in)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: input %w", ErrModel, name, err)
		}
		s.inputs = append(s.inputs, info)
		inNames = append(inNames, in.Name)
	}
	for _, out := range outs {
		info, err := convertInfo(out)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: output %w", ErrModel, name, err)
		}
		s.outputs = append(s.outputs, info)
		outNames = append(outNames, out.Name)
	}
	if len(inNames) == 0 || len(outNames) == 0 {
		return nil, fmt.Errorf("%w: %s: graph has %d inputs and %d outputs", ErrModel, name, len(inNames), len(outNames))
	}
	s.s, err = onnx.NewDynamicAdvancedSessionWithONNXData(model, inNames, outNames, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrModel, name, err)
	}
	return s, nil
}

func (r *runtime) sessionOptions() (*onnx.SessionOptions, error) {
	opts, err := onnx.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	spin := "0"
	if r.cfg.Spinning {
		spin = "1"
	}
	for _, step := range []func() error{
		func() error { return opts.SetIntraOpNumThreads(r.cfg.IntraOpThreads) },
		func() error { return opts.SetInterOpNumThreads(r.cfg.InterOpThreads) },
		func() error { return opts.SetExecutionMode(onnx.ExecutionModeSequential) },
		func() error { return opts.AddSessionConfigEntry("session.intra_op.allow_spinning", spin) },
		func() error { return opts.AddSessionConfigEntry("session.inter_op.allow_spinning", spin) },
	} {
		if err := step(); err != nil {
			opts.Destroy()
			return nil, err
		}
	}
	return opts, nil
}

func convertInfo(in onnx.InputOutputInfo) (Info, error) {
	if in.OrtValueType != onnx.ONNXTypeTensor {
		return Info{}, fmt.Errorf("%q is a %s, want a tensor", in.Name, in.OrtValueType)
	}
	var dt DType
	switch in.DataType {
	case onnx.TensorElementDataTypeFloat:
		dt = Float32
	case onnx.TensorElementDataTypeInt64:
		dt = Int64
	default:
		return Info{}, fmt.Errorf("%q has element type %s, want float32 or int64", in.Name, in.DataType)
	}
	return Info{Name: in.Name, DType: dt, Shape: append([]int64(nil), in.Dimensions...)}, nil
}

type session struct {
	name            string
	inputs, outputs []Info
	s               *onnx.DynamicAdvancedSession
	mu              sync.RWMutex // Run holds it shared; Close exclusively
}

var _ Session = (*session)(nil)

func (s *session) Name() string    { return s.name }
func (s *session) Inputs() []Info  { return s.inputs }
func (s *session) Outputs() []Info { return s.outputs }

func (s *session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.s == nil {
		return nil
	}
	err := s.s.Destroy()
	s.s = nil
	if err != nil {
		return fmt.Errorf("ort: %s: close: %w", s.name, err)
	}
	return nil
}

func (s *session) Run(ctx context.Context, inputs map[string]Tensor) (map[string]Tensor, error) {
	outs := make([]onnx.Value, len(s.outputs))
	defer destroyAll(outs)
	if err := s.run(ctx, inputs, outs); err != nil {
		return nil, err
	}
	result := make(map[string]Tensor, len(outs))
	for i, v := range outs {
		name := s.outputs[i].Name
		switch t := v.(type) {
		case *onnx.Tensor[float32]:
			result[name] = Tensor{Shape: append([]int64(nil), t.GetShape()...), F32: append(make([]float32, 0, len(t.GetData())), t.GetData()...)}
		case *onnx.Tensor[int64]:
			result[name] = Tensor{Shape: append([]int64(nil), t.GetShape()...), I64: append(make([]int64, 0, len(t.GetData())), t.GetData()...)}
		default:
			return nil, fmt.Errorf("ort: %s: output %q has unsupported type %T", s.name, name, v)
		}
	}
	return result, nil
}

var _ IntoRunner = (*session)(nil)

func (s *session) RunInto(ctx context.Context, inputs, outputs map[string]Tensor) error {
	if err := checkTensors(s.name, "output", s.outputs, outputs); err != nil {
		return err
	}
	outs := make([]onnx.Value, len(s.outputs))
	defer destroyAll(outs)
	for i, info := range s.outputs {
		t := outputs[info.Name]
		var v onnx.Value
		var err error
		if info.DType == Int64 {
			v, err = onnx.NewTensor(onnx.NewShape(t.Shape...), t.I64)
		} else {
			v, err = onnx.NewTensor(onnx.NewShape(t.Shape...), t.F32)
		}
		if err != nil {
			return fmt.Errorf("ort: %s: output %q: %w", s.name, info.Name, err)
		}
		outs[i] = v
	}
	return s.run(ctx, inputs, outs)
}

// run evaluates the graph on inputs into outs: ONNX Runtime allocates the
// nil entries, and writes into the others.
func (s *session) run(ctx context.Context, inputs map[string]Tensor, outs []onnx.Value) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ort: %s: %w", s.name, err)
	}
	if err := checkTensors(s.name, "input", s.inputs, inputs); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.s == nil {
		return fmt.Errorf("ort: %s: session closed", s.name)
	}

	ins := make([]onnx.Value, len(s.inputs))
	defer destroyAll(ins)
	for i, info := range s.inputs {
		t := inputs[info.Name]
		shape := onnx.NewShape(t.Shape...)
		var v onnx.Value
		var err error
		if info.DType == Int64 {
			v, err = onnx.NewTensor(shape, t.I64)
		} else {
			v, err = onnx.NewTensor(shape, t.F32)
		}
		if err != nil {
			return fmt.Errorf("ort: %s: input %q: %w", s.name, info.Name, err)
		}
		ins[i] = v
	}

	ro, err := onnx.NewRunOptions()
	if err != nil {
		return fmt.Errorf("ort: %s: run options: %w", s.name, err)
	}
	defer ro.Destroy()
	terminated := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(terminated)
		_ = ro.Terminate()
	})
	runErr := s.s.RunWithOptions(ins, outs, ro)
	if !stop() {
		<-terminated // Terminate ran or is running: wait before destroying ro
	}
	if runErr != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("ort: %s: %w", s.name, ctxErr)
		}
		return fmt.Errorf("ort: %s: run: %w", s.name, runErr)
	}
	return nil
}

func destroyAll(vs []onnx.Value) {
	for _, v := range vs {
		if v != nil {
			_ = v.Destroy()
		}
	}
}
