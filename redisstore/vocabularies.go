package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vild/vild/vocabulary"
)

const (
	vocabKey     = prefix + "vocab:"        // + name: the entry as JSON
	vocabSet     = prefix + "vocabs"        // the names
	vocabChannel = prefix + "vocab-changes" // change notices
)

// change is the notice published with every write and delete.
type change struct {
	Name    string `json:"name"`
	OldETag string `json:"old_etag,omitempty"`
}

// Vocabularies is vocabulary.Store in Redis. Writes are WATCH/MULTI
// transactions: the If-Match check and the write are atomic in Redis, so of
// concurrent conditional writes from any number of replicas exactly one wins.
// Every write publishes a change notice; Watch delivers the others' notices.
// The entries this replica read last are kept, so detection by a vocabulary's
// name goes on while Redis is down; a notice drops them.
type Vocabularies struct {
	c      *Client
	pubsub *redis.PubSub
	mu     sync.Mutex
	local  map[string]*vocabulary.Entry
	fns    []func(name, oldETag string)
	done   chan struct{}
}

var _ vocabulary.Store = (*Vocabularies)(nil)

// Vocabularies returns the vocabulary store and starts listening for notices.
func (c *Client) Vocabularies(ctx context.Context) *Vocabularies {
	v := &Vocabularies{c: c, local: map[string]*vocabulary.Entry{}, done: make(chan struct{})}
	v.pubsub = c.rdb.Subscribe(ctx, vocabChannel)
	go v.listen()
	return v
}

// listen applies change notices until Close; go-redis resubscribes after a
// lost connection.
func (v *Vocabularies) listen() {
	defer close(v.done)
	for msg := range v.pubsub.Channel() {
		var ch change
		if json.Unmarshal([]byte(msg.Payload), &ch) != nil {
			continue
		}
		v.mu.Lock()
		delete(v.local, ch.Name)
		fns := v.fns
		v.mu.Unlock()
		for _, fn := range fns {
			fn(ch.Name, ch.OldETag)
		}
	}
}

// Watch calls fn with a vocabulary's name and previous ETag after any replica
// (this one included) writes or deletes it.
func (v *Vocabularies) Watch(fn func(name, oldETag string)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fns = append(v.fns, fn)
}

// Close stops listening.
func (v *Vocabularies) Close() error {
	err := v.pubsub.Close()
	<-v.done
	return err
}

// unavailable marks a Redis failure as vocabulary.ErrUnavailable.
func unavailable(err error) error {
	return fmt.Errorf("redisstore: %w: %w", vocabulary.ErrUnavailable, err)
}

func (v *Vocabularies) remember(e *vocabulary.Entry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.local[e.Name] = e
}

// Get returns the named vocabulary; with Redis down, this replica's last
// copy of it, if it has one.
func (v *Vocabularies) Get(ctx context.Context, name string) (*vocabulary.Entry, error) {
	start := time.Now()
	b, err := v.c.rdb.Get(ctx, vocabKey+name).Bytes()
	v.c.observe(ctx, "vocabularies", "get", start, err)
	switch {
	case errors.Is(err, redis.Nil):
		v.mu.Lock()
		delete(v.local, name)
		v.mu.Unlock()
		return nil, vocabulary.ErrNotFound
	case err != nil:
		v.mu.Lock()
		e, ok := v.local[name]
		v.mu.Unlock()
		if ok {
			return e, nil
		}
		return nil, unavailable(err)
	}
	var e vocabulary.Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("redisstore: vocabulary %q: %w", name, err)
	}
	v.remember(&e)
	return &e, nil
}

// List returns summaries sorted by name.
func (v *Vocabularies) List(ctx context.Context) ([]vocabulary.Summary, error) {
	start := time.Now()
	names, err := v.c.rdb.SMembers(ctx, vocabSet).Result()
	if err != nil {
		return nil, unavailable(v.c.observe(ctx, "vocabularies", "list", start, err))
	}
	out := []vocabulary.Summary{}
	if len(names) > 0 {
		keys := make([]string, len(names))
		for i, n := range names {
			keys[i] = vocabKey + n
		}
		vals, err := v.c.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, unavailable(v.c.observe(ctx, "vocabularies", "list", start, err))
		}
		for _, val := range vals {
			s, ok := val.(string)
			if !ok {
				continue // deleted since SMEMBERS
			}
			var e vocabulary.Entry
			if json.Unmarshal([]byte(s), &e) == nil {
				out = append(out, vocabulary.Summary{Name: e.Name, ETag: e.ETag, Categories: len(e.Categories), Updated: e.Updated})
			}
		}
	}
	v.c.observe(ctx, "vocabularies", "list", start, nil)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Put creates or replaces a vocabulary (see vocabulary.Store).
func (v *Vocabularies) Put(ctx context.Context, name string, spec vocabulary.Spec, etag, ifMatch string) (*vocabulary.Entry, bool, error) {
	if err := vocabulary.CheckStoreName(name); err != nil {
		return nil, false, err
	}
	key := vocabKey + name
	var out *vocabulary.Entry
	var created bool
	write := func(tx *redis.Tx) error {
		old, err := current(ctx, tx, key)
		if err != nil {
			return err
		}
		if ifMatch != "" && !(old != nil && vocabulary.MatchETag(ifMatch, old.ETag)) {
			return vocabulary.ErrETagMismatch
		}
		e := &vocabulary.Entry{Name: name, Spec: spec, ETag: etag, Updated: time.Now().UTC()}
		notice := change{Name: name}
		if old != nil {
			notice.OldETag = old.ETag
			if old.ETag == etag {
				e.Updated = old.Updated
			}
		}
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		nb, _ := json.Marshal(notice)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, b, 0)
			p.SAdd(ctx, vocabSet, name)
			p.Publish(ctx, vocabChannel, nb)
			return nil
		})
		out, created = e, old == nil
		return err
	}
	err := v.transact(ctx, "put", key, ifMatch != "", write)
	if err != nil {
		return nil, false, err
	}
	v.remember(out)
	return out, created, nil
}

// Delete removes a vocabulary (see vocabulary.Store).
func (v *Vocabularies) Delete(ctx context.Context, name, ifMatch string) error {
	key := vocabKey + name
	del := func(tx *redis.Tx) error {
		old, err := current(ctx, tx, key)
		if err != nil {
			return err
		}
		if old == nil {
			return vocabulary.ErrNotFound
		}
		if ifMatch != "" && !vocabulary.MatchETag(ifMatch, old.ETag) {
			return vocabulary.ErrETagMismatch
		}
		nb, _ := json.Marshal(change{Name: name, OldETag: old.ETag})
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key)
			p.SRem(ctx, vocabSet, name)
			p.Publish(ctx, vocabChannel, nb)
			return nil
		})
		return err
	}
	if err := v.transact(ctx, "delete", key, ifMatch != "", del); err != nil {
		return err
	}
	v.mu.Lock()
	delete(v.local, name)
	v.mu.Unlock()
	return nil
}

// transact runs fn in a WATCH transaction on key. When another client wrote
// key between the read and the write, a conditional operation fails with
// ErrETagMismatch (the ETag it was checked against is gone); an unconditional
// one is retried.
func (v *Vocabularies) transact(ctx context.Context, op, key string, conditional bool, fn func(*redis.Tx) error) error {
	start := time.Now()
	var err error
	if conditional {
		if err = v.c.rdb.Watch(ctx, fn, key); errors.Is(err, redis.TxFailedErr) {
			err = vocabulary.ErrETagMismatch
		}
	} else {
		err = v.c.retryWatch(ctx, fn, key)
	}
	return v.c.settle(ctx, "vocabularies", op, start, err, unavailable, vocabulary.ErrETagMismatch, vocabulary.ErrNotFound)
}

// current reads key's entry inside a transaction; nil when there is none.
func current(ctx context.Context, tx *redis.Tx, key string) (*vocabulary.Entry, error) {
	b, err := tx.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e vocabulary.Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	return &e, nil
}
