// Package redisstore keeps vild's shared state in Redis, so that stateless
// replicas behind a load balancer agree: vocabularies with their ETags
// (conditional writes checked atomically in Redis), the text-embedding cache,
// and image sessions; and it tells each replica within a second when another
// changes a vocabulary. It implements vocabulary.Store, session.Store and
// textbank.Store (docs/deploy.md).
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// PasswordEnv names the environment variable a URL without a password takes
// its password from, so that the secret needs no flag (flags show in ps).
const PasswordEnv = "VILD_REDIS_PASSWORD"

// prefix namespaces every key and channel.
const prefix = "vild:"

// Client is a connection pool to one Redis with the store's metrics.
type Client struct {
	rdb     *redis.Client
	metrics *Metrics
}

// Metrics are the store's latency and error counts, by store and operation.
type Metrics struct {
	latency *prometheus.HistogramVec
	errors  *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vild_store_seconds",
			Help:    "Latency of shared-store operations, by store (vocabularies, sessions, embeddings) and operation.",
			Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"store", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vild_store_errors_total", Help: "Shared-store operations that failed (not counting a missing key), by store and operation.",
		}, []string{"store", "op"}),
	}
	if reg != nil {
		reg.MustRegister(m.latency, m.errors)
	}
	return m
}

// Open connects to the Redis at rawURL (redis://[user:password@]host:port/db,
// or rediss:// for TLS) and checks it answers. A URL without a password takes
// it from $VILD_REDIS_PASSWORD.
func Open(ctx context.Context, rawURL string, m *Metrics) (*Client, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %s: %w", redact(rawURL), err)
	}
	if opt.Password == "" {
		opt.Password = os.Getenv(PasswordEnv)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 2*time.Second, time.Second, time.Second
	opt.MaxRetries = 1
	if m == nil {
		m = NewMetrics(nil)
	}
	c := &Client{rdb: redis.NewClient(opt), metrics: m}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := c.Ping(pctx); err != nil {
		c.rdb.Close()
		return nil, fmt.Errorf("redisstore: %s: %w", redact(rawURL), err)
	}
	return c, nil
}

// redact drops the password from a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the store URL"
	}
	return u.Redacted()
}

// Ping checks that Redis answers; /readyz asks it.
func (c *Client) Ping(ctx context.Context) error {
	return c.rdb.Ping(ctx).Err()
}

// Close closes the pool.
func (c *Client) Close() error { return c.rdb.Close() }

// observe records one operation's latency and, unless it is nil or a missing
// key, its failure; it returns err. When ctx's span records, the operation is
// a client span ("redis <store>.<op>") from start to now, under it.
func (c *Client) observe(ctx context.Context, store, op string, start time.Time, err error) error {
	c.metrics.latency.WithLabelValues(store, op).Observe(time.Since(start).Seconds())
	failed := err != nil && !errors.Is(err, redis.Nil)
	if failed {
		c.metrics.errors.WithLabelValues(store, op).Inc()
	}
	if trace.SpanFromContext(ctx).IsRecording() {
		_, sp := otel.Tracer("github.com/vild/vild/redisstore").Start(ctx, "redis "+store+"."+op,
			trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindClient))
		if failed {
			sp.SetStatus(codes.Error, "")
		}
		sp.End()
	}
	return err
}

// maxRaces bounds the tries of a WATCH transaction that keeps losing races.
const maxRaces = 8

// retryWatch runs fn in a WATCH transaction on keys, again when another
// client wrote one of them in between, at most maxRaces times; it returns
// redis.TxFailedErr only when every try lost.
func (c *Client) retryWatch(ctx context.Context, fn func(*redis.Tx) error, keys ...string) error {
	var err error
	for range maxRaces {
		if err = c.rdb.Watch(ctx, fn, keys...); !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return err
}

// settle observes one store operation and returns its error: nil and the
// domain's own answers (expected: not found, exists, mismatch …) as they
// are, any other failure marked by unavailable.
func (c *Client) settle(ctx context.Context, store, op string, start time.Time, err error,
	unavailable func(error) error, expected ...error) error {
	for _, e := range expected {
		if errors.Is(err, e) {
			c.observe(ctx, store, op, start, nil)
			return err
		}
	}
	if err != nil {
		return unavailable(c.observe(ctx, store, op, start, err))
	}
	c.observe(ctx, store, op, start, nil)
	return nil
}
