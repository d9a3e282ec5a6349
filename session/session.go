// Package session keeps registered images: the vocabulary-independent part of
// a detection (proposals and region embeddings), so one image can be scored
// against many vocabularies without running the backbone again.
package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/internal/lru"
)

// ErrNotFound: no session with that id (it may have expired or been evicted).
var ErrNotFound = errors.New("no image session with that id")

// ErrUnavailable wraps failures of a shared store that a retry may cure.
var ErrUnavailable = errors.New("the session store is unavailable")

// Store keeps sessions under random ids, bounded in count and lifetime.
type Store interface {
	// Create stores regions under a new id and says when the session expires.
	Create(ctx context.Context, regions *detector.Regions) (id string, expires time.Time, err error)
	Get(ctx context.Context, id string) (*detector.Regions, time.Time, error)
	Delete(ctx context.Context, id string) error
}

// Memory is the in-process Store: an LRU of at most max sessions, each kept
// for ttl after it was created.
type Memory struct {
	cache *lru.Cache[string, *detector.Regions]
}

// NewMemory returns a Memory store.
func NewMemory(max int, ttl time.Duration) *Memory {
	return &Memory{cache: lru.New[string, *detector.Regions](max, ttl)}
}

// NewID is a random 128-bit id in hex.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Create stores regions under a new id.
func (m *Memory) Create(ctx context.Context, regions *detector.Regions) (string, time.Time, error) {
	id := NewID()
	return id, m.cache.Put(id, regions), nil
}

// Get returns the session's regions and expiry.
func (m *Memory) Get(ctx context.Context, id string) (*detector.Regions, time.Time, error) {
	r, exp, ok := m.cache.Get(id)
	if !ok {
		return nil, time.Time{}, ErrNotFound
	}
	return r, exp, nil
}

// Delete forgets a session.
func (m *Memory) Delete(ctx context.Context, id string) error {
	if !m.cache.Remove(id) {
		return ErrNotFound
	}
	return nil
}

// Len is the number of sessions held.
func (m *Memory) Len() int { return m.cache.Len() }
