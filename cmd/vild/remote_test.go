package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vild/vild/api"
	"github.com/vild/vild/client"
	"github.com/vild/vild/handlers/handlerstest"
)

// serveColours starts `vild serve` on the colour detector and waits until it
// is ready; it returns the server's URL.
func serveColours(t *testing.T, det *handlerstest.ColorDetector) string {
	t.Helper()
	r := startServe(t, testServeConfig(t), colourLoader(det))
	url := "http://" + r.addr
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Readyz(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the server did not become ready in 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return url
}

// Through a server, `vild detect` writes the same COCO files as with the
// same model in this process.
func TestDetectThroughServerEqualsInProcess(t *testing.T) {
	_, images := writeColourSet(t)
	dir := t.TempDir()
	local, remote := filepath.Join(dir, "local.json"), filepath.Join(dir, "remote.json")
	args := []string{images, "--categories", "red,blue,green,yellow", "--labels-per-box", "20", "--workers", "3", "--progress=false"}
	if _, stderr, err := runDetectWith(context.Background(), t, colorModel(&handlerstest.ColorDetector{Extra: 2}), append(args, "--out", local)...); err != nil {
		t.Fatal(err, stderr)
	}
	url := serveColours(t, &handlerstest.ColorDetector{Extra: 2})
	var stdout bytes.Buffer
	if err := runDetect(context.Background(), append(args, "--out", remote, "--server", url), &stdout); err != nil {
		t.Fatal(err)
	}
	if a, b := readFile(t, local), readFile(t, remote); a != b || len(a) < 100 {
		t.Errorf("results through the server differ from the in-process ones:\n%s\n%s", b, a)
	}
	var lds, rds struct {
		Images, Categories, Annotations any
	}
	readJSON(t, datasetPath(local), &lds)
	readJSON(t, datasetPath(remote), &rds)
	if !equalJSON(t, lds, rds) {
		t.Errorf("datasets differ")
	}
	// JSON lines on stdout carry the server's model and vocabulary digest
	stdout.Reset()
	one := filepath.Join(images, mustFirst(t, images))
	if err := runDetect(context.Background(), []string{one, "--categories", "red,blue", "--server", url}, &stdout); err != nil {
		t.Fatal(err)
	}
	line := stdout.String()
	if !strings.Contains(line, `"model":"colors@0"`) || !strings.Contains(line, `"vocabulary_digest":"sha256:`) || !strings.Contains(line, `"label":"red"`) {
		t.Errorf("stdout line %s", line)
	}
}

func TestDetectServerErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"a.png", "--api-key", "vild_x"}, "--api-key goes with --server"},
		{[]string{"a.png", "--server", "http://127.0.0.1:1", "--model", "dir"}, "--model choose a model in this process"},
	} {
		if _, err := parseDetectConfig(c.args, env(), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	// a server that is not there fails before any image is read
	img := filepath.Join(t.TempDir(), "a.png")
	if err := os.WriteFile(img, scenePNG(t), 0o644); err != nil {
		t.Fatal(err)
	}
	err := runDetect(context.Background(), []string{img, "--server", "http://127.0.0.1:1"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:1") {
		t.Errorf("unreachable server: %v", err)
	}
	// names the server refuses are refused before the run starts
	url := serveColours(t, &handlerstest.ColorDetector{})
	err = runDetect(context.Background(), []string{img, "--server", url, "--categories", strings.Repeat("x", 200)}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "422") && !strings.Contains(err.Error(), "400") {
		t.Errorf("a name the server refuses: %v", err)
	}
}

func mustFirst(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil || len(es) == 0 {
		t.Fatal(err)
	}
	return es[0].Name()
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return bytes.Equal(x, y)
}

// A server that changes its model during a run (a rolling upgrade behind a
// load balancer) stops the run: no image is written as detected by a model
// the run did not start with. The server here is a stand-in that answers
// with the first model for the first three detections (the probe and two
// images) and the next one after.
func TestDetectThroughServerStopsWhenTheModelChanges(t *testing.T) {
	_, images := writeColourSet(t)
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/models" {
			json.NewEncoder(w).Encode(api.ModelList{Models: []api.Model{{ID: "m@1"}}})
			return
		}
		mu.Lock()
		calls++
		model := "m@1"
		if calls > 3 {
			model = "m@2"
		}
		mu.Unlock()
		json.NewEncoder(w).Encode(api.DetectResponse{Model: model, VocabularyDigest: "sha256:v",
			Image: &api.ImageSize{Width: 10, Height: 10}})
	}))
	defer srv.Close()
	out := filepath.Join(t.TempDir(), "r.json")
	err := runDetect(context.Background(), []string{images, "--categories", "red", "--server", srv.URL, "--workers", "1",
		"--progress=false", "--out", out}, io.Discard)
	if !errors.Is(err, errRunChanged) || !strings.Contains(err.Error(), "m@2") {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("results were written for a run whose model changed")
	}
	journal := readFile(t, out+".journal")
	if n := strings.Count(journal, `"file_name"`); n != 2 {
		t.Errorf("the journal holds %d finished images, want the 2 detected by m@1:\n%s", n, journal)
	}
	if strings.Contains(journal, "m@2") {
		t.Error("the journal names the second model")
	}
}
