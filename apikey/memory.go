package apikey

import (
	"context"
	"sort"
	"sync"
)

// Memory is a Store in this process's memory, for tests and test servers.
type Memory struct {
	mu   sync.Mutex
	keys map[string]Key // by name
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{keys: map[string]Key{}} }

// Create stores k (see Store).
func (m *Memory) Create(ctx context.Context, k Key) error {
	if err := CheckName(k.Name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[k.Name]; ok {
		return ErrExists
	}
	m.keys[k.Name] = k
	return nil
}

// Lookup finds a key by its token's hash (see Store).
func (m *Memory) Lookup(ctx context.Context, hash string) (*Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range m.keys {
		if k.Hash == hash {
			return &k, nil
		}
	}
	return nil, ErrInvalidKey
}

// List returns the keys sorted by name.
func (m *Memory) List(ctx context.Context) ([]Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Key, 0, len(m.keys))
	for _, k := range m.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Revoke deletes the named key (see Store).
func (m *Memory) Revoke(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[name]; !ok {
		return ErrNotFound
	}
	delete(m.keys, name)
	return nil
}
