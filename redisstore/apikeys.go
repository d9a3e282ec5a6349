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

	"github.com/vild/vild/apikey"
	"github.com/vild/vild/session"
)

const (
	apikeyKey  = prefix + "apikey:"  // + token hash: the key as JSON
	apikeySet  = prefix + "apikeys"  // hash: name → token hash
	rateKey    = prefix + "rate:"    // + token hash: the key's GCRA state
	runningKey = prefix + "running:" // + token hash: its running inferences
)

// KeyCacheTTL is how long a replica trusts a key it read from Redis: a key
// revoked on any replica (or by vild keys revoke) stops working everywhere
// within it.
const KeyCacheTTL = 500 * time.Millisecond

// APIKeys is apikey.Store in Redis: each key's JSON under the hash of its
// token, and a hash of names to token hashes for listing and revoking. Keys
// have no TTL, so Redis's volatile-lru never evicts them. A replica keeps a
// key it looked up for KeyCacheTTL; with Redis down, lookups of keys not
// read in that time fail as unavailable (no key is trusted that may have
// been revoked).
type APIKeys struct {
	c   *Client
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cachedKey
}

type cachedKey struct {
	k    *apikey.Key
	read time.Time
}

var _ apikey.Store = (*APIKeys)(nil)

// APIKeys returns the key store.
func (c *Client) APIKeys() *APIKeys {
	return &APIKeys{c: c, ttl: KeyCacheTTL, now: time.Now, cache: map[string]cachedKey{}}
}

func keysUnavailable(err error) error {
	return fmt.Errorf("redisstore: %w: %w", apikey.ErrUnavailable, err)
}

// Create stores k unless a key has its name (see apikey.Store).
func (s *APIKeys) Create(ctx context.Context, k apikey.Key) error {
	if err := apikey.CheckName(k.Name); err != nil {
		return err
	}
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	start := time.Now()
	err = s.c.retryWatch(ctx, func(tx *redis.Tx) error {
		exists, err := tx.HExists(ctx, apikeySet, k.Name).Result()
		if err != nil {
			return err
		}
		if exists {
			return apikey.ErrExists
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, apikeySet, k.Name, k.Hash)
			p.Set(ctx, apikeyKey+k.Hash, b, 0)
			return nil
		})
		return err
	}, apikeySet)
	return s.c.settle(ctx, "keys", "create", start, err, keysUnavailable, apikey.ErrExists)
}

// Lookup returns the key of a token's hash, from this replica's copy when it
// is younger than KeyCacheTTL.
func (s *APIKeys) Lookup(ctx context.Context, hash string) (*apikey.Key, error) {
	now := s.now()
	s.mu.Lock()
	c, ok := s.cache[hash]
	s.mu.Unlock()
	if ok && now.Sub(c.read) < s.ttl {
		return c.k, nil
	}
	start := time.Now()
	b, err := s.c.rdb.Get(ctx, apikeyKey+hash).Bytes()
	s.c.observe(ctx, "keys", "lookup", start, err)
	switch {
	case errors.Is(err, redis.Nil):
		s.mu.Lock()
		delete(s.cache, hash)
		s.mu.Unlock()
		return nil, apikey.ErrInvalidKey
	case err != nil:
		return nil, keysUnavailable(err)
	}
	var k apikey.Key
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("redisstore: a stored key: %w", err)
	}
	s.mu.Lock()
	s.cache[hash] = cachedKey{k: &k, read: now}
	s.mu.Unlock()
	return &k, nil
}

// List returns every key, sorted by name.
func (s *APIKeys) List(ctx context.Context) ([]apikey.Key, error) {
	start := time.Now()
	names, err := s.c.rdb.HGetAll(ctx, apikeySet).Result()
	if err != nil {
		return nil, keysUnavailable(s.c.observe(ctx, "keys", "list", start, err))
	}
	out := []apikey.Key{}
	if len(names) > 0 {
		keys := make([]string, 0, len(names))
		for _, h := range names {
			keys = append(keys, apikeyKey+h)
		}
		vals, err := s.c.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, keysUnavailable(s.c.observe(ctx, "keys", "list", start, err))
		}
		for _, v := range vals {
			if str, ok := v.(string); ok {
				var k apikey.Key
				if json.Unmarshal([]byte(str), &k) == nil {
					out = append(out, k)
				}
			}
		}
	}
	s.c.observe(ctx, "keys", "list", start, nil)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Revoke deletes the named key; every replica stops taking it within
// KeyCacheTTL.
func (s *APIKeys) Revoke(ctx context.Context, name string) error {
	start := time.Now()
	var hash string
	err := s.c.retryWatch(ctx, func(tx *redis.Tx) error {
		h, err := tx.HGet(ctx, apikeySet, name).Result()
		if errors.Is(err, redis.Nil) {
			return apikey.ErrNotFound
		}
		if err != nil {
			return err
		}
		hash = h
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HDel(ctx, apikeySet, name)
			p.Del(ctx, apikeyKey+h, rateKey+h, runningKey+h)
			return nil
		})
		return err
	}, apikeySet)
	if err := s.c.settle(ctx, "keys", "revoke", start, err, keysUnavailable, apikey.ErrNotFound); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.cache, hash)
	s.mu.Unlock()
	return nil
}

// Limiter is apikey.Limiter shared by every replica on one Redis: a key's
// rate is a GCRA (generic cell rate algorithm: the token bucket kept as one
// timestamp, the theoretical arrival time) updated by a Lua script on
// Redis's clock, and its running inferences a sorted set of leases that
// expire, so that a replica that dies does not hold its places for ever.
type Limiter struct {
	c     *Client
	lease time.Duration
}

var _ apikey.Limiter = (*Limiter)(nil)

// Limiter returns the shared limiter; an inference's place is held at most
// lease (longer than the request deadline).
func (c *Client) Limiter(lease time.Duration) *Limiter { return &Limiter{c: c, lease: lease} }

// gcra takes one request of a bucket. KEYS[1]: the bucket; ARGV[1]: the
// emission interval (µs, 1 / rate); ARGV[2]: the burst. Returns 0 when
// allowed, else the µs until a request would be.
var gcra = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return math.ceil(allow_at - now)
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', math.ceil((new_tat - now) / 1000) + 1))
return 0
`)

// acquire takes a lease on one of a key's places. KEYS[1]: the leases;
// ARGV[1]: the places; ARGV[2]: the lease's id; ARGV[3]: its length (µs).
// Returns 1 when taken, 0 when every place is.
var acquire = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[3])), ARGV[2])
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(tonumber(ARGV[3]) / 1000) + 1000))
return 1
`)

// Allow takes one request of k's rate, counted across every replica.
func (l *Limiter) Allow(ctx context.Context, k *apikey.Key, lim apikey.Limits) error {
	if lim.RPS <= 0 {
		return nil
	}
	interval := int64(1e6 / lim.RPS)
	start := time.Now()
	wait, err := gcra.Run(ctx, l.c.rdb, []string{rateKey + k.Hash}, interval, lim.Burst).Int64()
	if err := l.c.observe(ctx, "limits", "allow", start, err); err != nil {
		return keysUnavailable(err)
	}
	if wait > 0 {
		return &apikey.LimitError{RetryAfter: time.Duration(wait) * time.Microsecond}
	}
	return nil
}

// Acquire takes one of k's concurrent places, counted across every replica.
func (l *Limiter) Acquire(ctx context.Context, k *apikey.Key, lim apikey.Limits) (func(), error) {
	if lim.MaxConcurrent <= 0 {
		return func() {}, nil
	}
	id := session.NewID()
	key := runningKey + k.Hash
	start := time.Now()
	ok, err := acquire.Run(ctx, l.c.rdb, []string{key}, lim.MaxConcurrent, id, l.lease.Microseconds()).Int64()
	if err := l.c.observe(ctx, "limits", "acquire", start, err); err != nil {
		return nil, keysUnavailable(err)
	}
	if ok == 0 {
		return nil, &apikey.LimitError{RetryAfter: apikey.ConcurrentRetry, Concurrent: true}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			// The request's context may be done: release on a fresh one.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			err := l.c.rdb.ZRem(ctx, key, id).Err()
			l.c.observe(ctx, "limits", "release", start, err) // a lost release expires with its lease
		})
	}, nil
}
