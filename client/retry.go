package client

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"time"
)

// RetryPolicy says which failed answers are tried again, how often and how
// long to wait in between.
//
// Retried are 503 (the server is busy, draining, loading, or a store is
// down) and 429 with a Retry-After header (an API key's rate or concurrency
// is used up). The wait is what Retry-After asks (delay-seconds or an HTTP
// date); without it, jittered exponential backoff from BaseDelay. No wait is
// longer than MaxWait: an answer asking for more is returned, not waited for,
// and neither is one whose wait would end after the context's deadline.
//
// Reads and requests that change nothing on the server (GET, POST
// /v1/detect, POST /v1/images/{id}/detect, POST /v1/embeddings/text) are
// retried on any such answer. A request that changes state (PUT and DELETE
// of a vocabulary, POST /v1/images) is retried only when the answer's
// problem type says the server did nothing: queue-full, queue-timeout,
// draining, not-ready, storage-read-only, rate-limited. Not on
// store-unavailable, which a shared store's failure during the write also
// answers (the write may have been applied), nor on a 503 that is not vild's
// problem (a proxy's). docs/client.md gives the reasons.
type RetryPolicy struct {
	// MaxAttempts is the most attempts of one call, the first included: 1
	// never retries.
	MaxAttempts int
	// MaxWait is the longest single wait between attempts.
	MaxWait time.Duration
	// BaseDelay is the first backoff when the answer has no Retry-After; it
	// doubles with each attempt (capped by MaxWait), jittered between half
	// and all of it.
	BaseDelay time.Duration
}

// DefaultRetryPolicy is the policy of a client made without WithRetry: 4
// attempts, waits of at most 30 s, backoff from 250 ms.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 4, MaxWait: 30 * time.Second, BaseDelay: 250 * time.Millisecond}
}

func (p RetryPolicy) check() error {
	if p.MaxAttempts < 1 || p.MaxWait < 0 || p.BaseDelay < 0 {
		return errors.New("client: RetryPolicy needs MaxAttempts ≥ 1 and no negative wait")
	}
	return nil
}

// notProcessed are the problem slugs whose answer means the server did
// nothing with the request: it was refused before it ran (admission queue,
// shutdown, model loading, an API key's limits) or, for storage-read-only,
// the write was refused with nothing written.
var notProcessed = map[string]bool{
	"queue-full": true, "queue-timeout": true, "draining": true, "not-ready": true,
	"storage-read-only": true, "rate-limited": true,
}

// next says whether to retry after attempt (1-based) failed with e, and how
// long to wait first.
func (p RetryPolicy) next(attempt int, cl call, e *Error) (time.Duration, bool) {
	if cl.noRetry || attempt >= p.MaxAttempts {
		return 0, false
	}
	switch e.Status {
	case http.StatusServiceUnavailable:
	case http.StatusTooManyRequests:
		if !e.hasRetryAfter {
			return 0, false // no word on when: the caller decides
		}
	default:
		return 0, false
	}
	if cl.changesState && !notProcessed[e.Slug()] {
		return 0, false
	}
	if e.hasRetryAfter {
		if e.RetryAfter > p.MaxWait {
			return 0, false
		}
		return e.RetryAfter, true
	}
	return p.backoff(attempt), true
}

// backoff is the wait after the attempt-th failure without Retry-After:
// BaseDelay·2^(attempt-1), at most MaxWait, jittered in [d/2, d].
func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := p.BaseDelay
	for i := 1; i < attempt && d < p.MaxWait; i++ {
		d *= 2
	}
	d = min(d, p.MaxWait)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
