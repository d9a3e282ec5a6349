package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/vild/vild/api"
	"github.com/vild/vild/client"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/vocabulary"
)

// answer is one scripted response.
type answer struct {
	status     int
	retryAfter string // the header, "" for none
	slug       string // a vild problem body with this slug; "" and status ≥ 300: a proxy's HTML page
}

// script is a server that gives its answers in order, then 200 {} for ever,
// and records each request's method, path and body.
type script struct {
	mu       sync.Mutex
	answers  []answer
	requests []recorded
}

type recorded struct {
	method, path, contentType string
	body                      []byte
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.requests = append(s.requests, recorded{r.Method, r.URL.EscapedPath(), r.Header.Get("Content-Type"), body})
	a := answer{status: http.StatusOK}
	if len(s.answers) > 0 {
		a, s.answers = s.answers[0], s.answers[1:]
	}
	n := len(s.requests)
	s.mu.Unlock()
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	switch {
	case a.status < 300:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		io.WriteString(w, "{}")
	case a.slug != "":
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(a.status)
		fmt.Fprintf(w, `{"type":%q,"title":%q,"status":%d,"detail":"scripted","request_id":"req-%d"}`,
			api.ProblemType(a.slug), http.StatusText(a.status), a.status, n)
	default:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(a.status)
		io.WriteString(w, "<html><body><h1>503 Service Unavailable</h1>No server is available.</body></html>")
	}
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// sleeps records the waits a client asks for, without waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

// scripted starts a script server and a client of it whose waits are recorded.
func scripted(t *testing.T, policy client.RetryPolicy, answers ...answer) (*client.Client, *script, *sleeps) {
	t.Helper()
	s := &script{answers: answers}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	sl := &sleeps{}
	return newClient(t, srv.URL, client.WithRetry(policy), client.WithSleep(sl.sleep)), s, sl
}

var policy = client.RetryPolicy{MaxAttempts: 4, MaxWait: 30 * time.Second, BaseDelay: 100 * time.Millisecond}

func TestRetryAfterSeconds(t *testing.T) {
	c, s, sl := scripted(t, policy,
		answer{503, "3", "queue-full"}, answer{503, "0", "queue-timeout"}, answer{429, "2", "rate-limited"})
	img := scenePNG(t)
	opts := api.DetectOptions{Categories: []string{"mug"}, Thresholds: map[string]float32{"mug": 0.4}}
	if _, err := c.Detect(context.Background(), img, opts); err != nil {
		t.Fatal(err)
	}
	if s.count() != 4 || fmt.Sprint(sl.d) != "[3s 0s 2s]" {
		t.Fatalf("%d attempts, waits %v", s.count(), sl.d)
	}
	// Each attempt sent the whole body again.
	first := s.requests[0]
	if len(first.body) < len(img) || !bytes.Contains(first.body, img) || !bytes.Contains(first.body, []byte(`"thresholds":{"mug":0.4}`)) {
		t.Fatalf("first body (%d bytes) lacks the image or the options", len(first.body))
	}
	for i, r := range s.requests[1:] {
		if !bytes.Equal(r.body, first.body) || r.contentType != first.contentType || r.path != "/v1/detect" {
			t.Fatalf("attempt %d sent %d bytes to %s, the first %d", i+2, len(r.body), r.path, len(first.body))
		}
	}
}

func TestRetryAfterDate(t *testing.T) {
	when := time.Now().Add(5 * time.Second).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	c, s, sl := scripted(t, policy, answer{503, when, "draining"}, answer{503, past, "not-ready"})
	if _, err := c.Models(context.Background()); err != nil {
		t.Fatal(err)
	}
	// An HTTP date has whole seconds: 4 to 5 s from now; one in the past: no wait.
	if s.count() != 3 || len(sl.d) != 2 || sl.d[0] <= 3*time.Second || sl.d[0] > 5*time.Second || sl.d[1] != 0 {
		t.Fatalf("%d attempts, waits %v", s.count(), sl.d)
	}

	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"120": 2 * time.Minute, " 7 ": 7 * time.Second, "0": 0, "-3": 0,
		"Fri, 02 Jan 2026 03:04:15 GMT":      10 * time.Second, // IMF-fixdate
		"Friday, 02-Jan-26 03:04:35 GMT":     30 * time.Second, // RFC 850
		"Fri Jan  2 03:05:05 2026":           time.Minute,      // asctime
		"Fri, 02 Jan 2026 03:00:00 GMT":      0,                // past
		"99999999999999999999999999":         -1,               // not a number it can hold
		"soon":                               -1,
		"":                                   -1,
		"Fri, 02 Jan 2026 03:04:15 GMT+0100": -1,
	} {
		got, ok := client.ParseRetryAfter(v, now)
		if want < 0 && ok || want >= 0 && (!ok || got != want) {
			t.Errorf("Retry-After %q: %v %v, want %v", v, got, ok, want)
		}
	}
}

// Without Retry-After the waits grow from BaseDelay, jittered between half
// and all of BaseDelay·2^n, capped by MaxWait.
func TestBackoffWithoutRetryAfter(t *testing.T) {
	p := client.RetryPolicy{MaxAttempts: 6, MaxWait: 500 * time.Millisecond, BaseDelay: 100 * time.Millisecond}
	for range 20 {
		c, s, sl := scripted(t, p, answer{503, "", "queue-full"}, answer{503, "", "queue-full"},
			answer{503, "", "queue-full"}, answer{503, "", "queue-full"}, answer{503, "", "queue-full"})
		_, err := c.Models(context.Background())
		if err != nil || s.count() != 6 || len(sl.d) != 5 {
			t.Fatalf("%d attempts, waits %v: %v", s.count(), sl.d, err)
		}
		for i, d := range sl.d {
			full := min(100*time.Millisecond<<i, 500*time.Millisecond)
			if d < full/2 || d > full {
				t.Fatalf("wait %d is %v, want %v to %v", i+1, d, full/2, full)
			}
		}
	}
}

func TestAttemptsCap(t *testing.T) {
	busy := answer{503, "1", "queue-full"}
	c, s, sl := scripted(t, policy, busy, busy, busy, busy, busy, busy)
	_, err := c.Models(context.Background())
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 503 || e.Slug() != "queue-full" || e.RequestID != "req-4" || e.RetryAfter != time.Second {
		t.Fatalf("error %v (%+v)", err, e)
	}
	if s.count() != 4 || len(sl.d) != 3 {
		t.Fatalf("%d attempts, %d waits, want 4 and 3", s.count(), len(sl.d))
	}

	s = &script{answers: []answer{busy, busy, busy, busy, busy}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	sl = &sleeps{}
	c = newClient(t, srv.URL, client.WithSleep(sl.sleep)) // no WithRetry: DefaultRetryPolicy()
	if _, err := c.Models(context.Background()); err == nil || s.count() != client.DefaultRetryPolicy().MaxAttempts || s.count() != 4 {
		t.Fatalf("the default policy: %d attempts, %v; want 4", s.count(), err)
	}
	c, s, _ = scripted(t, client.RetryPolicy{MaxAttempts: 1}, busy)
	if _, err := c.Models(context.Background()); err == nil || s.count() != 1 {
		t.Fatalf("MaxAttempts 1: %d attempts, %v", s.count(), err)
	}
}

// A wait longer than MaxWait, or one that ends after the context's
// deadline, is not waited for: the answer is returned at once.
func TestWaitsBeyondLimitsAreNotTaken(t *testing.T) {
	c, s, sl := scripted(t, policy, answer{503, "120", "queue-full"})
	_, err := c.Models(context.Background())
	var e *client.Error
	if !errors.As(err, &e) || e.RetryAfter != 2*time.Minute || s.count() != 1 || len(sl.d) != 0 {
		t.Fatalf("Retry-After 120 > MaxWait: %d attempts, waits %v, %v", s.count(), sl.d, err)
	}

	c, s, sl = scripted(t, policy, answer{503, "10", "queue-full"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Models(ctx)
	if !errors.As(err, &e) || s.count() != 1 || len(sl.d) != 0 {
		t.Fatalf("Retry-After past the deadline: %d attempts, waits %v, %v", s.count(), sl.d, err)
	}
}

// Canceling the context during a wait ends the call at once with the
// context's error, the server's answer still reachable.
func TestCancelDuringWait(t *testing.T) {
	s := &script{answers: []answer{{503, "20", "queue-full"}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := newClient(t, srv.URL) // the real sleep
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Models(ctx)
	took := time.Since(start)
	var e *client.Error
	if !errors.Is(err, context.Canceled) || !errors.As(err, &e) || e.Slug() != "queue-full" {
		t.Fatalf("error %v", err)
	}
	if took < 100*time.Millisecond || took > 2*time.Second || s.count() != 1 {
		t.Fatalf("returned after %v and %d attempts", took, s.count())
	}
}

// What is retried: 503 always for reads and requests that change nothing;
// for writes, only problems that say nothing was done; 429 only with
// Retry-After; nothing else.
func TestWhatIsRetried(t *testing.T) {
	ctx := context.Background()
	img := scenePNG(t)
	spec := vocabulary.Spec{Categories: []string{"mug"}}
	calls := map[string]func(c *client.Client) error{
		"GET /v1/models":  func(c *client.Client) error { _, err := c.Models(ctx); return err },
		"POST /v1/detect": func(c *client.Client) error { _, err := c.Detect(ctx, img, api.DetectOptions{}); return err },
		"POST /v1/detect batch": func(c *client.Client) error {
			_, err := c.DetectBatch(ctx, [][]byte{img}, api.DetectOptions{})
			return err
		},
		"POST /v1/embeddings": func(c *client.Client) error { _, err := c.EmbedTexts(ctx, []string{"mug"}); return err },
		"POST /v1/images/x/detect": func(c *client.Client) error {
			_, err := c.DetectImage(ctx, "x", api.DetectOptions{})
			return err
		},
		"POST /v1/images":     func(c *client.Client) error { _, err := c.CreateImage(ctx, img); return err },
		"PUT vocabulary":      func(c *client.Client) error { _, _, err := c.PutVocabulary(ctx, "k", spec, ""); return err },
		"PUT vocabulary ifm":  func(c *client.Client) error { _, _, err := c.PutVocabulary(ctx, "k", spec, "sha256:1"); return err },
		"DELETE vocabulary":   func(c *client.Client) error { return c.DeleteVocabulary(ctx, "k", "") },
		"DELETE /v1/images/x": func(c *client.Client) error { return c.DeleteImage(ctx, "x") },
	}
	writes := map[string]bool{"POST /v1/images": true, "PUT vocabulary": true, "PUT vocabulary ifm": true,
		"DELETE vocabulary": true, "DELETE /v1/images/x": true}
	for _, c := range []struct {
		a                answer
		reads, writesToo bool // retried for reads; for writes too
	}{
		{answer{503, "1", "queue-full"}, true, true},
		{answer{503, "1", "queue-timeout"}, true, true},
		{answer{503, "1", "draining"}, true, true},
		{answer{503, "1", "not-ready"}, true, true},
		{answer{503, "1", "storage-read-only"}, true, true},
		{answer{429, "1", "rate-limited"}, true, true},
		{answer{503, "1", "store-unavailable"}, true, false},
		{answer{503, "1", ""}, true, false}, // a proxy's page
		{answer{503, "", ""}, true, false},
		{answer{429, "", "rate-limited"}, false, false}, // no word on when
		{answer{500, "1", "internal"}, false, false},
		{answer{504, "1", "timeout"}, false, false},
		{answer{502, "1", ""}, false, false},
		{answer{404, "", "not-found"}, false, false},
	} {
		for name, call := range calls {
			cl, s, _ := scripted(t, policy, c.a)
			err := call(cl)
			want := c.reads
			if writes[name] {
				want = c.writesToo
			}
			if retried := s.count() == 2; retried != want || retried != (err == nil) {
				t.Errorf("%s after %d %q (Retry-After %q): %d attempts, %v; want retried %v",
					name, c.a.status, c.a.slug, c.a.retryAfter, s.count(), err, want)
			}
			if err != nil {
				var e *client.Error
				if !errors.As(err, &e) || e.Status != c.a.status || e.Slug() != c.a.slug {
					t.Errorf("%s: error %v", name, err)
				}
			}
		}
	}
}

// A proxy's answer that is not problem+json still comes back as an *Error
// with the status and the start of the page.
func TestErrorFromAProxy(t *testing.T) {
	c, _, _ := scripted(t, client.RetryPolicy{MaxAttempts: 1}, answer{502, "", ""})
	_, err := c.Models(context.Background())
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 502 || e.Slug() != "" || e.Title != "Bad Gateway" ||
		!bytes.Contains([]byte(e.Body), []byte("No server is available")) || e.Error() != "vild: GET /v1/models: 502 Bad Gateway: "+e.Body {
		t.Fatalf("%v: %+v", err, e)
	}
}

// Against the real server: a detection refused by the admission queue
// (queue-timeout, Retry-After: 1) is tried again after a second and gets
// through once the worker is free.
func TestRetryAgainstTheAdmissionQueue(t *testing.T) {
	det := &handlerstest.ColorDetector{Gate: make(chan struct{}), Started: make(chan struct{}, 4)}
	srv := colourServer(t, func(d *handlers.Deps) {
		d.Detector = det
		d.Config.Workers, d.Config.MaxQueueWait = 1, 50*time.Millisecond
	})
	c := newClient(t, srv.URL)
	ctx := context.Background()
	img := scenePNG(t)
	first := make(chan error, 1)
	go func() {
		_, err := c.Detect(ctx, img, api.DetectOptions{Categories: []string{"red", "blue"}})
		first <- err
	}()
	<-det.Started // the first holds the only worker
	second := make(chan error, 1)
	start := time.Now()
	go func() {
		res, err := c.Detect(ctx, img, api.DetectOptions{Categories: []string{"red", "blue"}})
		if err == nil && len(res.Detections) != 2 {
			err = fmt.Errorf("%d detections", len(res.Detections))
		}
		second <- err
	}()
	time.Sleep(300 * time.Millisecond) // the second was refused (after 50 ms) and waits 1 s
	det.Gate <- struct{}{}             // the first finishes
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	<-det.Started
	det.Gate <- struct{}{} // the second's retry runs
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("the second answered after %v: it did not wait out Retry-After: 1", took)
	}
	if n := det.RegionsCalls.Load(); n != 2 {
		t.Fatalf("the detector ran %d times, want 2", n)
	}
}
