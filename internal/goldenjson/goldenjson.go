// Package goldenjson reads the JSON golden files that the testdata/gen_*.py
// scripts write from torchvision's own code: float32 arrays travel as base64
// of their little-endian bytes.
package goldenjson

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
)

// F32s is a float32 array stored as base64 of little-endian bytes.
type F32s []float32

// UnmarshalJSON decodes the base64 string.
func (f *F32s) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	if len(raw)%4 != 0 {
		return fmt.Errorf("goldenjson: %d bytes is not a whole number of float32s", len(raw))
	}
	*f = make([]float32, len(raw)/4)
	for i := range *f {
		(*f)[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return nil
}

// Load decodes the golden file at path into v, failing the test on error.
func Load(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
