package handlers

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vild/vild/access"
	"github.com/vild/vild/apikey"
	"github.com/vild/vild/internal/services"
	"github.com/vild/vild/labelstudio"
	"github.com/vild/vild/redisstore"
	"github.com/vild/vild/web"
)

// Every guarded route the router has (/v1, /labelstudio) is in the scope
// table, the table names no route the router lacks, and the lookup the key
// check makes finds each route as the router does.
func TestEveryRouteHasAScope(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.Keys = apikey.NewMemory(); d.LabelStudio = &labelstudio.Settings{} })
	mux := e.h.(*chi.Mux)
	find := access.Finder(mux)
	seen := map[string]bool{}
	err := chi.Walk(mux, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !strings.HasPrefix(route, "/v1/") && !strings.HasPrefix(route, "/labelstudio/") {
			return nil
		}
		route = strings.TrimSuffix(route, "/")
		key := method + " " + route
		seen[key] = true
		if _, ok := access.Routes[key]; !ok {
			t.Errorf("%s has no row in access.Routes", key)
		}
		concrete := strings.NewReplacer("{id}", "0123abcd", "{name}", "kitchen").Replace(route)
		if got := find(method, concrete); got != route {
			t.Errorf("%s %s: the key check finds %q", method, concrete, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for key := range access.Routes {
		if !seen[key] {
			t.Errorf("access.Routes names %s, which is not a route", key)
		}
	}
}

// keyBackend is where the tests' keys live and how they are limited: the
// file store with the local limiter, or Redis with the shared one.
type keyBackend struct {
	name string
	open func(t *testing.T) (server apikey.Store, cli apikey.Store, lim apikey.Limiter)
}

var keyBackends = []keyBackend{
	{"file", func(t *testing.T) (apikey.Store, apikey.Store, apikey.Limiter) {
		path := filepath.Join(t.TempDir(), apikey.FileName)
		srv, err := apikey.OpenFileStore(path)
		if err != nil {
			t.Fatal(err)
		}
		cli, err := apikey.OpenFileStore(path) // as vild keys opens it: another store on the same file
		if err != nil {
			t.Fatal(err)
		}
		return srv, cli, apikey.NewLocal()
	}},
	{"redis", func(t *testing.T) (apikey.Store, apikey.Store, apikey.Limiter) {
		r := services.StartRedis(t)
		open := func() *redisstore.Client {
			c, err := redisstore.Open(context.Background(), r.URL(), redisstore.NewMetrics(prometheus.NewRegistry()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		srv := open()
		return srv.APIKeys(), open().APIKeys(), srv.Limiter(time.Minute)
	}},
}

// keyEnv is the API with keys required, and a way to make keys.
type keyEnv struct {
	*testEnv
	cli apikey.Store
	log *bytes.Buffer
}

func newKeyEnv(t *testing.T, b keyBackend, mod func(*Deps)) *keyEnv {
	srv, cli, lim := b.open(t)
	var log bytes.Buffer
	e := newEnv(t, func(d *Deps) {
		d.Keys, d.Limiter, d.Web = srv, lim, web.FS()
		d.Logger = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if mod != nil {
			mod(d)
		}
	})
	return &keyEnv{testEnv: e, cli: cli, log: &log}
}

// key makes a key and returns its token.
func (e *keyEnv) key(t *testing.T, name string, limits apikey.KeyLimits, scopes ...apikey.Scope) string {
	t.Helper()
	token, k, err := apikey.New(name, scopes, limits, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cli.Create(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return token
}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

func (e *keyEnv) detect(t *testing.T, hdr ...string) *httptest.ResponseRecorder {
	return e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t)), hdr...)
}

func wantChallenge(t *testing.T, rec *httptest.ResponseRecorder, want string) {
	t.Helper()
	if got := rec.Header().Get("WWW-Authenticate"); got != want {
		t.Fatalf("WWW-Authenticate %q, want %q", got, want)
	}
}

func forEachBackend(t *testing.T, fn func(t *testing.T, b keyBackend)) {
	for _, b := range keyBackends {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// No key or a bad one: 401 with a Bearer challenge; the probes, the page and
// the docs stay open.
func TestKeysUnauthorized(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b keyBackend) {
		e := newKeyEnv(t, b, nil)
		good := e.key(t, "app", apikey.KeyLimits{}, apikey.ScopeDetect)
		other, _ := apikey.NewToken()

		rec := e.detect(t)
		wantProblem(t, rec, 401, "unauthorized")
		wantChallenge(t, rec, `Bearer realm="vild"`)
		for _, hdr := range [][]string{bearer(other), bearer("nonsense"), {"X-API-Key", other}, {"Authorization", "Bearer " + good + "x"}} {
			rec := e.detect(t, hdr...)
			wantProblem(t, rec, 401, "unauthorized")
			wantChallenge(t, rec, `Bearer realm="vild", error="invalid_token"`)
		}
		// A scheme other than Bearer is no key.
		rec = e.detect(t, "Authorization", "Basic "+good)
		wantProblem(t, rec, 401, "unauthorized")
		wantChallenge(t, rec, `Bearer realm="vild"`)
		// The key as a basic-auth password (any user) is how Label Studio sends it.
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("labelstudio:"+good))
		for _, hdr := range [][]string{bearer(good), {"Authorization", "bearer " + good}, {"X-API-Key", good}, {"Authorization", basic}} {
			if rec := e.detect(t, hdr...); rec.Code != 200 {
				t.Fatalf("%s: %d %s", hdr[0], rec.Code, rec.Body)
			}
		}
		// Unknown routes answer 401 without a key, 404 with one.
		wantProblem(t, e.do(t, "GET", "/v1/nothing", "", nil), 401, "unauthorized")
		wantProblem(t, e.do(t, "GET", "/v1/nothing", "", nil, bearer(good)...), 404, "not-found")
		wantProblem(t, e.do(t, "GET", "/v1/detect", "", nil, bearer(good)...), 405, "method-not-allowed")
		for _, path := range []string{"/livez", "/readyz", "/", "/app.js", "/docs/index.html"} {
			if rec := e.do(t, "GET", path, "", nil); rec.Code != 200 {
				t.Errorf("%s without a key: %d", path, rec.Code)
			}
		}
	})
}

// A key without the route's scope: 403 naming the scope; admin has all.
func TestKeysForbidden(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b keyBackend) {
		e := newKeyEnv(t, b, nil)
		detect := e.key(t, "reader", apikey.KeyLimits{}, apikey.ScopeDetect)
		writer := e.key(t, "writer", apikey.KeyLimits{}, apikey.ScopeVocabulariesWrite)
		admin := e.key(t, "admin", apikey.KeyLimits{}, apikey.ScopeAdmin)
		put := func(token, name string) *httptest.ResponseRecorder {
			return e.do(t, "PUT", "/v1/vocabularies/"+name, "application/json", strings.NewReader(`{"categories":["red"]}`), bearer(token)...)
		}

		rec := put(detect, "kitchen")
		p := wantProblem(t, rec, 403, "forbidden")
		if !strings.Contains(p.Detail, "vocabularies:write") {
			t.Fatalf("detail %q does not name the scope", p.Detail)
		}
		wantChallenge(t, rec, `Bearer realm="vild", error="insufficient_scope", scope="vocabularies:write"`)
		wantProblem(t, e.do(t, "DELETE", "/v1/vocabularies/kitchen", "", nil, bearer(detect)...), 403, "forbidden")
		// An escaped path is checked as the router routes it.
		wantProblem(t, e.do(t, "DELETE", "/v1/vocabularies/%6Bitchen", "", nil, bearer(detect)...), 403, "forbidden")
		wantProblem(t, e.do(t, "PUT", "/v1/vocabularies/a%2Fb", "application/json", strings.NewReader(`{"categories":["red"]}`), bearer(detect)...), 403, "forbidden")

		if rec := put(writer, "kitchen"); rec.Code != 201 {
			t.Fatalf("writer PUT: %d %s", rec.Code, rec.Body)
		}
		wantProblem(t, e.detect(t, bearer(writer)...), 403, "forbidden")
		wantProblem(t, e.do(t, "GET", "/v1/vocabularies/kitchen", "", nil, bearer(writer)...), 403, "forbidden")
		if rec := e.do(t, "GET", "/v1/vocabularies/kitchen", "", nil, bearer(detect)...); rec.Code != 200 {
			t.Fatalf("reader GET: %d", rec.Code)
		}
		for _, rec := range []*httptest.ResponseRecorder{put(admin, "garden"), e.detect(t, bearer(admin)...),
			e.do(t, "DELETE", "/v1/vocabularies/garden", "", nil, bearer(admin)...), e.do(t, "GET", "/v1/models", "", nil, bearer(admin)...)} {
			if rec.Code >= 300 {
				t.Fatalf("admin: %d %s", rec.Code, rec.Body)
			}
		}
	})
}

// A key past its rate or its concurrent inferences: 429 with Retry-After.
func TestKeysRateLimited(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b keyBackend) {
		e := newKeyEnv(t, b, func(d *Deps) { d.Config.KeyRPS, d.Config.KeyBurst = 100, 100 })
		slow := e.key(t, "slow", apikey.KeyLimits{RPS: new(0.5), Burst: new(2)}, apikey.ScopeDetect)
		other := e.key(t, "other", apikey.KeyLimits{}, apikey.ScopeDetect)
		for n := range 2 {
			if rec := e.do(t, "GET", "/v1/models", "", nil, bearer(slow)...); rec.Code != 200 {
				t.Fatalf("request %d of the burst: %d", n, rec.Code)
			}
		}
		rec := e.do(t, "GET", "/v1/models", "", nil, bearer(slow)...)
		p := wantProblem(t, rec, 429, "rate-limited")
		if ra := rec.Header().Get("Retry-After"); ra != "2" {
			t.Fatalf("Retry-After %q, want 2 (one request per 2 s)", ra)
		}
		if !strings.Contains(p.Detail, "rate") {
			t.Fatalf("detail %q", p.Detail)
		}
		if rec := e.do(t, "GET", "/v1/models", "", nil, bearer(other)...); rec.Code != 200 {
			t.Fatalf("another key (server default limits): %d", rec.Code)
		}

		// One concurrent inference: a second while the first runs is 429.
		e.det.Gate, e.det.Started = make(chan struct{}), make(chan struct{}, 2)
		one := e.key(t, "one", apikey.KeyLimits{MaxConcurrent: new(1)}, apikey.ScopeDetect)
		var wg sync.WaitGroup
		wg.Add(1)
		var first *httptest.ResponseRecorder
		go func() { defer wg.Done(); first = e.detect(t, bearer(one)...) }()
		<-e.det.Started
		rec = e.detect(t, bearer(one)...)
		p = wantProblem(t, rec, 429, "rate-limited")
		if rec.Header().Get("Retry-After") != "1" || !strings.Contains(p.Detail, "concurrent") {
			t.Fatalf("Retry-After %q, detail %q", rec.Header().Get("Retry-After"), p.Detail)
		}
		// Listing is not an inference: it goes on.
		if rec := e.do(t, "GET", "/v1/models", "", nil, bearer(one)...); rec.Code != 200 {
			t.Fatalf("models while the inference runs: %d", rec.Code)
		}
		close(e.det.Gate)
		wg.Wait()
		if first.Code != 200 {
			t.Fatalf("the first inference: %d", first.Code)
		}
		if rec := e.detect(t, bearer(one)...); rec.Code != 200 {
			t.Fatalf("after the first finished: %d %s", rec.Code, rec.Body)
		}
	})
}

// A key revoked while the server runs is refused within a second.
func TestKeysRevocationWithoutRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b keyBackend) {
		e := newKeyEnv(t, b, nil)
		token := e.key(t, "ci", apikey.KeyLimits{}, apikey.ScopeDetect)
		deadline := time.Now().Add(2 * time.Second)
		for e.do(t, "GET", "/v1/models", "", nil, bearer(token)...).Code != 200 {
			if time.Now().After(deadline) {
				t.Fatal("a new key never worked")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := e.cli.Revoke(context.Background(), "ci"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for {
			rec := e.do(t, "GET", "/v1/models", "", nil, bearer(token)...)
			if rec.Code == 401 {
				wantChallenge(t, rec, `Bearer realm="vild", error="invalid_token"`)
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("the revoked key still answers %d after a second", rec.Code)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("%s store: revocation took effect after %s", b.name, time.Since(start).Round(time.Millisecond))
	})
}

// No log line holds a token, good or bad, from either header; failures name
// the key.
func TestTokensNeverLogged(t *testing.T) {
	e := newKeyEnv(t, keyBackends[0], nil)
	good := e.key(t, "app", apikey.KeyLimits{RPS: new(1.0), Burst: new(1)}, apikey.ScopeDetect)
	bad, _ := apikey.NewToken()
	for _, tok := range []string{good, bad} {
		for _, hdr := range [][]string{bearer(tok), {"X-API-Key", tok}} {
			e.detect(t, hdr...)
			e.do(t, "PUT", "/v1/vocabularies/k", "application/json", strings.NewReader(`{"categories":["red"]}`), hdr...)
			e.do(t, "POST", "/v1/detect", "application/json", strings.NewReader(`{"nope":1}`), hdr...)
		}
	}
	log := e.log.String()
	if !strings.Contains(log, "problem=unauthorized") || !strings.Contains(log, "problem=forbidden") ||
		!strings.Contains(log, "problem=rate-limited") || !strings.Contains(log, "key=app") {
		t.Fatalf("the failures are not all logged:\n%s", log)
	}
	for _, tok := range []string{good, bad} {
		for _, part := range []string{tok, tok[len(apikey.TokenPrefix):], tok[len(apikey.TokenPrefix) : len(apikey.TokenPrefix)+16], apikey.Hash(tok)} {
			if strings.Contains(log, part) {
				t.Fatalf("the log holds a token (or its hash):\n%s", log)
			}
		}
	}
	if strings.Contains(log, "Bearer") || strings.Contains(log, "X-Api-Key") {
		t.Fatalf("the log holds an authorization header:\n%s", log)
	}
}

// Every answer carries the security headers; the page's CSP allows no inline
// script, the docs' allow the Swagger UI's.
func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, func(d *Deps) { d.Web = web.FS() })
	for _, path := range []string{"/", "/app.js", "/v1/models", "/v1/nothing", "/livez", "/docs/index.html"} {
		rec := e.do(t, "GET", path, "", nil)
		h := rec.Header()
		csp := h.Get("Content-Security-Policy")
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" ||
			h.Get("X-Frame-Options") != "DENY" || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: headers %v", path, h)
		}
		if strings.HasPrefix(path, "/docs") != strings.Contains(csp, "'unsafe-inline'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
	if csp := e.do(t, "GET", "/", "", nil).Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self';") {
		t.Fatalf("page CSP %q", csp)
	}
}

// CORS: off by default; with an allow-list, an allowed origin's preflight is
// answered (before the key check) and its requests carry the CORS headers,
// another origin gets none.
func TestCORS(t *testing.T) {
	const allowed, denied = "https://app.example", "https://evil.example"
	preflight := func(e *testEnv, origin string) *httptest.ResponseRecorder {
		return e.do(t, "OPTIONS", "/v1/detect", "", nil, "Origin", origin,
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	}
	off := newEnv(t, nil)
	if rec := preflight(off, allowed); rec.Code != 405 || rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS off: %d %v", rec.Code, rec.Header())
	}
	if h := off.do(t, "GET", "/v1/models", "", nil, "Origin", allowed).Header(); h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS off: %v", h)
	}

	e := newKeyEnv(t, keyBackends[0], func(d *Deps) { d.CORSOrigins = []string{allowed} })
	token := e.key(t, "web", apikey.KeyLimits{}, apikey.ScopeDetect)
	rec := preflight(e.testEnv, allowed)
	h := rec.Header()
	if rec.Code != 204 || h.Get("Access-Control-Allow-Origin") != allowed || !strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "authorization") ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("allowed preflight: %v", h)
	}
	if h := preflight(e.testEnv, denied).Header(); h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Methods") != "" {
		t.Fatalf("denied preflight: %v", h)
	}
	rec = e.do(t, "GET", "/v1/models", "", nil, "Origin", allowed, "Authorization", "Bearer "+token)
	if rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != allowed || !strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Fatalf("allowed request: %d %v", rec.Code, rec.Header())
	}
	rec = e.do(t, "GET", "/v1/models", "", nil, "Origin", denied, "Authorization", "Bearer "+token)
	if rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("denied request: %v", rec.Header())
	}
	// A 401 to an allowed origin carries CORS headers, so the page can read it.
	rec = e.do(t, "GET", "/v1/models", "", nil, "Origin", allowed)
	if rec.Code != 401 || rec.Header().Get("Access-Control-Allow-Origin") != allowed {
		t.Fatalf("401 to an allowed origin: %d %v", rec.Code, rec.Header())
	}
}
