package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/mask"
	"github.com/vild/vild/ort"
)

// vild serve on the embedded model answers masks over HTTP: RLE masks on
// /v1/detect (a raw image, the option in the query string) that decode to
// the image's size, polygons on a registered image's re-scoring, and an
// annotated PNG with masks; GET /v1/models says masks: true; timings_ms
// has the masks' share.
func TestServeMasks(t *testing.T) {
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	cfg := testServeConfig(t)
	cfg.Model.ORTLib = lib // the embedded default bundle
	if m, err := loadModel(context.Background(), cfg.Model); errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	} else if err != nil {
		t.Fatal(err)
	} else {
		m.Close()
	}
	png, err := os.ReadFile(filepath.Join("..", "..", "models", "default", "golden", "exact", "input.png"))
	if err != nil {
		t.Skip("no golden scene in models/default")
	}
	r := startServe(t, cfg, loadModel)
	base := "http://" + r.addr
	waitStatus(t, base+"/readyz", 200, 60*time.Second)

	if _, body := do(t, "GET", base+"/v1/models", "", nil); !containsJSON(body, `"masks":true`) {
		t.Fatalf("models: %s", body)
	}
	resp, body := do(t, "POST", base+"/v1/detect?max_detections=5&masks=rle", "image/png", png)
	var out api.DetectResponse
	if err := json.Unmarshal(body, &out); resp.StatusCode != 200 || err != nil || len(out.Detections) == 0 ||
		out.TimingsMS == nil || out.TimingsMS.Masks <= 0 {
		t.Fatalf("detect: %d %s", resp.StatusCode, body)
	}
	for i, d := range out.Detections {
		if d.Mask == nil {
			t.Fatalf("detection %d has no mask", i)
		}
		m, err := mask.DecodeRLE(*d.Mask)
		if err != nil || m.Width != out.Image.Width || m.Height != out.Image.Height || m.Area() == 0 {
			t.Fatalf("detection %d: %v, %dx%d, area %d", i, err, m.Width, m.Height, m.Area())
		}
	}
	resp, body = do(t, "POST", base+"/v1/images", "image/png", png)
	var s api.ImageSession
	if err := json.Unmarshal(body, &s); resp.StatusCode != 201 || err != nil {
		t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", base+"/v1/images/"+s.ID+"/detect", "application/json", []byte(`{"masks":"polygon","max_detections":5}`))
	out = api.DetectResponse{}
	if err := json.Unmarshal(body, &out); resp.StatusCode != 200 || err != nil || len(out.Detections) == 0 {
		t.Fatalf("re-score: %d %s", resp.StatusCode, body)
	}
	for i, d := range out.Detections {
		if d.Mask != nil || len(d.Polygons) == 0 {
			t.Fatalf("re-scored detection %d: %+v", i, d)
		}
	}
	resp, body = do(t, "POST", base+"/v1/detect?max_detections=5&masks=rle", "image/png", png, "Accept", "image/png")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" || len(body) == 0 {
		t.Fatalf("annotated: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// containsJSON reports whether body, compacted, holds s.
func containsJSON(body []byte, s string) bool {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	compact, _ := json.Marshal(v)
	return strings.Contains(string(compact), s)
}

// vild detect --masks on the embedded model: COCO results carry each
// detection's RLE as "segmentation", JSON lines its polygons; a model
// without a mask head refuses the flag; an unknown format is an error.
func TestDetectMasksFlag(t *testing.T) {
	if _, err := parseDetectConfig([]string{"a.png", "--masks", "square"}, env(), io.Discard); err == nil {
		t.Fatal("--masks square accepted")
	}
	m := embeddedModelOnORT(t)
	cfg := testServeConfig(t) // for the model without a mask head, below
	cfg.Model.ORTLib = ort.DefaultLibraryPath()
	png := filepath.Join("..", "..", "models", "default", "golden", "exact", "input.png")
	out := filepath.Join(t.TempDir(), "r.json")
	if _, stderr, err := runDetectWith(context.Background(), t, m, png, "--masks", "rle", "--out", out, "--max-detections", "5"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res []struct {
		Seg struct {
			Size   [2]int `json:"size"`
			Counts string `json:"counts"`
		} `json:"segmentation"`
	}
	if err := json.Unmarshal(raw, &res); err != nil || len(res) == 0 {
		t.Fatalf("results %s: %v", raw, err)
	}
	for i, r := range res {
		if _, err := mask.DecompressCounts(r.Seg.Counts); err != nil || r.Seg.Size != [2]int{192, 384} || r.Seg.Counts == "" {
			t.Fatalf("result %d: segmentation %+v %v", i, r.Seg, err)
		}
	}
	stdout, _, err := runDetectWith(context.Background(), t, m, png, "--masks", "polygon", "--max-detections", "5")
	if err != nil || !strings.Contains(stdout, `"polygons":[[`) || strings.Contains(stdout, `"mask":`) {
		t.Fatalf("polygons: %v %s", err, stdout)
	}
	cfg.Model.ModelDir = filepath.Join("..", "..", "testdata", "tinybundle")
	cfg.Model.DataDir = t.TempDir() // its own text cache
	tiny, err := loadModel(context.Background(), cfg.Model)
	if err != nil {
		t.Fatal(err)
	}
	defer tiny.Close()
	if _, _, err := runDetectWith(context.Background(), t, tiny, png, "--masks", "rle", "--categories", "cat"); !errors.Is(err, detector.ErrMasksUnsupported) {
		t.Fatalf("a model without a mask head: err = %v", err)
	}
}

// vild detect --scores on the embedded model: with stable scores a name's
// detections keep their scores when other names are added; with softmax
// they fall; an unknown mode is an error.
func TestDetectScoresFlag(t *testing.T) {
	if _, err := parseDetectConfig([]string{"a.png", "--scores", "calibrated"}, env(), io.Discard); err == nil {
		t.Fatal("--scores calibrated accepted")
	}
	m := embeddedModelOnORT(t)
	if m.Info.Scores != string(detector.ScoresStable) || m.Info.Defaults.Scores != detector.ScoresStable {
		t.Fatalf("the embedded model's default scores: %q", m.Info.Scores)
	}
	png := filepath.Join("..", "..", "models", "default", "golden", "exact", "input.png")
	violin := func(mode, categories string) float64 {
		t.Helper()
		stdout, stderr, err := runDetectWith(context.Background(), t, m, png, "--scores", mode, "--categories", categories,
			"--score-threshold", "0.01", "--labels-per-box", "20")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		var res struct {
			Detections []struct {
				Label string
				Score float64
			}
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("%v: %s", err, stdout)
		}
		best := 0.0
		for _, d := range res.Detections {
			if d.Label == "violin" {
				best = max(best, d.Score)
			}
		}
		if best == 0 {
			t.Fatalf("%s, %s: no violin in %s", mode, categories, stdout)
		}
		return best
	}
	others := "violin,guitar,cello,banjo,harp,drum,trumpet"
	if alone, among := violin("stable", "violin"), violin("stable", others); math.Abs(alone-among) > 1e-5 {
		t.Fatalf("stable: violin %v alone, %v among others", alone, among)
	}
	if alone, among := violin("softmax", "violin"), violin("softmax", others); !(among < alone-1e-4) {
		t.Fatalf("softmax: violin %v alone, %v among others", alone, among)
	}
}

// embeddedModelOnORT loads the embedded model on ONNX Runtime, closed when the
// test ends; it skips without the runtime library or cgo.
func embeddedModelOnORT(t *testing.T) *model {
	t.Helper()
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	cfg := testServeConfig(t)
	cfg.Model.ORTLib = lib
	m, err := loadModel(context.Background(), cfg.Model)
	if errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	} else if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
