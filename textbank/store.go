package textbank

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrCacheInUse means another process holds the cache file's lock.
var ErrCacheInUse = errors.New("cache file in use")

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
}

// OpenBoltStore opens or creates the cache file at path.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("textbank: open cache %s: %w: another vild process holds it; "+
			"give this one its own --data-dir (VILD_DATA_DIR)", path, ErrCacheInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("textbank: open cache %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
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
func (s *BoltStore) Get(bucket []byte, name string, dim int) ([]float32, error) {
	var out []float32
	err := s.db.View(func(tx *bolt.Tx) error {
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
func (s *BoltStore) Put(bucket []byte, name string, e []float32) error {
	v := make([]byte, 4*len(e))
	for i, x := range e {
		binary.LittleEndian.PutUint32(v[4*i:], math.Float32bits(x))
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
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
