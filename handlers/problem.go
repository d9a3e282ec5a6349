package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/detector"
)

// Problem is an RFC 9457 problem details body. Detail is a safe message written
// for the client: it never echoes input or carries a stack trace.
type Problem struct {
	Type   string `json:"type" example:"urn:vild:problem:body-too-large"`
	Title  string `json:"title" example:"Request Entity Too Large"`
	Status int    `json:"status" example:"413"`
	Detail string `json:"detail,omitempty" example:"request body exceeds 20971520 bytes"`
	// Instance is the route the request matched (a pattern such as /v1/images/{id}/detect, never the raw path: input is not echoed).
	Instance string `json:"instance,omitempty" example:"/v1/detect"`
}

// Error is an error with an HTTP status, a problem type slug and a message that
// is safe to show the client. Err, the cause, goes to the log only.
type Error struct {
	Status     int
	Slug       string
	Msg        string
	Err        error
	RetryAfter int // seconds; set on 503s
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Slug, e.Msg, e.Err)
	}
	return e.Slug + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(status int, slug, format string, args ...any) *Error {
	return &Error{Status: status, Slug: slug, Msg: fmt.Sprintf(format, args...)}
}

// badRequest is a 400 with a client-safe message and the cause for the log.
func badRequest(slug, msg string, cause error) *Error {
	return &Error{Status: http.StatusBadRequest, Slug: slug, Msg: msg, Err: cause}
}

// Sentinel errors of the HTTP layer.
var (
	errQueueFull    = &Error{Status: http.StatusServiceUnavailable, Slug: "queue-full", Msg: "the server is busy: the request queue is full; retry later"}
	errQueueTimeout = &Error{Status: http.StatusServiceUnavailable, Slug: "queue-timeout", Msg: "the server is busy: no worker became free in time; retry later"}
	errDraining     = &Error{Status: http.StatusServiceUnavailable, Slug: "draining", Msg: "the server is shutting down"}
)

// DecodeErrors maps the image decoder's sentinel errors to problems. The
// command wires the image package's sentinels in; see Deps.DecodeErrors.
type DecodeErrors struct {
	Unsupported error // format not in the allowlist → 415
	TooLarge    error // dimensions over the limits → 422
	Corrupt     error // truncated or malformed data, or a decoder panic → 400
}

// toError classifies any error into an *Error for the client.
func (h *api) toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &Error{Status: http.StatusRequestEntityTooLarge, Slug: "body-too-large",
			Msg: fmt.Sprintf("request body exceeds %d bytes", mbe.Limit), Err: err}
	}
	de := h.deps.DecodeErrors
	switch {
	case de.Unsupported != nil && errors.Is(err, de.Unsupported):
		return &Error{Status: http.StatusUnsupportedMediaType, Slug: "unsupported-image",
			Msg: "unsupported image format: send JPEG, PNG, GIF or WebP", Err: err}
	case de.TooLarge != nil && errors.Is(err, de.TooLarge):
		return &Error{Status: http.StatusUnprocessableEntity, Slug: "image-too-large",
			Msg: fmt.Sprintf("image dimensions exceed the limits (side ≤ %d px, ≤ %d pixels)",
				h.cfg.MaxImageSide, h.cfg.MaxImagePixels), Err: err}
	case de.Corrupt != nil && errors.Is(err, de.Corrupt):
		return &Error{Status: http.StatusBadRequest, Slug: "corrupt-image",
			Msg: "the image could not be decoded", Err: err}
	case h.deps.NameError != nil && errors.Is(err, h.deps.NameError):
		return &Error{Status: http.StatusBadRequest, Slug: "invalid-category",
			Msg: "a category name cannot be encoded by this model's tokenizer", Err: err}
	case errors.Is(err, detector.ErrEmptyVocabulary):
		return &Error{Status: http.StatusUnprocessableEntity, Slug: "empty-vocabulary",
			Msg: "the vocabulary has no categories", Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusGatewayTimeout, Slug: "timeout",
			Msg: fmt.Sprintf("the request did not finish within %s", h.cfg.RequestTimeout), Err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, detector.ErrCanceled):
		// The client went away; 499 as nginx and ollama do. Nobody reads the body.
		return &Error{Status: 499, Slug: "canceled", Msg: "the request was canceled", Err: err}
	}
	return &Error{Status: http.StatusInternalServerError, Slug: "internal",
		Msg: "internal error", Err: err}
}

// writeError is the one place errors become responses.
func (h *api) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errWritten) {
		h.log.Info("response write failed", "method", r.Method, "path", r.URL.Path, "cause", err)
		return
	}
	if errors.Is(err, detector.ErrCanceled) && errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err) // our deadline, not the client
	}
	e := h.toError(err)
	level := slog.LevelInfo
	if e.Status >= 500 && e.Status != http.StatusServiceUnavailable {
		level = slog.LevelError
	}
	h.log.Log(r.Context(), level, "request failed",
		"method", r.Method, "path", r.URL.Path, "status", e.Status, "problem", e.Slug, "cause", err)
	h.metrics.rejected(e.Slug)
	if e.RetryAfter == 0 && e.Status == http.StatusServiceUnavailable {
		e.RetryAfter = h.cfg.RetryAfterSeconds
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeProblem(w, r, e)
}

func problemOf(r *http.Request, e *Error) Problem {
	title := http.StatusText(e.Status)
	if e.Status == 499 {
		title = "Client Closed Request"
	}
	return Problem{Type: "urn:vild:problem:" + e.Slug, Title: title, Status: e.Status,
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

func writeProblem(w http.ResponseWriter, r *http.Request, e *Error) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(problemOf(r, e))
}
