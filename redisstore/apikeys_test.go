package redisstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vild/vild/apikey"
	"github.com/vild/vild/apikey/apikeytest"
	"github.com/vild/vild/internal/services"
)

func TestAPIKeysContract(t *testing.T) {
	c, _ := open(t, services.StartRedis(t))
	apikeytest.StoreContract(t, c.APIKeys())
}

// A key revoked through one client (vild keys revoke, or another replica)
// stops working on a replica that has just used it within KeyCacheTTL; with
// Redis down a key the replica has not read within it is unavailable.
func TestAPIKeyRevocationAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	r := services.StartRedis(t)
	a, _ := open(t, r)
	b, m := open(t, r)
	cli, replica := a.APIKeys(), b.APIKeys()
	auth := apikey.Authenticator{Store: replica}
	token, k, _ := apikey.New("ci", []apikey.Scope{apikey.ScopeDetect}, apikey.KeyLimits{}, time.Now())
	if err := cli.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	if got, err := auth.Authenticate(ctx, token); err != nil || got.Name != "ci" {
		t.Fatalf("%v %v", got, err)
	}
	if err := cli.Revoke(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, err := auth.Authenticate(ctx, token); err == nil; _, err = auth.Authenticate(ctx, token) {
		if time.Since(start) > time.Second {
			t.Fatal("the revoked key still works after a second")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("revocation took effect after %s", time.Since(start).Round(time.Millisecond))

	token2, k2, _ := apikey.New("ops", []apikey.Scope{apikey.ScopeAdmin}, apikey.KeyLimits{}, time.Now())
	if err := cli.Create(ctx, k2); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if _, err := auth.Authenticate(ctx, token2); !errors.Is(err, apikey.ErrUnavailable) {
		t.Fatalf("Redis down: %v", err)
	}
	if _, err := cli.List(ctx); !errors.Is(err, apikey.ErrUnavailable) {
		t.Fatalf("list with Redis down: %v", err)
	}
	if testutil.ToFloat64(m.errors.WithLabelValues("keys", "lookup")) == 0 {
		t.Fatal("lookup failures not counted")
	}
}

// Two replicas share one key's rate and concurrent places.
func TestSharedLimiter(t *testing.T) {
	ctx := context.Background()
	r := services.StartRedis(t)
	a, _ := open(t, r)
	b, _ := open(t, r)
	la, lb := a.Limiter(2*time.Second), b.Limiter(2*time.Second)
	k := &apikey.Key{Name: "k", Hash: apikey.Hash("vild_k")}
	lim := apikey.Limits{RPS: 1, Burst: 3, MaxConcurrent: 2}
	for i, l := range []*Limiter{la, lb, la} {
		if err := l.Allow(ctx, k, lim); err != nil {
			t.Fatalf("request %d of the burst: %v", i, err)
		}
	}
	err := lb.Allow(ctx, k, lim)
	var le *apikey.LimitError
	if !errors.As(err, &le) || le.Concurrent || le.RetryAfter <= 500*time.Millisecond || le.RetryAfter > time.Second {
		t.Fatalf("fourth request across replicas: %v", err)
	}
	if err := la.Allow(ctx, &apikey.Key{Hash: "other"}, lim); err != nil {
		t.Fatalf("another key: %v", err)
	}
	time.Sleep(le.RetryAfter)
	if err := la.Allow(ctx, k, lim); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}

	r1, err := la.Acquire(ctx, k, lim)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := lb.Acquire(ctx, k, lim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := la.Acquire(ctx, k, lim); !errors.As(err, &le) || !le.Concurrent {
		t.Fatalf("third concurrent inference across replicas: %v", err)
	}
	r1()
	r1()
	r3, err := lb.Acquire(ctx, k, lim)
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
	r3()

	// A replica that dies holding places: its leases expire.
	short := a.Limiter(300 * time.Millisecond)
	for range 2 {
		if _, err := short.Acquire(ctx, k, lim); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := short.Acquire(ctx, k, lim); err == nil {
		t.Fatal("a third place")
	}
	time.Sleep(350 * time.Millisecond)
	if _, err := short.Acquire(ctx, k, lim); err != nil {
		t.Fatalf("expired leases still held: %v", err)
	}

	r.Kill()
	if err := la.Allow(ctx, k, lim); !errors.Is(err, apikey.ErrUnavailable) {
		t.Fatalf("Redis down: %v", err)
	}
}
