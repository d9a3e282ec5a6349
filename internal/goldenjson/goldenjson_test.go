package goldenjson

import (
	"encoding/json"
	"testing"
)

func TestF32s(t *testing.T) {
	var f F32s
	// 1.0 and -2.5 as little-endian float32: 0000803f, 000020c0
	if err := json.Unmarshal([]byte(`"AACAPwAAIMA="`), &f); err != nil {
		t.Fatal(err)
	}
	if len(f) != 2 || f[0] != 1 || f[1] != -2.5 {
		t.Fatalf("got %v", f)
	}
	if err := json.Unmarshal([]byte(`"AACA"`), &f); err == nil {
		t.Fatal("3 bytes decoded without error")
	}
}
