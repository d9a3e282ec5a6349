package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/access"
	"github.com/vild/vild/admission"
	"github.com/vild/vild/api"
	"github.com/vild/vild/apikey"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/imageio"
	"github.com/vild/vild/session"
	"github.com/vild/vild/vocabulary"
)

var errDraining = &api.Error{Status: http.StatusServiceUnavailable, Slug: "draining", Msg: "the server is shutting down"}

// domainErrors maps the domain's sentinel errors to problems whose message is
// the fixed one given here.
var domainErrors = []struct {
	err    error
	status int
	slug   string
	msg    string
}{
	{admission.ErrQueueFull, http.StatusServiceUnavailable, "queue-full", "the server is busy: the request queue is full; retry later"},
	{admission.ErrQueueTimeout, http.StatusServiceUnavailable, "queue-timeout", "the server is busy: no worker became free in time; retry later"},
	{imageio.ErrUnsupportedFormat, http.StatusUnsupportedMediaType, "unsupported-image", "unsupported image format: send JPEG, PNG, GIF or WebP"},
	{imageio.ErrCorrupt, http.StatusBadRequest, "corrupt-image", "the image could not be decoded"},
	{vocabulary.ErrNotFound, http.StatusNotFound, "vocabulary-not-found", "no vocabulary of that name"},
	{vocabulary.ErrETagMismatch, http.StatusPreconditionFailed, "precondition-failed", "If-Match does not match the vocabulary's ETag"},
	{vocabulary.ErrBadName, http.StatusBadRequest, "invalid-vocabulary-name", "a vocabulary name is 1–64 of A–Z a–z 0–9 . _ - and starts with a letter or digit"},
	{vocabulary.ErrTemplatesUnsupported, http.StatusUnprocessableEntity, "templates-unsupported", "this model's text encoder does not take custom templates"},
	{session.ErrNotFound, http.StatusNotFound, "image-not-found", "no image session with that id (it may have expired)"},
	{vocabulary.ErrUnavailable, http.StatusServiceUnavailable, "store-unavailable", "the shared store is unavailable; retry later"},
	{session.ErrUnavailable, http.StatusServiceUnavailable, "store-unavailable", "the shared store is unavailable; retry later"},
	{detector.ErrEmptyVocabulary, http.StatusUnprocessableEntity, "empty-vocabulary", "the vocabulary has no categories"},
	{detector.ErrMasksUnsupported, http.StatusUnprocessableEntity, "masks-unsupported", "masks need the model's mask head and the image's features, which this model or session lacks"},
	{vocabulary.ErrStorageFull, http.StatusInsufficientStorage, "insufficient-storage", "the server's storage is full: nothing was written"},
	{vocabulary.ErrStorageReadOnly, http.StatusServiceUnavailable, "storage-read-only", "the server cannot write vocabularies now (its storage is read-only): nothing was written; retry later"},
	{apikey.ErrNoKey, http.StatusUnauthorized, "unauthorized", "an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>"},
	{apikey.ErrInvalidKey, http.StatusUnauthorized, "unauthorized", "the API key is not valid (unknown, revoked or malformed)"},
	{apikey.ErrForbidden, http.StatusForbidden, "forbidden", "the API key lacks the scope this route needs"},
	{apikey.ErrUnavailable, http.StatusServiceUnavailable, "store-unavailable", "the key store is unavailable; retry later"},
}

// challenges are the WWW-Authenticate values of the key errors (RFC 6750).
var challenges = []struct {
	err   error
	value string
}{
	{apikey.ErrNoKey, `Bearer realm="vild"`},
	{apikey.ErrInvalidKey, `Bearer realm="vild", error="invalid_token"`},
	{apikey.ErrForbidden, `Bearer realm="vild", error="insufficient_scope"`},
}

// challenge is err's WWW-Authenticate value, "" for none.
func challenge(err error) string {
	var se *apikey.ScopeError
	if errors.As(err, &se) {
		return fmt.Sprintf(`Bearer realm="vild", error="insufficient_scope", scope=%q`, string(se.Need))
	}
	for _, c := range challenges {
		if errors.Is(err, c.err) {
			return c.value
		}
	}
	return ""
}

// specSlugs names the problem of each kind of invalid vocabulary spec; the
// message is the spec error's own (vocabulary.InvalidError).
var specSlugs = []struct {
	kind error
	slug string
}{
	{vocabulary.ErrInvalidName, "invalid-category"},
	{vocabulary.ErrTooManyNames, "too-many-categories"},
	{vocabulary.ErrInvalidSynonyms, "invalid-synonyms"},
	{vocabulary.ErrInvalidNegatives, "invalid-negatives"},
	{vocabulary.ErrInvalidThresholds, "invalid-thresholds"},
	{vocabulary.ErrInvalidTemplates, "invalid-templates"},
	{vocabulary.ErrInvalidExemplars, "invalid-exemplars"},
}

// problems turns errors into problem+json answers: the one translator.
type problems struct {
	cfg       Config
	log       *slog.Logger
	metrics   *Metrics
	nameError error
}

// toError classifies any error into an *api.Error for the client.
func (p *problems) toError(err error) *api.Error {
	var e *api.Error
	if errors.As(err, &e) {
		return e
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &api.Error{Status: http.StatusRequestEntityTooLarge, Slug: "body-too-large",
			Msg: fmt.Sprintf("request body exceeds %d bytes", mbe.Limit), Err: err}
	}
	var le *apikey.LimitError
	if errors.As(err, &le) {
		msg := "the API key's request rate is used up; retry later"
		if le.Concurrent {
			msg = "the API key's concurrent inferences are all in use; retry later"
		}
		return &api.Error{Status: http.StatusTooManyRequests, Slug: "rate-limited", Msg: msg,
			RetryAfter: max(1, int(math.Ceil(le.RetryAfter.Seconds()))), Err: err}
	}
	var se *apikey.ScopeError
	if errors.As(err, &se) {
		return &api.Error{Status: http.StatusForbidden, Slug: "forbidden",
			Msg: fmt.Sprintf("the API key lacks the scope this route needs (%s)", se.Need), Err: err}
	}
	var ie *vocabulary.InvalidError
	if errors.As(err, &ie) {
		for _, k := range specSlugs {
			if errors.Is(ie.Kind, k.kind) {
				return api.BadRequest(k.slug, ie.Msg, err)
			}
		}
	}
	for _, d := range domainErrors {
		if errors.Is(err, d.err) {
			return &api.Error{Status: d.status, Slug: d.slug, Msg: d.msg, Err: err}
		}
	}
	switch {
	case errors.Is(err, imageio.ErrTooLarge):
		return &api.Error{Status: http.StatusUnprocessableEntity, Slug: "image-too-large",
			Msg: fmt.Sprintf("image dimensions exceed the limits (side ≤ %d px, ≤ %d pixels)",
				p.cfg.MaxImageSide, p.cfg.MaxImagePixels), Err: err}
	case p.nameError != nil && errors.Is(err, p.nameError):
		return &api.Error{Status: http.StatusBadRequest, Slug: "invalid-category",
			Msg: "a category name cannot be encoded by this model's tokenizer", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &api.Error{Status: http.StatusGatewayTimeout, Slug: "timeout",
			Msg: fmt.Sprintf("the request did not finish within %s", p.cfg.RequestTimeout), Err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, detector.ErrCanceled):
		// The client went away; 499 as nginx and ollama do. Nobody reads the body.
		return &api.Error{Status: 499, Slug: "canceled", Msg: "the request was canceled", Err: err}
	}
	return &api.Error{Status: http.StatusInternalServerError, Slug: "internal",
		Msg: "internal error", Err: err}
}

// handle adapts a route that returns its error.
func (p *problems) handle(fn route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			p.write(w, r, err)
		}
	}
}

// recoverer turns a handler panic into a 500 and keeps the process up.
func (p *problems) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				p.write(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// write is the one place errors become responses.
func (p *problems) write(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errWritten) {
		p.log.Info("response write failed", "request_id", w.Header().Get("X-Request-ID"), "method", r.Method, "route", routePattern(r), "cause", err)
		return
	}
	if errors.Is(err, detector.ErrCanceled) && errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err) // our deadline, not the client
	}
	e := p.toError(err)
	level := slog.LevelInfo
	if e.Status >= 500 && e.Status != http.StatusServiceUnavailable {
		level = slog.LevelError
	}
	attrs := []any{"request_id", w.Header().Get("X-Request-ID"), "method", r.Method, "route", routePattern(r),
		"status", e.Status, "problem", e.Slug, "cause", err} // the route pattern: a raw path can hold input
	if name := access.KeyName(r.Context()); name != "" {
		attrs = append(attrs, "key", name) // the key's name, never its token
	}
	p.log.Log(r.Context(), level, "request failed", attrs...)
	p.metrics.rejected(e.Slug)
	if c := challenge(err); c != "" {
		w.Header().Set("WWW-Authenticate", c)
	}
	retryAfter := e.RetryAfter
	if retryAfter == 0 && e.Status == http.StatusServiceUnavailable {
		retryAfter = p.cfg.RetryAfterSeconds
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	writeProblem(w, r, e)
}

func problemOf(r *http.Request, e *api.Error) api.Problem {
	title := http.StatusText(e.Status)
	if e.Status == 499 {
		title = "Client Closed Request"
	}
	return api.Problem{Type: api.ProblemType(e.Slug), Title: title, Status: e.Status,
		Detail: e.Msg, Instance: routePattern(r)}
}

// routePattern is the chi pattern the request matched, or "" when none did.
func routePattern(r *http.Request) string {
	rc := chi.RouteContext(r.Context())
	if rc == nil {
		return ""
	}
	p := rc.RoutePattern()
	if strings.Contains(p, "*") {
		return "" // unmatched, or a catch-all that stands for any path
	}
	return p
}

// writeProblem writes e as problem+json; every problem answer goes through it.
// Its request_id is the one the response carries (observe.Middleware's).
func writeProblem(w http.ResponseWriter, r *http.Request, e *api.Error) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	p := problemOf(r, e)
	p.RequestID = w.Header().Get("X-Request-ID")
	_ = json.NewEncoder(w).Encode(p)
}

// writeJSON writes v as the JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("handlers: encode response: %w", err)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	// A declared length lets a client or a proxy tell a cut answer (its
	// server died while writing) from a whole one.
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, err = w.Write(b)
	if err != nil {
		return errors.Join(errWritten, err)
	}
	return nil
}

// errWritten marks failures after the status line went out; nothing more can be sent.
var errWritten = errors.New("handlers: response already written")
