// Package apikeytest checks apikey.Store implementations.
package apikeytest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vild/vild/apikey"
)

// StoreContract checks what every apikey.Store must do, on an empty store s: create,
// look up by hash, list without tokens, refuse a second key of one name,
// revoke. The Redis store's tests run it too.
func StoreContract(t *testing.T, s apikey.Store) {
	t.Helper()
	ctx := context.Background()
	token, k, err := apikey.New("alpha", []apikey.Scope{apikey.ScopeDetect, apikey.ScopeVocabulariesWrite}, apikey.KeyLimits{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, k); err != nil {
		t.Fatal(err)
	}
	_, k2, _ := apikey.New("alpha", []apikey.Scope{apikey.ScopeAdmin}, apikey.KeyLimits{}, time.Now())
	if err := s.Create(ctx, k2); !errors.Is(err, apikey.ErrExists) {
		t.Fatalf("second key named alpha: %v", err)
	}
	got, err := s.Lookup(ctx, apikey.Hash(token))
	if err != nil || got.Name != "alpha" || len(got.Scopes) != 2 || !got.Created.Equal(k.Created) {
		t.Fatalf("lookup: %+v %v", got, err)
	}
	if _, err := s.Lookup(ctx, apikey.Hash("vild_other")); !errors.Is(err, apikey.ErrInvalidKey) {
		t.Fatalf("unknown hash: %v", err)
	}
	_, b, _ := apikey.New("beta", []apikey.Scope{apikey.ScopeAdmin}, apikey.KeyLimits{}, time.Now())
	if err := s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "beta" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := s.Revoke(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, apikey.Hash(token)); !errors.Is(err, apikey.ErrInvalidKey) {
		t.Fatalf("revoked key found: %v", err)
	}
	if err := s.Revoke(ctx, "alpha"); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	if err := s.Create(ctx, apikey.Key{Name: "../x", Hash: "h"}); !errors.Is(err, apikey.ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
}
