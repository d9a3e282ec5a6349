//go:build !cgo

package ort

import (
	"errors"
	"strings"
	"testing"
)

func TestOpenWithoutCgo(t *testing.T) {
	_, err := Open(Config{})
	if !errors.Is(err, ErrDisabled) || !strings.Contains(err.Error(), "CGO_ENABLED=1") {
		t.Fatalf("err = %v, want ErrDisabled saying how to enable it", err)
	}
}
