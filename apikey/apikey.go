// Package apikey is vild's access control: API keys with scopes and per-key
// limits. A key is a high-entropy token ("vild_" and 32 random bytes in
// base64url) shown once when it is made; stores keep only its SHA-256, with
// its name, scopes, creation time and limits. The Store interface has a file
// implementation here (FileStore, a JSON file in the data directory), one in
// memory (Memory, for tests), and one in Redis (package redisstore). The
// Authenticator checks a presented token; a Limiter counts a key's requests
// and inferences (Local here, a shared one in redisstore).
// docs/decisions/0018-api-keys.md says why.
package apikey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// TokenPrefix starts every token, so that a leaked one is recognisable (and
// secret scanners can find it).
const TokenPrefix = "vild_"

// tokenBytes is the token's random part: 256 bits.
const tokenBytes = 32

// tokenLen is the length of a token: the prefix and 43 base64url characters.
var tokenLen = len(TokenPrefix) + base64.RawURLEncoding.EncodedLen(tokenBytes)

// Scope is what a key may do.
type Scope string

// The scopes. Admin implies every other.
const (
	ScopeDetect            Scope = "detect"
	ScopeVocabulariesWrite Scope = "vocabularies:write"
	ScopeAdmin             Scope = "admin"
)

// Scopes lists every scope, in the order they are shown.
var Scopes = []Scope{ScopeDetect, ScopeVocabulariesWrite, ScopeAdmin}

// ParseScopes reads a comma-separated list of scopes.
func ParseScopes(s string) ([]Scope, error) {
	var out []Scope
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		sc := Scope(part)
		if !slices.Contains(Scopes, sc) {
			return nil, fmt.Errorf("apikey: unknown scope %q (want %s)", part, joinScopes(Scopes))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("apikey: no scope given (want one or more of %s)", joinScopes(Scopes))
	}
	return out, nil
}

func joinScopes(s []Scope) string {
	parts := make([]string, len(s))
	for i, sc := range s {
		parts[i] = string(sc)
	}
	return strings.Join(parts, ", ")
}

// KeyLimits are a key's own limits; a nil field takes the server's default
// (Limits), and 0 means unlimited.
type KeyLimits struct {
	RPS           *float64 `json:"rps,omitempty"`
	Burst         *int     `json:"burst,omitempty"`
	MaxConcurrent *int     `json:"max_concurrent,omitempty"`
}

// Limits bound one key's use: requests per second with a burst (a token
// bucket), and concurrent inferences. 0 is unlimited; Burst 0 with RPS set
// is RPS rounded up (at least 1).
type Limits struct {
	RPS           float64
	Burst         int
	MaxConcurrent int
}

// Or is l with the unset fields taken from d, the burst derived when unset.
func (l KeyLimits) Or(d Limits) Limits {
	out := d
	if l.RPS != nil {
		out.RPS = *l.RPS
	}
	if l.Burst != nil {
		out.Burst = *l.Burst
	}
	if l.MaxConcurrent != nil {
		out.MaxConcurrent = *l.MaxConcurrent
	}
	if out.RPS > 0 && out.Burst <= 0 {
		out.Burst = max(1, int(out.RPS+0.999999))
	}
	return out
}

// Validate refuses negative limits.
func (l KeyLimits) Validate() error {
	if (l.RPS != nil && *l.RPS < 0) || (l.Burst != nil && *l.Burst < 0) || (l.MaxConcurrent != nil && *l.MaxConcurrent < 0) {
		return errors.New("apikey: limits must not be negative (0 = unlimited)")
	}
	return nil
}

// String shows the limits as `vild keys list` prints them.
func (l KeyLimits) String() string {
	f := func(name string, set bool, v string) string {
		if !set {
			return name + "=default"
		}
		if v == "0" {
			return name + "=unlimited"
		}
		return name + "=" + v
	}
	var rps, burst, conc string
	if l.RPS != nil {
		rps = fmt.Sprint(*l.RPS)
	}
	if l.Burst != nil {
		burst = fmt.Sprint(*l.Burst)
	}
	if l.MaxConcurrent != nil {
		conc = fmt.Sprint(*l.MaxConcurrent)
	}
	return strings.Join([]string{f("rps", l.RPS != nil, rps), f("burst", l.Burst != nil, burst),
		f("max-concurrent", l.MaxConcurrent != nil, conc)}, " ")
}

// Key is a stored key: never the token, only its hash.
type Key struct {
	Name string `json:"name"`
	// Hash is the hex SHA-256 of the token.
	Hash    string    `json:"hash"`
	Scopes  []Scope   `json:"scopes"`
	Created time.Time `json:"created"`
	Limits  KeyLimits `json:"limits"`
}

// Allows reports whether the key has scope s (admin has every scope).
func (k *Key) Allows(s Scope) bool {
	return slices.Contains(k.Scopes, ScopeAdmin) || slices.Contains(k.Scopes, s)
}

// Errors of keys and stores.
var (
	// ErrNoKey: the request carries no key.
	ErrNoKey = errors.New("apikey: no API key given")
	// ErrInvalidKey: the token is malformed, unknown or revoked.
	ErrInvalidKey = errors.New("apikey: the API key is not valid")
	// ErrForbidden: the key lacks the scope the route needs.
	ErrForbidden = errors.New("apikey: the API key lacks the scope this route needs")
	// ErrRateLimited: the key has used its requests or concurrent inferences;
	// the error is a *LimitError that says when to retry.
	ErrRateLimited = errors.New("apikey: the API key's rate limit is reached")
	ErrNotFound    = errors.New("apikey: no key of that name")
	ErrExists      = errors.New("apikey: a key of that name exists")
	ErrBadName     = errors.New("apikey: a key name is 1–64 of A–Z a–z 0–9 . _ - and starts with a letter or digit")
	// ErrUnavailable wraps failures of a shared store that a retry may cure.
	ErrUnavailable = errors.New("apikey: the key store is unavailable")
)

// LimitError is ErrRateLimited with the wait before a retry may succeed.
type LimitError struct {
	RetryAfter time.Duration
	// Concurrent is true when the concurrent inferences, not the rate, ran out.
	Concurrent bool
}

func (e *LimitError) Error() string {
	what := "requests per second"
	if e.Concurrent {
		what = "concurrent inferences"
	}
	return fmt.Sprintf("apikey: rate limit reached (%s); retry after %s", what, e.RetryAfter)
}

// Is makes errors.Is(err, ErrRateLimited) hold.
func (e *LimitError) Is(target error) bool { return target == ErrRateLimited }

// ScopeError is ErrForbidden naming the scope the route needs.
type ScopeError struct{ Need Scope }

func (e *ScopeError) Error() string {
	return fmt.Sprintf("apikey: the API key lacks the %s scope", e.Need)
}

// Is makes errors.Is(err, ErrForbidden) hold.
func (e *ScopeError) Is(target error) bool { return target == ErrForbidden }

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName returns ErrBadName unless name may name a key.
func CheckName(name string) error {
	if !nameRe.MatchString(name) {
		return ErrBadName
	}
	return nil
}

// NewToken returns a new token from crypto/rand.
func NewToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("apikey: random token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Hash is the hex SHA-256 of a token: what stores keep and look keys up by.
// One round of SHA-256 is enough for a token of 256 random bits (no
// dictionary to guess from); a password hash would only slow every request.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// wellFormed reports whether token has the form NewToken makes.
func wellFormed(token string) bool {
	if len(token) != tokenLen || !strings.HasPrefix(token, TokenPrefix) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(token[len(TokenPrefix):])
	return err == nil
}

// New makes a key: a fresh token (returned once, to be shown to the user)
// and the Key to store, which holds only its hash.
func New(name string, scopes []Scope, limits KeyLimits, now time.Time) (token string, k Key, err error) {
	if err := CheckName(name); err != nil {
		return "", Key{}, err
	}
	if len(scopes) == 0 {
		return "", Key{}, errors.New("apikey: a key needs at least one scope")
	}
	if err := limits.Validate(); err != nil {
		return "", Key{}, err
	}
	token, err = NewToken()
	if err != nil {
		return "", Key{}, err
	}
	return token, Key{Name: name, Hash: Hash(token), Scopes: scopes, Created: now.UTC().Truncate(time.Second), Limits: limits}, nil
}

// Store keeps keys by name, found by the hash of their token.
type Store interface {
	// Create stores k; ErrExists when a key has its name.
	Create(ctx context.Context, k Key) error
	// Lookup returns the key whose token hashes to hash; ErrInvalidKey when none.
	Lookup(ctx context.Context, hash string) (*Key, error)
	// List returns the keys sorted by name.
	List(ctx context.Context) ([]Key, error)
	// Revoke deletes the named key; ErrNotFound when there is none.
	Revoke(ctx context.Context, name string) error
}

// Authenticator checks presented tokens against a Store.
type Authenticator struct{ Store Store }

// Authenticate returns the key of token: ErrNoKey when token is empty,
// ErrInvalidKey when it is malformed or no stored key has it. The store is
// searched by the token's hash, and the stored hash compared in constant time.
func (a Authenticator) Authenticate(ctx context.Context, token string) (*Key, error) {
	if token == "" {
		return nil, ErrNoKey
	}
	if !wellFormed(token) {
		return nil, ErrInvalidKey
	}
	h := Hash(token)
	k, err := a.Store.Lookup(ctx, h)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(k.Hash), []byte(h)) != 1 {
		return nil, ErrInvalidKey
	}
	return k, nil
}
