package vocabulary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// A vocabulary file that does not parse, names another vocabulary, has a name
// no vocabulary can have or holds no categories is set aside (renamed
// <file>.corrupt-<time>, its bytes kept) and listed; the others are served.
func TestFileStoreQuarantinesBadFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	good, err := OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := good.Put(ctx, "kitchen", Spec{Categories: []string{"mug"}}, Spec{Categories: []string{"mug"}}.Digest(), ""); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{ // file → content
		"garbage.json":   "\x00\x01 not JSON SECRET-CONTENT",
		"empty.json":     "",
		"truncated.json": `{"name":"truncated","categories":["mu`,
		"array.json":     `["kitchen"]`,
		"other.json":     `{"name":"kitchen","categories":["mug"],"etag":"x"}`,
		"none.json":      `{"name":"none","categories":[],"etag":"x"}`,
		"bad name!.json": `{"name":"bad name!","categories":["mug"],"etag":"x"}`,
	}
	for f, c := range bad {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := OpenFileStore(dir)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if e, err := s.Get(ctx, "kitchen"); err != nil || e.Categories[0] != "mug" {
		t.Fatalf("the good vocabulary: %+v %v", e, err)
	}
	if list, _ := s.List(ctx); len(list) != 1 {
		t.Fatalf("listed %+v, want kitchen only", list)
	}
	q := s.Quarantined()
	sort.Slice(q, func(i, j int) bool { return q[i].Name < q[j].Name })
	want := map[string]string{
		"garbage": "the file does not parse as a vocabulary", "empty": "the file does not parse as a vocabulary",
		"truncated": "the file does not parse as a vocabulary", "array": "the file does not parse as a vocabulary",
		"other": "the file holds another vocabulary's name", "none": "the file holds no categories",
		"bad name!": "the file name is not a vocabulary name",
	}
	if len(q) != len(want) {
		t.Fatalf("quarantined %+v, want %d", q, len(want))
	}
	for _, u := range q {
		if want[u.Name] != u.Reason || u.Since.IsZero() {
			t.Errorf("%q: reason %q, want %q", u.Name, u.Reason, want[u.Name])
		}
		if strings.Contains(u.Reason, "SECRET") {
			t.Errorf("reason %q holds the file's content", u.Reason)
		}
		if !strings.HasPrefix(u.File, filepath.Join(dir, u.Name+".json.corrupt-")) {
			t.Errorf("%q moved to %q", u.Name, u.File)
		}
		if kept, err := os.ReadFile(u.File); err != nil || string(kept) != bad[u.Name+".json"] {
			t.Errorf("%q: the file was not kept as it was (%v)", u.Name, err)
		}
		if _, err := os.Stat(filepath.Join(dir, u.Name+".json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%q: still under its name (%v)", u.Name, err)
		}
	}
	// Set aside once: the next start loads the good one and lists nothing.
	again, err := OpenFileStore(dir)
	if err != nil || len(again.Quarantined()) != 0 {
		t.Fatalf("reopened: %v, quarantined %+v", err, again.Quarantined())
	}
	// The name can be written again.
	if _, created, err := again.Put(ctx, "garbage", Spec{Categories: []string{"x"}}, "e", ""); err != nil || !created {
		t.Fatalf("rewrite: %v %v", created, err)
	}
}

// A file that cannot be renamed (a read-only directory) is still not loaded,
// and listed; it stays where it is.
func TestFileStoreQuarantineWithoutRename(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	fsys := osFileSystem
	fsys.rename = func(string, string) error { return &os.LinkError{Op: "rename", Err: syscall.EROFS} }
	s, err := openFileStore(dir, fsys)
	if err != nil {
		t.Fatal(err)
	}
	q := s.Quarantined()
	if len(q) != 1 || q[0].Name != "broken" || q[0].File != filepath.Join(dir, "broken.json") || !strings.Contains(q[0].Cause, "not moved aside") {
		t.Fatalf("quarantined %+v", q)
	}
	if _, err := s.Get(context.Background(), "broken"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get: %v", err)
	}
}

// failingFile is a temporary file whose Write fails after n bytes with err
// (a disk that fills up mid-write), or whose Sync fails.
type failingFile struct {
	*os.File
	n                 int
	writeErr, syncErr error
}

func (f *failingFile) Write(b []byte) (int, error) {
	if f.writeErr == nil {
		return f.File.Write(b)
	}
	k, _ := f.File.Write(b[:min(f.n, len(b))])
	return k, &os.PathError{Op: "write", Path: f.Name(), Err: f.writeErr}
}

func (f *failingFile) Sync() error {
	if f.syncErr != nil {
		return &os.PathError{Op: "sync", Path: f.Name(), Err: f.syncErr}
	}
	return f.File.Sync()
}

// A write the storage refuses (full, read-only, not permitted) wraps
// ErrStorageFull or ErrStorageReadOnly, and leaves nothing half-written: no
// temporary file, the old file and the served entry as they were.
func TestFileStoreWriteFailures(t *testing.T) {
	ctx := context.Background()
	old := Spec{Categories: []string{"mug"}}
	next := Spec{Categories: []string{"mug", "kettle", strings.Repeat("long name ", 10)}}
	for _, c := range []struct {
		name   string
		inject func(*fileSystem)
		want   error // nil: a plain error, neither sentinel
	}{
		{"disk full mid-write", func(fs *fileSystem) {
			fs.createTemp = func(dir, p string) (tempFile, error) {
				f, err := os.CreateTemp(dir, p)
				return &failingFile{File: f, n: 10, writeErr: syscall.ENOSPC}, err
			}
		}, ErrStorageFull},
		{"quota at sync", func(fs *fileSystem) {
			fs.createTemp = func(dir, p string) (tempFile, error) {
				f, err := os.CreateTemp(dir, p)
				return &failingFile{File: f, syncErr: syscall.EDQUOT}, err
			}
		}, ErrStorageFull},
		{"read-only file system", func(fs *fileSystem) {
			fs.createTemp = func(dir, p string) (tempFile, error) {
				return nil, &os.PathError{Op: "open", Path: dir, Err: syscall.EROFS}
			}
		}, ErrStorageReadOnly},
		{"permission denied at rename", func(fs *fileSystem) {
			fs.rename = func(a, b string) error { return &os.LinkError{Op: "rename", Old: a, New: b, Err: syscall.EACCES} }
		}, ErrStorageReadOnly},
		{"I/O error", func(fs *fileSystem) {
			fs.createTemp = func(dir, p string) (tempFile, error) {
				f, err := os.CreateTemp(dir, p)
				return &failingFile{File: f, n: 3, writeErr: syscall.EIO}, err
			}
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fsys := osFileSystem
			s, err := openFileStore(dir, fsys)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Put(ctx, "k", old, old.Digest(), ""); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(filepath.Join(dir, "k.json"))
			if err != nil {
				t.Fatal(err)
			}
			c.inject(&s.fs)
			_, _, err = s.Put(ctx, "k", next, next.Digest(), "")
			switch {
			case err == nil:
				t.Fatal("the write succeeded")
			case c.want != nil && !errors.Is(err, c.want):
				t.Fatalf("err %v, want %v", err, c.want)
			case c.want == nil && (errors.Is(err, ErrStorageFull) || errors.Is(err, ErrStorageReadOnly)):
				t.Fatalf("err %v: an I/O error is neither full nor read-only", err)
			}
			// Nothing half-written: the old file only, the old entry served.
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 || ents[0].Name() != "k.json" {
				t.Fatalf("files after the failed write: %v", ents)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, "k.json")); !bytes.Equal(after, before) {
				t.Fatalf("the old file changed:\n%s", after)
			}
			if e, err := s.Get(ctx, "k"); err != nil || e.ETag != old.Digest() {
				t.Fatalf("served %+v %v, want the old entry", e, err)
			}
			// A new name fails the same way and leaves nothing.
			if _, _, err := s.Put(ctx, "new", next, next.Digest(), ""); err == nil {
				t.Fatal("the write of a new name succeeded")
			}
			if _, err := s.Get(ctx, "new"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a failed create is served: %v", err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Fatalf("files after the failed create: %v", ents)
			}
		})
	}
	t.Run("delete on a read-only file system", func(t *testing.T) {
		dir := t.TempDir()
		s, err := openFileStore(dir, osFileSystem)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Put(ctx, "k", old, old.Digest(), ""); err != nil {
			t.Fatal(err)
		}
		s.fs.remove = func(name string) error { return &os.PathError{Op: "remove", Path: name, Err: syscall.EROFS} }
		if err := s.Delete(ctx, "k", ""); !errors.Is(err, ErrStorageReadOnly) {
			t.Fatalf("delete: %v", err)
		}
		if _, err := s.Get(ctx, "k"); err != nil {
			t.Fatalf("a failed delete removed the entry: %v", err)
		}
	})
	if msg := fmt.Sprint(storageError(syscall.ENOSPC)); !strings.Contains(msg, "full") {
		t.Fatalf("storageError(ENOSPC) = %q", msg)
	}
}
