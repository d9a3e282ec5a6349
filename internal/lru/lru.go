// Package lru is a mutex'd map with least-recently-used eviction and optional
// expiry, the in-memory cache behind image sessions and built vocabularies.
package lru

import (
	"container/list"
	"sync"
	"time"
)

// Cache holds at most a fixed number of entries, evicting the least recently
// used; entries expire after a ttl (0: never). It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	mu    sync.Mutex
	cap   int
	ttl   time.Duration
	now   func() time.Time
	order *list.List // front = most recent
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key     K
	val     V
	expires time.Time
}

// New returns a Cache of the given capacity and ttl.
func New[K comparable, V any](capacity int, ttl time.Duration) *Cache[K, V] {
	return &Cache[K, V]{cap: capacity, ttl: ttl, now: time.Now, order: list.New(), items: make(map[K]*list.Element)}
}

// Put stores v under k and returns when it expires.
func (c *Cache[K, V]) Put(k K, v V) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var exp time.Time
	if c.ttl > 0 {
		exp = c.now().Add(c.ttl)
	}
	if el, ok := c.items[k]; ok {
		el.Value = &lruEntry[K, V]{k, v, exp}
		c.order.MoveToFront(el)
		return exp
	}
	c.items[k] = c.order.PushFront(&lruEntry[K, V]{k, v, exp})
	for c.order.Len() > c.cap {
		c.removeLocked(c.order.Back())
	}
	return exp
}

// Get returns the value under k if present and not expired, marking it used.
func (c *Cache[K, V]) Get(k K) (V, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	el, ok := c.items[k]
	if !ok {
		return zero, time.Time{}, false
	}
	e := el.Value.(*lruEntry[K, V])
	if !e.expires.IsZero() && !c.now().Before(e.expires) {
		c.removeLocked(el)
		return zero, time.Time{}, false
	}
	c.order.MoveToFront(el)
	return e.val, e.expires, true
}

// Remove drops k and reports whether it was there.
func (c *Cache[K, V]) Remove(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if ok {
		c.removeLocked(el)
	}
	return ok
}

// Len is the number of entries, expired ones not yet dropped included.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *Cache[K, V]) removeLocked(el *list.Element) {
	c.order.Remove(el)
	delete(c.items, el.Value.(*lruEntry[K, V]).key)
}
