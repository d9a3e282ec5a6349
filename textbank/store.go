package textbank

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrCacheInUse means another process holds the cache file's lock.
var ErrCacheInUse = errors.New("cache file in use")

// ErrCacheCorrupt means the cache file is not a readable bbolt file of the
// size it claims: foreign, garbage or truncated. OpenBoltStore moves such a
// file aside; a read or write that meets corruption later returns it.
var ErrCacheCorrupt = errors.New("cache file corrupt")

// Store is a persistent embedding cache shared by the Banks that use it:
// buckets name a bundle digest + template set + context length (bucketName),
// entries map a name to its embedding. Get returns nil, not an error, for a
// name it does not hold.
type Store interface {
	Get(bucket []byte, name string, dim int) ([]float32, error)
	Put(bucket []byte, name string, e []float32) error
	Close() error
}

// BoltStore is the on-disk Store: a bbolt file with one bucket per bundle
// digest + template set + context length, name -> float32 LE bytes. One
// process holds the file at a time (bbolt's file lock).
type BoltStore struct {
	db *bolt.DB
	// movedAside is where a corrupt file found at open was moved, and why.
	movedAside, why string
}

// OpenBoltStore opens or creates the cache file at path. A file that is not a
// readable bbolt file of the size it claims (garbage, another format,
// truncated) is only a cache: it is renamed path + ".corrupt-<UTC time>" and
// a new, empty one is created; MovedAside reports it, for a warning. A file
// another process holds is an error (ErrCacheInUse), as is any other failure.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := openBolt(path)
	if errors.Is(err, ErrCacheCorrupt) {
		aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("textbank: open cache %s: %w; moving it aside failed: %v", path, err, rerr)
		}
		s, err2 := OpenBoltStore(path)
		if err2 != nil {
			return nil, err2
		}
		s.movedAside, s.why = aside, err.Error()
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	return &BoltStore{db: db}, nil
}

// MovedAside reports the corrupt file OpenBoltStore moved aside (its new
// path) and what was wrong with it; both are empty when there was none.
func (s *BoltStore) MovedAside() (path, why string) { return s.movedAside, s.why }

// openBolt opens path with bbolt, telling a corrupt file (ErrCacheCorrupt)
// from one held by another process (ErrCacheInUse) and other failures.
func openBolt(path string) (db *bolt.DB, err error) {
	// bbolt panics on some damaged files, or reads past its mapping of a
	// truncated one (a freelist page beyond the end): with panic-on-fault set,
	// that fault is a panic too, recovered here. The file descriptor bbolt had
	// opened stays open, with its lock, on the file that is then moved aside.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if v := recover(); v != nil {
			db, err = nil, fmt.Errorf("textbank: open cache %s: %w: %v", path, ErrCacheCorrupt, v)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("textbank: open cache %s: %w: another vild process holds it; "+
			"give this one its own --data-dir (VILD_DATA_DIR)", path, ErrCacheInUse)
	case err != nil && !osError(err):
		// bbolt's verdict on the bytes: ErrInvalid (not a bbolt file),
		// ErrVersionMismatch, ErrChecksum, "file size too small", …
		return nil, fmt.Errorf("textbank: open cache %s: %w: %w", path, ErrCacheCorrupt, err)
	case err != nil:
		return nil, fmt.Errorf("textbank: open cache %s: %w", path, err)
	}
	// A truncated file can open: its meta pages are at the start. Its pages
	// must all lie within the file, or reading one faults the process.
	fi, err := os.Stat(path)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("textbank: open cache %s: %w", path, err)
	}
	var claimed int64
	if err := db.View(func(tx *bolt.Tx) error { claimed = tx.Size(); return nil }); err != nil {
		db.Close()
		return nil, fmt.Errorf("textbank: open cache %s: %w: %w", path, ErrCacheCorrupt, err)
	}
	if claimed > fi.Size() {
		db.Close()
		return nil, fmt.Errorf("textbank: open cache %s: %w: it holds %d bytes of pages in a %d-byte file (truncated)",
			path, ErrCacheCorrupt, claimed, fi.Size())
	}
	return db, nil
}

// Close closes the file.
func (s *BoltStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("textbank: close cache: %w", err)
	}
	return nil
}

// bucketName identifies a bundle and the prompts its embeddings came from.
func bucketName(digest string, templates []string, contextLength int) []byte {
	h := sha256.New()
	h.Write([]byte(strings.Join(templates, "\x00")))
	h.Write([]byte("\x00" + strconv.Itoa(contextLength)))
	return []byte(digest + "/templates:" + hex.EncodeToString(h.Sum(nil))[:16])
}

// Get returns the cached embedding of name, or nil when there is none (or the
// stored value has the wrong size, which is then ignored and re-encoded).
func (s *BoltStore) Get(bucket []byte, name string, dim int) (out []float32, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(&err, "get")
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(name))
		if len(v) != 4*dim {
			return nil
		}
		out = make([]float32, dim)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(v[4*i:]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("textbank: cache get %q: %w", name, err)
	}
	return out, nil
}

// Put stores the embedding of name.
func (s *BoltStore) Put(bucket []byte, name string, e []float32) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverCorrupt(&err, "put")
	v := make([]byte, 4*len(e))
	for i, x := range e {
		binary.LittleEndian.PutUint32(v[4*i:], math.Float32bits(x))
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), v)
	})
	if err != nil {
		return fmt.Errorf("textbank: cache put %q: %w", name, err)
	}
	return nil
}

// osError reports whether err came from the operating system (a path or an
// errno: permission, no space, I/O) rather than from reading the file's bytes.
func osError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno)
}

// recoverCorrupt turns a bbolt panic over a damaged page, or a fault in its
// mapping of the file (with panic-on-fault set), into ErrCacheCorrupt: the
// caller sees an error, and the process, whose goroutine may be a
// singleflight's, stays up.
func recoverCorrupt(err *error, op string) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("textbank: cache %s: %w: %v", op, ErrCacheCorrupt, v)
	}
}
