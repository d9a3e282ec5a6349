package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// FileName is the keys file's name in the data directory.
const FileName = "keys.json"

// CheckEvery is how often a FileStore looks whether its file changed: a key
// revoked by another process (vild keys revoke) stops working within it.
const CheckEvery = 250 * time.Millisecond

// file is the keys file's content.
type file struct {
	Keys []Key `json:"keys"`
}

// FileStore keeps keys in one JSON file (mode 0600), written atomically
// (temporary file, fsync, rename) under an advisory lock, so that the
// command line and running servers can share it. A server's lookups are
// served from memory; the file is read again when its identity, size or
// modification time changed, looked at no more often than every CheckEvery
// for a key it holds (a revocation) and at every miss (a new key).
type FileStore struct {
	path  string
	every time.Duration
	now   func() time.Time

	mu      sync.Mutex
	byHash  map[string]*Key
	stat    fs.FileInfo // of the file last read; nil: there was none
	checked time.Time
}

var _ Store = (*FileStore)(nil)

// OpenFileStore reads the keys file at path (none yet: no keys), creating
// its directory if needed. A file that does not parse is an error.
func OpenFileStore(path string) (*FileStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("apikey: %w", err)
	}
	s := &FileStore{path: path, every: CheckEvery, now: time.Now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the keys file.
func (s *FileStore) Path() string { return s.path }

// read returns the file's keys and its stat (nil, nil when there is no file).
func read(path string) ([]Key, fs.FileInfo, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("apikey: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("apikey: %w", err)
	}
	var c file
	if err := json.NewDecoder(f).Decode(&c); err != nil {
		return nil, nil, fmt.Errorf("apikey: %s does not parse: %w", path, err)
	}
	return c.Keys, st, nil
}

// reload reads the file into memory; s.mu is held.
func (s *FileStore) reload() error {
	keys, st, err := read(s.path)
	if err != nil {
		return err
	}
	m := make(map[string]*Key, len(keys))
	for i := range keys {
		m[keys[i].Hash] = &keys[i]
	}
	s.byHash, s.stat, s.checked = m, st, s.now()
	return nil
}

// changed reports whether the file is not the one last read.
func changed(old, cur fs.FileInfo) bool {
	if old == nil || cur == nil {
		return (old == nil) != (cur == nil)
	}
	return !os.SameFile(old, cur) || old.Size() != cur.Size() || !old.ModTime().Equal(cur.ModTime())
}

// refresh reads the file again when it changed, looking no more often than
// CheckEvery unless force; s.mu is held. A file that cannot be read fails
// every lookup (no key is trusted from a file that may have revoked it)
// until it can.
func (s *FileStore) refresh(force bool) error {
	if s.byHash != nil && !force && s.now().Sub(s.checked) < s.every {
		return nil
	}
	cur, err := os.Stat(s.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.byHash = nil
		return fmt.Errorf("apikey: %w: %w", ErrUnavailable, err)
	}
	if s.byHash != nil && !changed(s.stat, cur) {
		s.checked = s.now()
		return nil
	}
	if err := s.reload(); err != nil {
		s.byHash = nil
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Lookup returns the key of a token's hash (see Store).
func (s *FileStore) Lookup(ctx context.Context, hash string) (*Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refresh(false); err != nil {
		return nil, err
	}
	k, ok := s.byHash[hash]
	if !ok {
		// A key made a moment ago works at once: a miss looks at the file
		// (a stat; read only when it changed).
		if err := s.refresh(true); err != nil {
			return nil, err
		}
		if k, ok = s.byHash[hash]; !ok {
			return nil, ErrInvalidKey
		}
	}
	return k, nil
}

// List returns the keys in the file, sorted by name.
func (s *FileStore) List(ctx context.Context) ([]Key, error) {
	keys, _, err := read(s.path)
	if err != nil {
		return nil, err
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys, nil
}

// Create adds k to the file (see Store).
func (s *FileStore) Create(ctx context.Context, k Key) error {
	if err := CheckName(k.Name); err != nil {
		return err
	}
	return s.update(func(keys []Key) ([]Key, error) {
		for _, o := range keys {
			if o.Name == k.Name {
				return nil, ErrExists
			}
		}
		return append(keys, k), nil
	})
}

// Revoke removes the named key from the file (see Store).
func (s *FileStore) Revoke(ctx context.Context, name string) error {
	return s.update(func(keys []Key) ([]Key, error) {
		for i, o := range keys {
			if o.Name == name {
				return append(keys[:i:i], keys[i+1:]...), nil
			}
		}
		return nil, ErrNotFound
	})
}

// update changes the file under its lock: read, fn, write atomically.
func (s *FileStore) update(fn func([]Key) ([]Key, error)) error {
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return fmt.Errorf("apikey: lock: %w", err)
	}
	defer unlock()
	keys, _, err := read(s.path)
	if err != nil {
		return err
	}
	keys, err = fn(keys)
	if err != nil {
		return err
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	b, err := json.MarshalIndent(file{Keys: keys}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(s.path, append(b, '\n')); err != nil {
		return fmt.Errorf("apikey: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reload()
}

// writeAtomic replaces path with b: a synced temporary file of mode 0600 in
// the same directory, renamed over it, and the directory synced.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".keys-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after the rename; removed after a failure
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
