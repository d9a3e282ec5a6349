// Package access guards vild's HTTP routes: an API key on the /v1 and
// /labelstudio routes (authentication, the route's scope, the key's rate and concurrent
// inferences), security headers on every answer, and CORS by an origin
// allow-list. Its failures are apikey's errors, answered as problems by the
// server's one translator.
package access

import (
	"context"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/rs/cors"

	"github.com/vild/vild/apikey"
	"github.com/vild/vild/observe"
)

// Rule is what one guarded route asks of a key: a scope, and whether the
// route runs a model (then it holds one of the key's concurrent places).
type Rule struct {
	Scope     apikey.Scope
	Inference bool
}

// Routes is the one table of the scopes of the guarded routes (/v1 and the
// Label Studio backend's /labelstudio), by method
// and route pattern (docs/api.md, Security). A route missing from it needs
// admin (RuleFor); handlers' TestEveryRouteHasAScope checks that none is missing.
var Routes = map[string]Rule{
	"POST /v1/detect":                {apikey.ScopeDetect, true},
	"POST /v1/images":                {apikey.ScopeDetect, true},
	"GET /v1/images/{id}":            {apikey.ScopeDetect, false},
	"DELETE /v1/images/{id}":         {apikey.ScopeDetect, false},
	"POST /v1/images/{id}/detect":    {apikey.ScopeDetect, true},
	"POST /v1/embeddings/text":       {apikey.ScopeDetect, true},
	"GET /v1/models":                 {apikey.ScopeDetect, false},
	"GET /v1/vocabularies":           {apikey.ScopeDetect, false},
	"GET /v1/vocabularies/{name}":    {apikey.ScopeDetect, false},
	"PUT /v1/vocabularies/{name}":    {apikey.ScopeVocabulariesWrite, false},
	"DELETE /v1/vocabularies/{name}": {apikey.ScopeVocabulariesWrite, false},
	"GET /labelstudio/health":        {apikey.ScopeDetect, false},
	"POST /labelstudio/setup":        {apikey.ScopeDetect, false},
	"POST /labelstudio/predict":      {apikey.ScopeDetect, true},
}

// routePatterns are the patterns of the table, whatever the method.
var routePatterns = func() map[string]bool {
	m := map[string]bool{}
	for k := range Routes {
		_, pattern, _ := strings.Cut(k, " ")
		m[pattern] = true
	}
	return m
}()

// RuleFor is the rule of a method and the pattern the router finds for it.
// No pattern, or a pattern of the table under another method, is a request
// the router answers 404 or 405: any valid key may hear that. A pattern the
// table lacks is a route left out of it: admin keys only.
func RuleFor(method, pattern string) Rule {
	if rule, ok := Routes[method+" "+pattern]; ok {
		return rule
	}
	if pattern == "" || routePatterns[pattern] {
		return Rule{}
	}
	return Rule{Scope: apikey.ScopeAdmin}
}

// Guard requires an API key on the routes it wraps: authentication (401),
// the route's scope (403), then the key's rate and concurrent inferences
// (429).
type Guard struct {
	Auth     apikey.Authenticator
	Limiter  apikey.Limiter
	Defaults apikey.Limits // limits of keys that set none of their own
	// Route finds the pattern a request will match ("" when none), as the
	// router will route it (Finder).
	Route func(method, path string) string
	// Fail answers a refused request (the server's problem writer).
	Fail func(w http.ResponseWriter, r *http.Request, err error)
}

// presentedToken is the token of Authorization: Bearer, else the password
// of Authorization: Basic (what Label Studio sends a connected model, any
// user name), else of X-API-Key; "" when there is none.
func presentedToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	if _, password, ok := r.BasicAuth(); ok {
		return strings.TrimSpace(password)
	}
	return strings.TrimSpace(r.Header.Get("X-API-Key"))
}

// routingPath is the path chi routes a request by: the raw (escaped) path
// when there is one. The scope check must look up the same route the router
// will take, or an escaped path could reach a route under another's scope.
func routingPath(r *http.Request) string {
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

// Middleware wraps next with the checks.
func (a *Guard) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		k, err := a.Auth.Authenticate(ctx, presentedToken(r))
		if err != nil {
			a.Fail(w, r, err)
			return
		}
		observe.RecordFrom(ctx).Key(k.Name) // for the access log
		r = r.WithContext(context.WithValue(ctx, keyContext{}, k))
		rule := RuleFor(r.Method, a.Route(r.Method, routingPath(r)))
		if rule.Scope != "" && !k.Allows(rule.Scope) {
			a.Fail(w, r, &apikey.ScopeError{Need: rule.Scope})
			return
		}
		lim := k.Limits.Or(a.Defaults)
		if err := a.Limiter.Allow(r.Context(), k, lim); err != nil {
			a.Fail(w, r, err)
			return
		}
		if rule.Inference {
			release, err := a.Limiter.Acquire(r.Context(), k, lim)
			if err != nil {
				a.Fail(w, r, err)
				return
			}
			defer release()
		}
		next.ServeHTTP(w, r)
	})
}

// keyContext carries the request's key, for the log.
type keyContext struct{}

// KeyName is the name of the request's key ("" without one).
func KeyName(ctx context.Context) string {
	if k, ok := ctx.Value(keyContext{}).(*apikey.Key); ok {
		return k.Name
	}
	return ""
}

// Finder returns how mux routes a method and path (its pattern, "" for
// none), in the form the table uses.
func Finder(mux *chi.Mux) func(method, path string) string {
	return func(method, path string) string {
		p := mux.Find(chi.NewRouteContext(), method, path)
		if p != "/" {
			p = strings.TrimSuffix(p, "/")
		}
		return p
	}
}

// Content-Security-Policy of the web page and the API: scripts, styles,
// images and requests from this origin only (the page has no inline script
// or style), never framed.
const (
	pageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
		"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	// docsCSP is the Swagger UI's: its page has an inline script and style.
	docsCSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; " +
		"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

// SecurityHeaders sets the headers every answer carries: a CSP, no MIME
// sniffing, no framing, no referrer.
func SecurityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if r.URL.Path == "/docs" || strings.HasPrefix(r.URL.Path, "/docs/") {
			h.Set("Content-Security-Policy", docsCSP)
		} else {
			h.Set("Content-Security-Policy", pageCSP)
		}
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// CORS allows cross-origin requests from the given origins only (none:
// no CORS headers at all, so browsers keep other origins out); preflights
// are answered before the key check, which they cannot pass.
func CORS(origins []string) func(http.Handler) http.Handler {
	if len(origins) == 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete},
		AllowedHeaders: []string{"Authorization", "X-API-Key", "Content-Type", "Accept", "If-Match", "If-None-Match"},
		ExposedHeaders: []string{"ETag", "Location", "Retry-After", "WWW-Authenticate"},
		MaxAge:         600,
	}).Handler
}
