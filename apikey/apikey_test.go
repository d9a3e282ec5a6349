package apikey

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTokenAndHash(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewToken()
	if a == b || !strings.HasPrefix(a, TokenPrefix) || len(a) != len(TokenPrefix)+43 || !wellFormed(a) {
		t.Fatalf("tokens %q %q", a, b)
	}
	if h := Hash(a); len(h) != 64 || h == Hash(b) || strings.Contains(h, a[len(TokenPrefix):]) {
		t.Fatalf("hash %q", h)
	}
	for _, bad := range []string{"", "vild_", "vild_short", "x" + a[1:], a + "A", a[:len(a)-1] + "*"} {
		if wellFormed(bad) {
			t.Errorf("%q taken as well formed", bad)
		}
	}
}

func TestParseScopes(t *testing.T) {
	s, err := ParseScopes(" detect, vocabularies:write,detect ")
	if err != nil || len(s) != 2 || s[0] != ScopeDetect || s[1] != ScopeVocabulariesWrite {
		t.Fatalf("%v %v", s, err)
	}
	for _, bad := range []string{"", ",", "detect,root", "Admin"} {
		if _, err := ParseScopes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	k := Key{Scopes: []Scope{ScopeDetect}}
	if !k.Allows(ScopeDetect) || k.Allows(ScopeVocabulariesWrite) || k.Allows(ScopeAdmin) {
		t.Fatal("detect key")
	}
	k.Scopes = []Scope{ScopeAdmin}
	if !k.Allows(ScopeDetect) || !k.Allows(ScopeVocabulariesWrite) {
		t.Fatal("admin implies every scope")
	}
}

func TestLimitsOr(t *testing.T) {
	d := Limits{RPS: 10, Burst: 20, MaxConcurrent: 2}
	if got := (KeyLimits{}).Or(d); got != d {
		t.Fatalf("defaults: %+v", got)
	}
	if got := (KeyLimits{RPS: new(2.5), MaxConcurrent: new(0)}).Or(Limits{}); got != (Limits{RPS: 2.5, Burst: 3}) {
		t.Fatalf("own rate, burst derived, unlimited concurrency: %+v", got)
	}
	if got := (KeyLimits{RPS: new(0.0)}).Or(d); got.RPS != 0 {
		t.Fatalf("0 = unlimited over a default: %+v", got)
	}
	if (KeyLimits{Burst: new(-1)}).Validate() == nil {
		t.Fatal("negative burst accepted")
	}
	if s := (KeyLimits{RPS: new(5.0), MaxConcurrent: new(0)}).String(); s != "rps=5 burst=default max-concurrent=unlimited" {
		t.Fatal(s)
	}
}

func TestFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", FileName)
	s, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	token, k, _ := New("a", []Scope{ScopeDetect}, KeyLimits{}, time.Now())
	if err := s.Create(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), token) || strings.Contains(string(b), token[len(TokenPrefix):]) || !strings.Contains(string(b), k.Hash) {
		t.Fatalf("the file must hold the hash and never the token:\n%s", b)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keys file mode %v %v, want 0600", st.Mode(), err)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFileStore(path); err == nil {
		t.Fatal("a keys file that does not parse opened")
	}
}

// A key revoked through one FileStore (the command line) stops working in
// another (a running server) within CheckEvery, without a restart.
func TestFileStoreSeesRevocation(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), FileName)
	cli, _ := OpenFileStore(path)
	srv, err := OpenFileStore(path) // before any key exists
	if err != nil {
		t.Fatal(err)
	}
	auth := Authenticator{Store: srv}
	token, k, _ := New("ci", []Scope{ScopeDetect}, KeyLimits{}, time.Now())
	if err := cli.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, err := auth.Authenticate(ctx, token); err != nil; _, err = auth.Authenticate(ctx, token) {
		if time.Now().After(deadline) {
			t.Fatalf("a created key never worked: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
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
	if _, err := auth.Authenticate(ctx, token); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("revoked key: %v", err)
	}
}

// Concurrent creates from several processes' stores lose none.
func TestFileStoreConcurrentCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := OpenFileStore(path)
			if err != nil {
				t.Error(err)
				return
			}
			_, k, _ := New("k"+string(rune('a'+i)), []Scope{ScopeDetect}, KeyLimits{}, time.Now())
			if err := s.Create(context.Background(), k); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s, _ := OpenFileStore(path)
	if keys, err := s.List(context.Background()); err != nil || len(keys) != 8 {
		t.Fatalf("%d keys, %v", len(keys), err)
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	s := NewMemory()
	token, k, err := New("app", []Scope{ScopeDetect}, KeyLimits{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(k.Hash, token) || k.Hash != Hash(token) {
		t.Fatal("the key must hold the hash only")
	}
	s.Create(ctx, k)
	a := Authenticator{Store: s}
	if got, err := a.Authenticate(ctx, token); err != nil || got.Name != "app" {
		t.Fatalf("good token: %v %v", got, err)
	}
	if _, err := a.Authenticate(ctx, ""); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no token: %v", err)
	}
	other, _ := NewToken()
	for _, bad := range []string{"nonsense", other, token[:len(token)-1]} {
		if _, err := a.Authenticate(ctx, bad); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("bad token: %v", err)
		}
	}
	if _, _, err := New("../x", []Scope{ScopeDetect}, KeyLimits{}, time.Now()); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestLocalLimiter(t *testing.T) {
	ctx := context.Background()
	l := NewLocal()
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	k := &Key{Name: "a", Hash: "h"}
	lim := Limits{RPS: 2, Burst: 3, MaxConcurrent: 1}
	for i := range 3 {
		if err := l.Allow(ctx, k, lim); err != nil {
			t.Fatalf("request %d of the burst: %v", i, err)
		}
	}
	err := l.Allow(ctx, k, lim)
	var le *LimitError
	if !errors.As(err, &le) || !errors.Is(err, ErrRateLimited) || le.RetryAfter != 500*time.Millisecond {
		t.Fatalf("past the burst: %v", err)
	}
	now = now.Add(500 * time.Millisecond)
	if err := l.Allow(ctx, k, lim); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
	if err := l.Allow(ctx, &Key{Name: "b", Hash: "other"}, lim); err != nil {
		t.Fatalf("another key has its own bucket: %v", err)
	}
	if err := l.Allow(ctx, k, Limits{}); err != nil {
		t.Fatalf("unlimited: %v", err)
	}

	release, err := l.Acquire(ctx, k, lim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, k, lim); !errors.As(err, &le) || !le.Concurrent {
		t.Fatalf("second concurrent inference: %v", err)
	}
	release()
	release() // once only
	r2, err := l.Acquire(ctx, k, lim)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	if _, err := l.Acquire(ctx, k, lim); err == nil {
		t.Fatal("a double release freed two places")
	}
	r2()
}
