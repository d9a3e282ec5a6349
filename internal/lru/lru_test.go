package lru

import (
	"testing"
	"time"
)

func TestLRUExpiryAndEviction(t *testing.T) {
	c := New[string, int](2, time.Minute)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	c.Put("a", 1)
	c.Put("b", 2)
	if _, _, ok := c.Get("a"); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.Put("c", 3) // evicts b, the least recently used
	if _, _, ok := c.Get("b"); ok {
		t.Fatal("b survived eviction")
	}
	now = now.Add(time.Minute)
	if _, _, ok := c.Get("a"); ok {
		t.Fatal("a survived expiry")
	}
	if c.Len() != 1 {
		t.Fatalf("len %d", c.Len())
	}
}
