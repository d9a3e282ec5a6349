// Package models holds the default model bundle compiled into the vild binary.
package models

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/vild/vild/bundle"
)

// The bundle directory; see default/README.md. When the trained bundle is
// committed, narrow this pattern to its runtime files (manifest.json, *.onnx,
// *.npy, tokenizer) so that golden/ stays out of the binary; the tests read
// the goldens from the directory on disk (DefaultDir).
//
//go:embed default/manifest.json default/*.onnx default/*.npy default/tokenizer
var files embed.FS

// DefaultDir is the default bundle's directory relative to the repository root.
const DefaultDir = "models/default"

// ErrNoDefault is returned when this build carries no default bundle.
var ErrNoDefault = errors.New("models: no default bundle in this build (models/default has no manifest.json): " +
	"export one with `python3 -m vildtrain export` into models/default and rebuild, or serve another with --model DIR")

// FS returns the embedded default bundle's files.
func FS() fs.FS {
	sub, err := fs.Sub(files, "default")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}

// Present reports whether the default bundle is compiled in.
func Present() bool {
	_, err := fs.Stat(FS(), bundle.ManifestFile)
	return err == nil
}

// Default opens the embedded default bundle.
func Default() (*bundle.Bundle, error) {
	if !Present() {
		return nil, ErrNoDefault
	}
	b, err := bundle.OpenFS(FS(), "embedded default bundle")
	if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	return b, nil
}
