// Package bundle reads vild model bundles (docs/bundle.md): the manifest with
// every number the pipeline needs, the ONNX graphs, the tokenizer files and
// the NumPy arrays, from a directory or any fs.FS (the embedded default), with
// every file checked against the manifest's SHA-256.
package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
)

// Names of the files in a bundle.
const (
	ManifestFile           = "manifest.json"
	BackboneFile           = "backbone.onnx"
	BoxHeadFile            = "box_head.onnx"
	TextEncoderFile        = "text_encoder.onnx"
	ImageEncoderFile       = "image_encoder.onnx" // optional: exemplar categories
	MaskHeadFile           = "mask_head.onnx"     // optional: instance masks
	VocabFile              = "tokenizer/vocab.json"
	MergesFile             = "tokenizer/merges.txt"
	TokenizerDir           = "tokenizer"
	BackgroundFile         = "background.npy"
	CategoryEmbeddingsFile = "category_embeddings.npy"
	GoldenDir              = "golden"
)

// RuntimeFiles are the files a server needs; each must have a checksum in the
// manifest.
var RuntimeFiles = []string{
	BackboneFile, BoxHeadFile, TextEncoderFile, VocabFile, MergesFile,
	BackgroundFile, CategoryEmbeddingsFile,
}

// Errors wrapped by Open and ReadFile.
var (
	ErrMissing  = errors.New("bundle: file missing")
	ErrChecksum = errors.New("bundle: checksum mismatch")
)

// Bundle is an opened, validated bundle.
type Bundle struct {
	FS       fs.FS     // the bundle's root
	Source   string    // where it came from, for messages: a directory or "embedded"
	Manifest *Manifest // the validated manifest
	// Digest identifies the bundle's content: the SHA-256 of manifest.json,
	// which itself holds the SHA-256 of every other file.
	Digest string
}

// Open opens the bundle in directory dir.
func Open(dir string) (*Bundle, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle: open %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("bundle: open %s: not a directory", dir)
	}
	return OpenFS(os.DirFS(dir), dir)
}

// OpenFS opens the bundle at the root of fsys; source names it in messages.
// It parses and validates the manifest and checks every runtime file's
// presence and checksum, so a bad bundle fails here and not mid-request.
func OpenFS(fsys fs.FS, source string) (*Bundle, error) {
	raw, err := fs.ReadFile(fsys, ManifestFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("bundle: open %s: %w: %s", source, ErrMissing, ManifestFile)
		}
		return nil, fmt.Errorf("bundle: open %s: %w", source, err)
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("bundle: open %s: %w", source, err)
	}
	sum := sha256.Sum256(raw)
	b := &Bundle{FS: fsys, Source: source, Manifest: m, Digest: "sha256:" + hex.EncodeToString(sum[:])}
	for _, name := range RuntimeFiles {
		if _, err := b.ReadFile(name); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// ReadFile reads a bundle file, checking it against the manifest's checksum
// when it has one.
func (b *Bundle) ReadFile(name string) ([]byte, error) {
	data, err := fs.ReadFile(b.FS, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("bundle: %s: %w: %s", b.Source, ErrMissing, name)
		}
		return nil, fmt.Errorf("bundle: %s: read %s: %w", b.Source, name, err)
	}
	if want, ok := b.Manifest.SHA256[name]; ok {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			return nil, fmt.Errorf("bundle: %s: %w: %s has sha256 %s, manifest says %s (truncated or replaced file?)",
				b.Source, ErrChecksum, name, got, want)
		}
	}
	return data, nil
}

// ReadArray reads and decodes a .npy file of the bundle.
func (b *Bundle) ReadArray(name string) (*Array, error) {
	data, err := b.ReadFile(name)
	if err != nil {
		return nil, err
	}
	a, err := ReadNPY(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("bundle: %s: %s: %w", b.Source, name, err)
	}
	return a, nil
}

// Background returns the learned background embedding [D].
func (b *Bundle) Background() ([]float32, error) {
	a, err := b.ReadArray(BackgroundFile)
	if err != nil {
		return nil, err
	}
	if a.DType != Float32 || len(a.Shape) != 1 || a.Shape[0] != b.Manifest.Embedding.Dim {
		return nil, fmt.Errorf("bundle: %s: %s: %s %v, want float32 [%d]", b.Source, BackgroundFile, a.DType, a.Shape, b.Manifest.Embedding.Dim)
	}
	return a.F32, nil
}

// CategoryEmbeddings returns the precomputed text embeddings of
// Manifest.Categories, one row per category in the same order.
func (b *Bundle) CategoryEmbeddings() ([][]float32, error) {
	a, err := b.ReadArray(CategoryEmbeddingsFile)
	if err != nil {
		return nil, err
	}
	k, d := len(b.Manifest.Categories), b.Manifest.Embedding.Dim
	if a.DType != Float32 || len(a.Shape) != 2 || a.Shape[0] != k || a.Shape[1] != d {
		return nil, fmt.Errorf("bundle: %s: %s: %s %v, want float32 [%d %d]", b.Source, CategoryEmbeddingsFile, a.DType, a.Shape, k, d)
	}
	return Rows(a.F32, d), nil
}

// GoldenCases lists the case directories under golden/, sorted; none is not
// an error (the embedded bundle leaves them out).
func (b *Bundle) GoldenCases() ([]string, error) {
	entries, err := fs.ReadDir(b.FS, GoldenDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bundle: %s: list %s: %w", b.Source, GoldenDir, err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, path.Join(GoldenDir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// Rows splits a row-major [N, d] slice into N rows sharing its memory.
func Rows(flat []float32, d int) [][]float32 {
	if d <= 0 {
		return nil
	}
	out := make([][]float32, len(flat)/d)
	for i := range out {
		out[i] = flat[i*d : (i+1)*d : (i+1)*d]
	}
	return out
}
