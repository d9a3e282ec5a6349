package client

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vild/vild/api"
)

// problemPrefix is the type URI prefix of vild's problems (api.ProblemType).
const problemPrefix = "urn:vild:problem:"

// Error is an answer other than success: the server's RFC 9457 problem
// (api.Problem: type, title, status, detail, instance, request_id) with the
// response's status and Retry-After. An answer that is not problem+json (a
// proxy's error page) gives an Error with Status and Title from the status
// line, no Type, and the first bytes of its body in Body.
type Error struct {
	api.Problem
	// Method and Path are the request's (Path below the base URL).
	Method, Path string
	// RetryAfter is the wait the answer's Retry-After header asked for (0:
	// none, or a date in the past).
	RetryAfter time.Duration
	// Body is the start of an answer that was not problem+json (up to 512
	// bytes); empty for a problem.
	Body string

	hasRetryAfter bool // the answer carried a Retry-After header it could read
}

// Slug is the problem type's last part ("queue-full" for
// urn:vild:problem:queue-full); "" when the answer was not a vild problem.
func (e *Error) Slug() string {
	if s, ok := strings.CutPrefix(e.Type, problemPrefix); ok {
		return s
	}
	return ""
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vild: %s %s: %d", e.Method, e.Path, e.Status)
	if s := e.Slug(); s != "" {
		b.WriteString(" " + s)
	} else if e.Title != "" {
		b.WriteString(" " + e.Title)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	} else if e.Body != "" {
		b.WriteString(": " + e.Body)
	}
	if e.RequestID != "" {
		b.WriteString(" (request " + e.RequestID + ")")
	}
	return b.String()
}

// maxProblemBytes bounds the problem body read; vild's are a few hundred bytes.
const maxProblemBytes = 64 << 10

// readError turns a failed response into an *Error and closes its body.
func readError(method, path string, resp *http.Response, now time.Time) *Error {
	defer resp.Body.Close()
	e := &Error{Method: method, Path: path}
	e.RetryAfter, e.hasRetryAfter = retryAfter(resp.Header.Get("Retry-After"), now)
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblemBytes))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		var p api.Problem
		if json.Unmarshal(b, &p) == nil && p.Type != "" {
			e.Problem = p
		}
	}
	if e.Type == "" {
		e.Title = http.StatusText(resp.StatusCode)
		e.Body = strings.TrimSpace(string(b[:min(len(b), 512)]))
	}
	e.Status = resp.StatusCode // the status line, whatever the body says
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Request-ID")
	}
	return e
}

// retryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110, 10.2.3); ok is false when v is neither. A date in the past, or
// a negative number, is a wait of 0.
func retryAfter(v string, now time.Time) (wait time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		const most = int64(365 * 24 * time.Hour / time.Second) // no overflow
		return time.Duration(min(max(n, 0), most)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
