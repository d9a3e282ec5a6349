package vocabulary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Entry is a stored vocabulary: a canonical spec under a name.
type Entry struct {
	Name string `json:"name" example:"kitchen"`
	Spec
	// ETag is the content digest of the canonical spec.
	ETag    string    `json:"etag" example:"sha256:9b1c..."`
	Updated time.Time `json:"updated"`
}

// Summary is one entry of a store's listing.
type Summary struct {
	Name       string    `json:"name" example:"kitchen"`
	ETag       string    `json:"etag"`
	Categories int       `json:"categories" example:"3"`
	Updated    time.Time `json:"updated"`
}

// Store keeps vocabularies by name. Writes are conditional: ifMatch, when
// set, is a list of ETags one of which the current entry must have ("*": any
// existing one), checked by the store atomically with the write.
type Store interface {
	Get(ctx context.Context, name string) (*Entry, error)
	List(ctx context.Context) ([]Summary, error)
	// Put creates or replaces name with spec (canonical, whose digest is etag);
	// created reports whether name was new.
	Put(ctx context.Context, name string, spec Spec, etag, ifMatch string) (e *Entry, created bool, err error)
	Delete(ctx context.Context, name, ifMatch string) error
}

// Watcher is implemented by stores that several processes share: fn is
// called with a vocabulary's name and previous ETag ("" when it is new) after
// any of them writes or deletes it.
type Watcher interface {
	Watch(fn func(name, oldETag string))
}

// Errors of a Store.
var (
	ErrNotFound     = errors.New("no vocabulary of that name")
	ErrETagMismatch = errors.New("the vocabulary's ETag does not match")
	ErrBadName      = errors.New("a vocabulary name is 1–64 of A–Z a–z 0–9 . _ - and starts with a letter or digit")
	// ErrUnavailable wraps failures of a shared store that a retry may cure
	// (the store is down or unreachable); nothing was written.
	ErrUnavailable = errors.New("the vocabulary store is unavailable")
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckStoreName returns ErrBadName unless name can name a stored vocabulary.
func CheckStoreName(name string) error {
	if !namePattern.MatchString(name) {
		return ErrBadName
	}
	return nil
}

// MatchETag reports whether a comma-separated list of ETags (quoted or not,
// weak or strong, "*" for any) holds etag.
func MatchETag(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || strings.Trim(t, `"`) == etag {
			return true
		}
	}
	return false
}

// FileStore keeps vocabularies as one JSON file each in a directory, written
// atomically (temporary file + rename) and loaded at start; reads are served
// from memory. One process owns the directory.
type FileStore struct {
	dir   string
	mu    sync.RWMutex
	items map[string]*Entry
}

// OpenFileStore loads every vocabulary under dir, creating dir if needed.
func OpenFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("vocabulary: store: %w", err)
	}
	s := &FileStore{dir: dir, items: map[string]*Entry{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("vocabulary: store: %w", err)
		}
		var v Entry
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("vocabulary: store: %s: %w", filepath.Base(f), err)
		}
		if v.Name+".json" != filepath.Base(f) || CheckStoreName(v.Name) != nil {
			return nil, fmt.Errorf("vocabulary: store: %s holds vocabulary %q", filepath.Base(f), v.Name)
		}
		s.items[v.Name] = &v
	}
	return s, nil
}

// Get returns the named vocabulary.
func (s *FileStore) Get(ctx context.Context, name string) (*Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.items[name]
	if !ok {
		return nil, ErrNotFound
	}
	return v, nil
}

// List returns summaries sorted by name.
func (s *FileStore) List(ctx context.Context) ([]Summary, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Summary, 0, len(s.items))
	for _, v := range s.items {
		out = append(out, Summary{Name: v.Name, ETag: v.ETag, Categories: len(v.Categories), Updated: v.Updated})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Put creates or replaces a vocabulary (see Store).
func (s *FileStore) Put(ctx context.Context, name string, spec Spec, etag, ifMatch string) (*Entry, bool, error) {
	if err := CheckStoreName(name); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.items[name]
	if ifMatch != "" && !(exists && MatchETag(ifMatch, old.ETag)) {
		return nil, false, ErrETagMismatch
	}
	v := &Entry{Name: name, Spec: spec, ETag: etag, Updated: time.Now().UTC()}
	if exists && old.ETag == etag {
		v.Updated = old.Updated
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, false, err
	}
	if err := s.writeFile(name+".json", b); err != nil {
		return nil, false, fmt.Errorf("vocabulary: store: %w", err)
	}
	s.items[name] = v
	return v, !exists, nil
}

// writeFile replaces dir/name with b: a synced temporary file, then a rename,
// so a reader or a crash sees the old file or the new one, never a part.
func (s *FileStore) writeFile(name string, b []byte) error {
	tmp, err := os.CreateTemp(s.dir, ".vocab-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
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
	return os.Rename(tmp.Name(), filepath.Join(s.dir, name))
}

// Delete removes a vocabulary (see Store).
func (s *FileStore) Delete(ctx context.Context, name, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.items[name]
	if !exists {
		return ErrNotFound
	}
	if ifMatch != "" && !MatchETag(ifMatch, old.ETag) {
		return ErrETagMismatch
	}
	if err := os.Remove(filepath.Join(s.dir, name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vocabulary: store: %w", err)
	}
	delete(s.items, name)
	return nil
}
