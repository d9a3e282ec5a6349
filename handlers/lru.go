package handlers

import (
	"container/list"
	"sync"
	"time"
)

// lru is a mutex'd map with least-recently-used eviction and optional expiry
// (ttl 0: entries never expire).
type lru[K comparable, V any] struct {
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

func newLRU[K comparable, V any](capacity int, ttl time.Duration) *lru[K, V] {
	return &lru[K, V]{cap: capacity, ttl: ttl, now: time.Now, order: list.New(), items: make(map[K]*list.Element)}
}

// put stores v under k and returns when it expires.
func (c *lru[K, V]) put(k K, v V) time.Time {
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

// get returns the value under k if present and not expired, marking it used.
func (c *lru[K, V]) get(k K) (V, time.Time, bool) {
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

func (c *lru[K, V]) remove(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if ok {
		c.removeLocked(el)
	}
	return ok
}

func (c *lru[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *lru[K, V]) removeLocked(el *list.Element) {
	c.order.Remove(el)
	delete(c.items, el.Value.(*lruEntry[K, V]).key)
}
