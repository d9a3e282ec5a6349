package client

import (
	"context"
	"time"
)

// WithSleep replaces the wait between attempts (tests record it instead of
// sleeping).
func WithSleep(f func(ctx context.Context, d time.Duration) error) Option {
	return func(c *Client) { c.sleep = f }
}

// ParseRetryAfter is retryAfter, for tests.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) { return retryAfter(v, now) }
