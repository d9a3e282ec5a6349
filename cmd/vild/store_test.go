package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vild/vild/api"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/internal/services"
	"github.com/vild/vild/vocabulary"
)

func TestStoreFlag(t *testing.T) {
	c, err := parseServeConfig([]string{"--data-dir", "/d"}, env(), io.Discard)
	if err != nil || c.Store != "file:///d" || c.Model.DataDir != "/d" {
		t.Fatalf("default store %q, data dir %q, %v", c.Store, c.Model.DataDir, err)
	}
	c, err = parseServeConfig(nil, env("VILD_STORE", "file:///srv/vild"), io.Discard)
	if err != nil || c.Model.DataDir != "/srv/vild" {
		t.Fatalf("file store: data dir %q, %v", c.Model.DataDir, err)
	}
	if c, err = parseServeConfig([]string{"--store", "rediss://u@redis:6380/2"}, env(), io.Discard); err != nil || c.Store != "rediss://u@redis:6380/2" {
		t.Fatalf("redis store: %q %v", c.Store, err)
	}
	for _, bad := range []string{"ftp://x", "file://", "::"} {
		if _, err := parseServeConfig([]string{"--store", bad}, env(), io.Discard); err == nil {
			t.Errorf("--store %q accepted", bad)
		}
	}
}

// do sends a request and returns the response and its body.
func do(t *testing.T, method, url, contentType string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := services.Send(method, url, contentType, body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// waitStatus polls url until it answers want.
func waitStatus(t *testing.T, url string, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for get(t, url) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within %s", url, want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two servers on one Redis share vocabularies and image sessions; Redis down
// makes them unready and refuse vocabulary writes with 503, while detection
// with inline categories goes on; Redis back, both recover without a restart.
func TestServeSharedRedisStore(t *testing.T) {
	r := services.StartRedis(t)
	var urls []string
	for range 2 {
		cfg := testServeConfig(t)
		cfg.Store = r.URL()
		srv := startServe(t, cfg, func(context.Context, modelConfig) (*model, error) {
			return colorModel(&handlerstest.ColorDetector{}), nil
		})
		urls = append(urls, "http://"+srv.addr)
		waitStatus(t, urls[len(urls)-1]+"/readyz", 200, 10*time.Second)
	}
	a, b := urls[0], urls[1]

	resp, body := do(t, "PUT", a+"/v1/vocabularies/shared", "application/json", []byte(`{"categories":["red","blue"]}`))
	if resp.StatusCode != 201 {
		t.Fatalf("PUT through the first: %d %s", resp.StatusCode, body)
	}
	etag := resp.Header.Get("ETag")
	resp, body = do(t, "GET", b+"/v1/vocabularies/shared", "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != etag {
		t.Fatalf("GET through the second: %d %q (want ETag %q) %s", resp.StatusCode, resp.Header.Get("ETag"), etag, body)
	}
	resp, body = do(t, "POST", b+"/v1/detect?vocabulary=shared", "image/png", scenePNG(t))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"label":"red"`) {
		t.Fatalf("detect by name through the second: %d %s", resp.StatusCode, body)
	}

	resp, body = do(t, "POST", a+"/v1/images", "image/png", scenePNG(t))
	var sess api.ImageSession
	if resp.StatusCode != 201 || json.Unmarshal(body, &sess) != nil {
		t.Fatalf("register through the first: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", b+"/v1/images/"+sess.ID+"/detect", "application/json", []byte(`{"categories":["red"]}`))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"label":"red"`) {
		t.Fatalf("re-score through the second: %d %s", resp.StatusCode, body)
	}

	r.Kill()
	for _, u := range urls {
		resp, body := do(t, "GET", u+"/readyz", "", nil)
		if resp.StatusCode != 503 || !strings.Contains(string(body), "shared store") {
			t.Fatalf("readyz with Redis down: %d %s", resp.StatusCode, body)
		}
	}
	resp, body = do(t, "PUT", a+"/v1/vocabularies/other", "application/json", []byte(`{"categories":["red"]}`))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "store-unavailable") {
		t.Fatalf("PUT with Redis down: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	resp, body = do(t, "POST", a+"/v1/detect?categories=red", "image/png", scenePNG(t))
	if resp.StatusCode != 200 {
		t.Fatalf("inline detection with Redis down: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", b+"/v1/detect?vocabulary=shared", "image/png", scenePNG(t))
	if resp.StatusCode != 200 {
		t.Fatalf("detection by a vocabulary this replica read, Redis down: %d %s", resp.StatusCode, body)
	}

	r.Restart()
	for _, u := range urls {
		waitStatus(t, u+"/readyz", 200, 10*time.Second)
	}
	resp, body = do(t, "GET", a+"/v1/vocabularies/shared", "", nil)
	var e vocabulary.Entry
	if resp.StatusCode != 200 || json.Unmarshal(body, &e) != nil || `"`+e.ETag+`"` != etag {
		t.Fatalf("after Redis came back: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", a+"/v1/vocabularies/other", "", nil); resp.StatusCode != 404 {
		t.Fatalf("the refused PUT left a vocabulary: %d", resp.StatusCode)
	}
}
