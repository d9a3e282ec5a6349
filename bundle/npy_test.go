package bundle

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func readTestNPY(t *testing.T, name string) (*Array, error) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return ReadNPY(bytes.NewReader(data))
}

func TestReadNPYWrittenByNumPy(t *testing.T) {
	tests := []struct {
		file  string
		dtype DType
		shape []int
		f32   []float32
		i64   []int64
		u8    []byte
	}{
		{"f32_2x3.npy", Float32, []int{2, 3}, []float32{0, 0.25, 0.5, 0.75, 1, 1.25}, nil, nil},
		{"i64_4.npy", Int64, []int{4}, nil, []int64{0, -1, 49407, 1 << 40}, nil},
		{"f32_scalar.npy", Float32, []int{}, []float32{1.5}, nil, nil},
		{"f32_empty.npy", Float32, []int{0, 5}, []float32{}, nil, nil},
		// np.packbits of the 3x3 bits 101 001 111: 0b10100111, 0b10000000
		{"u8_packbits.npy", Uint8, []int{2}, nil, nil, []byte{0xa7, 0x80}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			a, err := readTestNPY(t, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if a.DType != tc.dtype || !reflect.DeepEqual(a.Shape, tc.shape) {
				t.Fatalf("got %s %v, want %s %v", a.DType, a.Shape, tc.dtype, tc.shape)
			}
			if tc.f32 != nil && !reflect.DeepEqual(a.F32, tc.f32) {
				t.Errorf("data %v, want %v", a.F32, tc.f32)
			}
			if tc.i64 != nil && !reflect.DeepEqual(a.I64, tc.i64) {
				t.Errorf("data %v, want %v", a.I64, tc.i64)
			}
			if tc.u8 != nil && !reflect.DeepEqual(a.U8, tc.u8) {
				t.Errorf("data %x, want %x", a.U8, tc.u8)
			}
		})
	}
}

func TestReadNPYRejects(t *testing.T) {
	valid, err := os.ReadFile("testdata/f32_2x3.npy")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"float64", mustRead(t, "testdata/f64_bad.npy")},
		{"fortran order", mustRead(t, "testdata/f32_fortran_bad.npy")},
		{"empty", nil},
		{"bad magic", append([]byte("\x93NUMPZ"), valid[6:]...)},
		{"bad version", append([]byte("\x93NUMPY\x09\x00"), valid[8:]...)},
		{"truncated header", valid[:40]},
		{"truncated data", valid[:len(valid)-1]},
		{"huge shape", npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }")},
		{"negative dim", npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }")},
		{"no shape", npyWithHeader("{'descr': '<f4', 'fortran_order': False, }")},
		{"not a dict", npyWithHeader("descr")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ReadNPY(bytes.NewReader(tc.data)); !errors.Is(err, ErrNPY) {
				t.Fatalf("err = %v, want ErrNPY", err)
			}
		})
	}
}

func TestWriteNPYRoundTrip(t *testing.T) {
	for _, a := range []*Array{
		{DType: Float32, Shape: []int{2, 2}, F32: []float32{1, -2, 3.5, 0}},
		{DType: Int64, Shape: []int{3}, I64: []int64{7, -7, 1 << 50}},
		{DType: Float32, Shape: []int{1, 0, 4}, F32: []float32{}},
	} {
		var buf bytes.Buffer
		if err := WriteNPY(&buf, a); err != nil {
			t.Fatal(err)
		}
		if (buf.Len()-4*len(a.F32)-8*len(a.I64))%64 != 0 {
			t.Errorf("header not padded to 64 bytes: file of %d bytes", buf.Len())
		}
		got, err := ReadNPY(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, a) {
			t.Errorf("round trip: got %+v, want %+v", got, a)
		}
	}
	if err := WriteNPY(&bytes.Buffer{}, &Array{DType: Float32, Shape: []int{3}, F32: []float32{1}}); err == nil {
		t.Error("WriteNPY accepted 1 value for shape [3]")
	}
}

func FuzzReadNPY(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.npy")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ReadNPY(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrNPY) {
				t.Fatalf("error %v does not wrap ErrNPY", err)
			}
			return
		}
		if n := a.Len(); len(a.F32)+len(a.I64)+len(a.U8) != n {
			t.Fatalf("shape %v holds %d values, decoded %d", a.Shape, n, len(a.F32)+len(a.I64)+len(a.U8))
		}
		var buf bytes.Buffer
		if err := WriteNPY(&buf, a); err != nil {
			t.Fatal(err)
		}
		b, err := ReadNPY(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.F32) == len(b.F32) && len(a.I64) == len(b.I64) && bytes.Equal(a.U8, b.U8) && reflect.DeepEqual(a.Shape, b.Shape) {
			return
		}
		t.Fatalf("re-encoding changed the array: %v -> %v", a.Shape, b.Shape)
	})
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func npyWithHeader(h string) []byte {
	out := []byte("\x93NUMPY\x01\x00")
	out = append(out, byte(len(h)), byte(len(h)>>8))
	return append(out, h...)
}
