//go:build !cgo

package ort

// Open fails: this build has no cgo, so it cannot load ONNX Runtime. Rebuild
// with CGO_ENABLED=1 (the default when gcc is installed) to run models.
func Open(cfg Config) (Runtime, error) {
	return nil, ErrDisabled
}
