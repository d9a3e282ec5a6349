package models

import (
	"errors"
	"strings"
	"testing"
)

func TestDefault(t *testing.T) {
	b, err := Default()
	if !Present() {
		if !errors.Is(err, ErrNoDefault) || !strings.Contains(err.Error(), "--model") {
			t.Fatalf("absent default bundle: err = %v, want ErrNoDefault naming --model", err)
		}
		t.Skip("no default bundle in this build yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Manifest.Categories) == 0 {
		t.Error("default bundle has no categories")
	}
}
