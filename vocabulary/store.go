package vocabulary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
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
	// ErrStorageFull wraps a write that failed for want of space (ENOSPC,
	// EDQUOT); nothing was written, the old version is intact.
	ErrStorageFull = errors.New("the vocabulary store's storage is full")
	// ErrStorageReadOnly wraps a write that the storage refused (read-only
	// file system, permission); nothing was written, the old version is intact.
	ErrStorageReadOnly = errors.New("the vocabulary store's storage is read-only")
)

// Unavailable is a stored vocabulary that could not be loaded: its file did
// not parse or named another vocabulary, and was set aside.
type Unavailable struct {
	// Name is the vocabulary the file stood for (its file name).
	Name string `json:"name" example:"kitchen"`
	// Reason says what was wrong, for the client (it holds no file content).
	Reason string `json:"reason" example:"the file does not parse as a vocabulary"`
	// Since is when the file was set aside.
	Since time.Time `json:"since"`
	// File is where the file now is, and Cause what reading it said: for
	// the server's log only.
	File  string `json:"-"`
	Cause string `json:"-"`
}

// Quarantiner is implemented by stores that set unreadable vocabularies
// aside instead of failing (FileStore): Quarantined lists them.
type Quarantiner interface {
	Quarantined() []Unavailable
}

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
//
// A file that does not parse, names another vocabulary or holds no
// categories does not stop the store: it is renamed <file>.corrupt-<UTC
// time>, and Quarantined lists it. A write the storage refuses leaves nothing
// behind and wraps ErrStorageFull or ErrStorageReadOnly.
type FileStore struct {
	dir         string
	fs          fileSystem
	mu          sync.RWMutex
	items       map[string]*Entry
	quarantined []Unavailable
}

// fileSystem is how a FileStore writes its directory; tests inject failures.
type fileSystem struct {
	createTemp func(dir, pattern string) (tempFile, error)
	rename     func(oldpath, newpath string) error
	remove     func(name string) error
}

// tempFile is the temporary file a write goes through (an *os.File).
type tempFile interface {
	Write(b []byte) (int, error)
	Sync() error
	Close() error
	Name() string
}

var osFileSystem = fileSystem{
	createTemp: func(dir, pattern string) (tempFile, error) { return os.CreateTemp(dir, pattern) },
	rename:     os.Rename,
	remove:     os.Remove,
}

// OpenFileStore loads every vocabulary under dir, creating dir if needed.
// Unreadable vocabularies are set aside (Quarantined); a directory that
// cannot be listed or a file that cannot be read is an error.
func OpenFileStore(dir string) (*FileStore, error) { return openFileStore(dir, osFileSystem) }

func openFileStore(dir string, fsys fileSystem) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("vocabulary: store: %w", err)
	}
	s := &FileStore{dir: dir, fs: fsys, items: map[string]*Entry{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("vocabulary: store: %w", err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		var v Entry
		switch err := json.Unmarshal(b, &v); {
		case err != nil:
			s.quarantine(f, name, "the file does not parse as a vocabulary", err.Error())
		case CheckStoreName(name) != nil:
			s.quarantine(f, name, "the file name is not a vocabulary name", "")
		case v.Name != name:
			s.quarantine(f, name, "the file holds another vocabulary's name", fmt.Sprintf("it names %q", v.Name))
		case len(v.Categories) == 0:
			s.quarantine(f, name, "the file holds no categories", "")
		default:
			s.items[v.Name] = &v
		}
	}
	return s, nil
}

// quarantine sets file aside: renamed <file>.corrupt-<UTC time> when the
// directory allows it (else left where it is, still unloaded).
func (s *FileStore) quarantine(file, name, reason, cause string) {
	now := time.Now().UTC()
	aside := file + ".corrupt-" + now.Format("20060102T150405.000000000Z")
	if err := s.fs.rename(file, aside); err != nil {
		aside = file
		cause = strings.TrimPrefix(cause+"; ", "; ") + "not moved aside: " + err.Error()
	}
	s.quarantined = append(s.quarantined, Unavailable{Name: name, Reason: reason, Since: now, File: aside, Cause: cause})
}

// Quarantined lists the vocabularies set aside when the store opened.
func (s *FileStore) Quarantined() []Unavailable {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.quarantined)
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
		return nil, false, storageError(err)
	}
	s.items[name] = v
	return v, !exists, nil
}

// writeFile replaces dir/name with b: a synced temporary file, then a rename,
// so a reader or a crash sees the old file or the new one, never a part.
func (s *FileStore) writeFile(name string, b []byte) error {
	tmp, err := s.fs.createTemp(s.dir, ".vocab-*")
	if err != nil {
		return err
	}
	defer s.fs.remove(tmp.Name()) // gone after the rename; removed after a failure
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
	return s.fs.rename(tmp.Name(), filepath.Join(s.dir, name))
}

// storageError wraps a failed write with ErrStorageFull or ErrStorageReadOnly
// when the storage refused it for want of space or of permission.
func storageError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("vocabulary: store: %w: %w", ErrStorageFull, err)
	case errors.Is(err, syscall.EROFS), errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("vocabulary: store: %w: %w", ErrStorageReadOnly, err)
	}
	return fmt.Errorf("vocabulary: store: %w", err)
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
	if err := s.fs.remove(filepath.Join(s.dir, name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return storageError(err)
	}
	delete(s.items, name)
	return nil
}
