package models

import (
	"errors"
	"io/fs"
	"os"
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

// The default bundle, golden outputs included, stays within 40 MB (decimal), the
// limit it is committed under; the binary embeds only its runtime files.
const maxBundleBytes = 40_000_000

func TestDefaultBundleSize(t *testing.T) {
	if !Present() {
		t.Skip("no default bundle in this build yet")
	}
	all, err := treeSize(os.DirFS("default"))
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := treeSize(FS())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("default bundle: %.1f MB on disk, %.1f MB embedded", float64(all)/1e6, float64(embedded)/1e6)
	if all > maxBundleBytes {
		t.Errorf("default bundle is %d bytes, over the %d-byte limit", all, maxBundleBytes)
	}
	if embedded == 0 || embedded > all {
		t.Errorf("embedded %d bytes of a %d-byte bundle", embedded, all)
	}
}

// treeSize adds up the sizes of the regular files under fsys.
func treeSize(fsys fs.FS) (int64, error) {
	var n int64
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	return n, err
}
