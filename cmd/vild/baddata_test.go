package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vild/vild/api"
	"github.com/vild/vild/ort"
)

// Damaged files in the data directory do not stop the server (the real
// model over the fixture bundle): a garbage embedding cache is moved aside
// and rebuilt, a vocabulary file that does not parse is set aside and listed
// as unavailable, and the good vocabulary is served.
func TestServeStartsOverDamagedDataFiles(t *testing.T) {
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	cfg := testServeConfig(t)
	cfg.Model.ModelDir = filepath.Join("..", "..", "testdata", "tinybundle")
	cfg.Model.ORTLib = lib
	if m, err := loadModel(context.Background(), cfg.Model); errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	} else if err != nil {
		t.Fatal(err)
	} else {
		m.Close()
	}
	dir := cfg.Model.DataDir
	vocabs := filepath.Join(dir, "vocabularies")
	if err := os.MkdirAll(vocabs, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, c := range map[string]string{
		"textbank.db":                     "this is not a bbolt file, nor any database",
		"vocabularies/broken.json":        `{"name":"broken","categ`,
		"vocabularies/pets.json":          `{"name":"pets","categories":["dog","cat"],"etag":"sha256:x","updated":"2026-01-01T00:00:00Z"}`,
		"vocabularies/somebody-else.json": `{"name":"pets","categories":["dog"],"etag":"sha256:y","updated":"2026-01-01T00:00:00Z"}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := startServe(t, cfg, loadModel)
	base := "http://" + r.addr
	for i := 0; get(t, base+"/readyz") != 200; i++ {
		select {
		case err := <-r.done:
			t.Fatalf("serve stopped: %v", err)
		default:
		}
		if i > 3000 {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get(base + "/v1/vocabularies")
	if err != nil {
		t.Fatal(err)
	}
	var list api.VocabularyList
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Vocabularies) != 1 || list.Vocabularies[0].Name != "pets" || len(list.Unavailable) != 2 {
		t.Fatalf("vocabularies %+v", list)
	}
	// Detection embeds names through the new cache.
	resp, err = http.Post(base+"/v1/detect?vocabulary=pets&score_threshold=0", "image/png", bytes.NewReader(scenePNG(t)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("detect: %d", resp.StatusCode)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "textbank.db.corrupt-*"))
	if _, err := os.Stat(filepath.Join(dir, "textbank.db")); err != nil || len(aside) != 1 {
		t.Fatalf("want a new textbank.db (%v) and the corrupt one moved aside (%v)", err, aside)
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
}
