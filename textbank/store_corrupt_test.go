package textbank

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A cache file that is garbage, another format or a truncated bbolt file is
// moved aside (path.corrupt-<time>, its bytes kept) and a new cache starts in
// its place; the server does not stop for a cache.
func TestCorruptCacheMovedAside(t *testing.T) {
	// A real cache with enough entries to span many pages.
	good := filepath.Join(t.TempDir(), "good.db")
	s, err := OpenBoltStore(good)
	if err != nil {
		t.Fatal(err)
	}
	e := make([]float32, 256)
	for i := range 600 {
		if err := s.Put([]byte("bucket"), strings.Repeat("n", i%50)+string(rune('a'+i%26))+string(rune(i)), e); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	real, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(good, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var used int64 // bytes of pages the file claims
	db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	db.Close()
	if used < 64<<10 || int64(len(real)) < used {
		t.Fatalf("the cache uses %d of %d bytes: too small to truncate meaningfully", used, len(real))
	}
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + i>>8)
	}
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"garbage", []byte("these are not the bytes of a database")},
		{"64 KiB of garbage", garbage},
		{"SQLite file", append([]byte("SQLite format 3\x00"), make([]byte, 8192)...)},
		{"meta page only", real[:4096]},
		{"meta pages only", real[:8192]},
		{"truncated to a quarter", real[:used/4]},
		{"truncated to half", real[:used/2]},
		{"last page cut", real[:used-4096]},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "textbank.db")
			if err := os.WriteFile(path, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := OpenBoltStore(path)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			aside, why := s.MovedAside()
			if filepath.Dir(aside) != dir || !strings.HasPrefix(filepath.Base(aside), "textbank.db.corrupt-") || why == "" {
				t.Fatalf("moved aside to %q (%q)", aside, why)
			}
			if kept, err := os.ReadFile(aside); err != nil || !bytes.Equal(kept, c.data) {
				t.Fatalf("the corrupt file was not kept as it was: %v", err)
			}
			// The new cache works and is a good file the next time.
			if err := s.Put([]byte("b"), "kettle", []float32{1, 2}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = OpenBoltStore(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if aside, _ := s.MovedAside(); aside != "" {
				t.Fatalf("the new cache was moved aside too (%s)", aside)
			}
			if v, err := s.Get([]byte("b"), "kettle", 2); err != nil || len(v) != 2 || v[1] != 2 {
				t.Fatalf("get after reopening: %v %v", v, err)
			}
		})
	}
	t.Run("a good file stays", func(t *testing.T) {
		s, err := OpenBoltStore(good)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if aside, _ := s.MovedAside(); aside != "" {
			t.Fatalf("a good cache was moved aside to %s", aside)
		}
		if v, err := s.Get([]byte("bucket"), "a"+string(rune(0)), 256); err != nil || len(v) != 256 {
			t.Fatalf("get: %d %v", len(v), err)
		}
	})
}

// A cache another process holds is not corrupt: opening it stays an error
// (ErrCacheInUse) and the file stays where it is.
func TestCacheInUseIsNotMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "textbank.db")
	first, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := OpenBoltStore(path); !errors.Is(err, ErrCacheInUse) || errors.Is(err, ErrCacheCorrupt) {
		t.Fatalf("second open: %v, want ErrCacheInUse", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files %v: the held cache was moved", ents)
	}
	// A failure of the system, not of the bytes (here: a directory where the
	// file should be), is an error too, and nothing is moved.
	sub := filepath.Join(dir, "sub.db")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBoltStore(sub); err == nil || errors.Is(err, ErrCacheCorrupt) {
		t.Fatalf("open a directory: %v, want an error that is not ErrCacheCorrupt", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("files %v: something was moved", ents)
	}
}
