// Package client is a typed Go client of vild's HTTP API (/v1): detection
// (one image as a multipart upload, or a batch), registered images and their
// re-scoring, vocabularies with ETags, text embeddings, the served model, and
// the health probes. Requests and answers are the wire types of package api;
// every call takes a context.
//
// A failed call returns an *Error holding the server's problem+json answer
// (status, type and slug, detail, request ID); errors.As finds it. Answers
// 503 and 429 (with Retry-After) are retried a bounded number of times,
// waiting as Retry-After says (seconds or an HTTP date) or with jittered
// backoff when it says nothing. A request that changes the server's state
// (PUT and DELETE of a vocabulary, registering or deleting an image) is
// retried only when the answer says nothing was done: see RetryPolicy and docs/client.md.
//
// Usage:
//
//	c, err := client.New("http://127.0.0.1:8080", client.WithAPIKey(os.Getenv("VILD_API_KEY")))
//	if err != nil {
//		return err
//	}
//	img, err := os.ReadFile("scene.png")
//	if err != nil {
//		return err
//	}
//	res, err := c.Detect(ctx, img, api.DetectOptions{Categories: []string{"mug", "red umbrella"}})
//	if err != nil {
//		var pe *client.Error
//		if errors.As(err, &pe) { // the server's problem+json answer
//			log.Printf("%d %s: %s (request %s)", pe.Status, pe.Slug(), pe.Detail, pe.RequestID)
//		}
//		return err
//	}
//	for _, d := range res.Detections {
//		fmt.Println(d.Label, d.Score, d.Box)
//	}
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// module is the Go module the client belongs to (its version goes into the
// User-Agent).
const module = "github.com/vild/vild"

// Client calls one vild server. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	http    *http.Client
	key     string
	product string // the caller's product, before the client's own in User-Agent
	retry   RetryPolicy
	sleep   func(ctx context.Context, d time.Duration) error
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey sends key as "Authorization: Bearer <key>" on every request (a
// token made by `vild keys create`; needed when the server runs with --auth
// keys). Empty: no key.
func WithAPIKey(key string) Option { return func(c *Client) { c.key = key } }

// WithHTTPClient makes requests with hc (its transport, TLS settings and
// timeout) instead of a client with no overall timeout (contexts bound calls).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithUserAgent puts product (such as "vild-cli/1.2.0") in front of the
// client's own "vild-go-client/<version>" in the User-Agent header.
func WithUserAgent(product string) Option { return func(c *Client) { c.product = product } }

// WithRetry replaces DefaultRetryPolicy(); RetryPolicy{MaxAttempts: 1} turns
// retries off.
func WithRetry(p RetryPolicy) Option { return func(c *Client) { c.retry = p } }

// New returns a client of the server at baseURL ("http://127.0.0.1:8080"; a
// path prefix, as behind a proxy, is kept).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http:// or https:// and a host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q: no query or fragment", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	c := &Client{base: u, http: &http.Client{}, retry: DefaultRetryPolicy(), sleep: sleepCtx}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if err := c.retry.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// Version is the client's version: the module version it was built from,
// "(devel)" in a build of the repository itself.
func Version() string { return version() }

var version = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	if info.Main.Path == module {
		return info.Main.Version
	}
	for _, d := range info.Deps {
		if d.Path == module {
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "(devel)"
})

// UserAgent is the User-Agent the client sends.
func (c *Client) UserAgent() string {
	ua := "vild-go-client/" + Version()
	if c.product != "" {
		ua = c.product + " " + ua
	}
	return ua
}

// call is one API call: what to send and how to treat failures.
type call struct {
	method, path string // path below the base URL, escaped
	header       http.Header
	body         []byte // replayed on every attempt; nil: none
	contentType  string
	accept       string
	// changesState marks a request retried only when the server's answer
	// says it did nothing (RetryPolicy).
	changesState bool
	noRetry      bool // probes: report the state, do not wait it out
}

// do runs c, retrying as the policy allows, and returns the successful
// response (status < 300, or 304); its body is the caller's to close.
func (c *Client) do(ctx context.Context, cl call) (*http.Response, error) {
	if ctx == nil {
		return nil, errors.New("client: nil context")
	}
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, cl)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 300 || resp.StatusCode == http.StatusNotModified {
			return resp, nil
		}
		perr := readError(cl.method, cl.path, resp, time.Now())
		wait, ok := c.retry.next(attempt, cl, perr)
		if !ok {
			return nil, perr
		}
		if dl, has := ctx.Deadline(); has && time.Until(dl) < wait {
			return nil, perr // the answer would come after the caller stopped waiting
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("client: %s %s: %w while waiting to retry after %w", cl.method, cl.path, err, perr)
		}
	}
}

// send makes one attempt.
func (c *Client) send(ctx context.Context, cl call) (*http.Response, error) {
	target := c.base.String() + cl.path // cl.path is escaped already
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", cl.method, cl.path, err)
	}
	for k, vs := range cl.header {
		req.Header[k] = vs
	}
	if cl.contentType != "" {
		req.Header.Set("Content-Type", cl.contentType)
	}
	accept := cl.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept+", application/problem+json")
	req.Header.Set("User-Agent", c.UserAgent())
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", cl.method, cl.path, err)
	}
	return resp, nil
}

// maxAnswerBytes bounds a JSON answer read into memory: far above the largest
// the server writes (300 detections per image, 8 images; 1,000 embeddings).
const maxAnswerBytes = 64 << 20

// decode reads resp's JSON body into v and closes it.
func decode(resp *http.Response, cl call, v any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return fmt.Errorf("client: %s %s: reading the answer: %w", cl.method, cl.path, err)
	}
	if len(b) > maxAnswerBytes {
		return fmt.Errorf("client: %s %s: the answer exceeds %d bytes", cl.method, cl.path, maxAnswerBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("client: %s %s: decoding the answer (%s): %w", cl.method, cl.path, resp.Header.Get("Content-Type"), err)
	}
	return nil
}

// drain discards and closes resp's body so its connection is reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// jsonCall is a call with v as its JSON body.
func jsonCall(method, path string, v any) (call, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return call{}, fmt.Errorf("client: %s %s: encoding the request: %w", method, path, err)
	}
	return call{method: method, path: path, body: b, contentType: "application/json"}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
