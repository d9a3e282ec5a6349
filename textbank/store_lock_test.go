package textbank

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenStoreHeldByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "textbank.db")
	first, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = OpenBoltStore(path)
	if !errors.Is(err, ErrCacheInUse) || !strings.Contains(err.Error(), "--data-dir") {
		t.Fatalf("second open: err = %v, want ErrCacheInUse naming --data-dir", err)
	}
}
