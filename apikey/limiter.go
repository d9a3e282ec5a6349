package apikey

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter holds each key to its Limits. A request takes one token of the
// key's bucket (Allow); an inference also holds one of its concurrent places
// while it runs (Acquire). Either answers a *LimitError when the key has
// none left.
type Limiter interface {
	Allow(ctx context.Context, k *Key, l Limits) error
	// Acquire takes a place; release gives it back and must be called once.
	Acquire(ctx context.Context, k *Key, l Limits) (release func(), err error)
}

// ConcurrentRetry is the Retry-After of a key whose concurrent inferences
// are all taken: an inference takes about this long.
const ConcurrentRetry = time.Second

// Local is a Limiter for one process: a token bucket per key
// (golang.org/x/time/rate) and a count of its running inferences. Keys are
// told apart by their hash, so a key made again under the same name starts
// afresh.
type Local struct {
	mu   sync.Mutex
	keys map[string]*localKey
	now  func() time.Time
}

type localKey struct {
	bucket  *rate.Limiter
	running int
}

var _ Limiter = (*Local)(nil)

// NewLocal returns a Limiter in this process.
func NewLocal() *Local { return &Local{keys: map[string]*localKey{}, now: time.Now} }

func (l *Local) key(k *Key) *localKey {
	lk, ok := l.keys[k.Hash]
	if !ok {
		lk = &localKey{}
		l.keys[k.Hash] = lk
	}
	return lk
}

// Allow takes one token of k's bucket.
func (l *Local) Allow(ctx context.Context, k *Key, lim Limits) error {
	if lim.RPS <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := l.key(k)
	now := l.now()
	if lk.bucket == nil {
		lk.bucket = rate.NewLimiter(rate.Limit(lim.RPS), lim.Burst)
	} else if lk.bucket.Limit() != rate.Limit(lim.RPS) || lk.bucket.Burst() != lim.Burst {
		lk.bucket.SetLimitAt(now, rate.Limit(lim.RPS))
		lk.bucket.SetBurstAt(now, lim.Burst)
	}
	r := lk.bucket.ReserveN(now, 1)
	if !r.OK() {
		return &LimitError{RetryAfter: time.Second}
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return &LimitError{RetryAfter: d}
	}
	return nil
}

// Acquire takes one of k's concurrent places.
func (l *Local) Acquire(ctx context.Context, k *Key, lim Limits) (func(), error) {
	if lim.MaxConcurrent <= 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := l.key(k)
	if lk.running >= lim.MaxConcurrent {
		return nil, &LimitError{RetryAfter: ConcurrentRetry, Concurrent: true}
	}
	lk.running++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			lk.running--
			l.mu.Unlock()
		})
	}, nil
}
