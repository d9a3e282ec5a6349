package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/eval"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/ort"
)

// evalScene is one image of a generated COCO set: coloured rectangles on white.
type evalScene struct {
	w, h    int
	objects []evalObject
}

type evalObject struct {
	category   string
	x, y, w, h int
	drawn      bool // false: annotated but not in the picture (a miss for any detector)
}

var evalColours = map[string]color.RGBA{
	"red": {255, 0, 0, 255}, "blue": {0, 0, 255, 255}, "green": {0, 255, 0, 255},
}

// writeEvalSet writes DIR/images/*.png and DIR/annotations.json; categories
// are (name, split) pairs in file order.
func writeEvalSet(t *testing.T, categories [][2]string, scenes []evalScene) (ann, images string) {
	t.Helper()
	dir := t.TempDir()
	images = filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	type cat struct {
		ID    int    `json:"id"`
		Name  string `json:"name"`
		Split string `json:"split"`
	}
	doc := struct {
		Images      []map[string]any `json:"images"`
		Annotations []map[string]any `json:"annotations"`
		Categories  []cat            `json:"categories"`
	}{Images: []map[string]any{}, Annotations: []map[string]any{}}
	ids := map[string]int{}
	for i, c := range categories {
		ids[c[0]] = 100 + i
		doc.Categories = append(doc.Categories, cat{100 + i, c[0], c[1]})
	}
	for i, s := range scenes {
		img := image.NewRGBA(image.Rect(0, 0, s.w, s.h))
		draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
		for _, o := range s.objects {
			if o.drawn {
				c, ok := evalColours[o.category]
				if !ok {
					c = color.RGBA{40, 40, 40, 255}
				}
				draw.Draw(img, image.Rect(o.x, o.y, o.x+o.w, o.y+o.h), image.NewUniform(c), image.Point{}, draw.Src)
			}
			doc.Annotations = append(doc.Annotations, map[string]any{"id": len(doc.Annotations) + 1, "image_id": i + 1,
				"category_id": ids[o.category], "bbox": []int{o.x, o.y, o.w, o.h}, "area": o.w * o.h, "iscrowd": 0})
		}
		name := fmt.Sprintf("%06d.png", i)
		doc.Images = append(doc.Images, map[string]any{"id": i + 1, "file_name": name, "width": s.w, "height": s.h})
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(images, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	ann = filepath.Join(dir, "annotations.json")
	if err := os.WriteFile(ann, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return ann, images
}

var colourCategories = [][2]string{{"red", "base"}, {"blue", "base"}, {"green", "novel"}, {"yellow", "novel"}}

func colourScenes() []evalScene {
	return []evalScene{
		{120, 90, []evalObject{{"red", 10, 10, 30, 20, true}, {"blue", 60, 40, 40, 30, true}}},
		{100, 100, nil}, // no objects
		{90, 120, []evalObject{{"green", 5, 50, 25, 25, true}, {"red", 50, 5, 30, 60, true}, {"blue", 40, 90, 20, 20, true}}},
	}
}

func colourLoader(det *handlerstest.ColorDetector) loader {
	return func(ctx context.Context, cfg modelConfig) (*model, error) { return colorModel(det), nil }
}

func runEvalWith(t *testing.T, load loader, args ...string) (string, string, error) {
	t.Helper()
	cfg, err := parseEvalConfig(args, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = evalWith(context.Background(), cfg, load, &out, &errOut)
	return out.String(), errOut.String(), err
}

func decodeReport(t *testing.T, s string) evalReport {
	t.Helper()
	var rep evalReport
	if err := json.Unmarshal([]byte(s), &rep); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
	return rep
}

type jsonGroup struct {
	AP, AP50   *float64
	Categories int
}

// groups reads a head's summary back from the JSON report.
func groups(t *testing.T, raw string) map[string]map[string]jsonGroup {
	t.Helper()
	var rep struct {
		Heads []struct {
			Head    string               `json:"head"`
			Summary map[string]jsonGroup `json:"summary"`
		} `json:"heads"`
	}
	if err := json.Unmarshal([]byte(raw), &rep); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]jsonGroup{}
	for _, h := range rep.Heads {
		out[h.Head] = h.Summary
	}
	return out
}

func near(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-9 }

// TestEvalColourDetectorFindsTheGroundTruth runs the whole command over the
// colour detector, which finds the drawn rectangles exactly: every head gets
// AP 1 on every group, through file reading, decoding, the vocabulary, label
// to category mapping, box conversion and the metric.
func TestEvalColourDetectorFindsTheGroundTruth(t *testing.T) {
	ann, images := writeEvalSet(t, colourCategories, colourScenes())
	det := &handlerstest.ColorDetector{}
	out, progress, err := runEvalWith(t, colourLoader(det), "--annotations", ann, "--images", images, "--json", "--progress-every", "2")
	if err != nil {
		t.Fatal(err)
	}
	if det.RegionsCalls.Load() != 3 || det.ScoreCalls.Load() != 9 {
		t.Errorf("Regions %d times, Score %d times; want once per image and once per image and head", det.RegionsCalls.Load(), det.ScoreCalls.Load())
	}
	if !strings.Contains(progress, "eval: 2/3 images") || !strings.Contains(progress, "eval: 3/3 images") {
		t.Errorf("progress %q", progress)
	}
	rep := decodeReport(t, out)
	if rep.Images != 3 || rep.Categories != 4 || len(rep.Heads) != 3 {
		t.Fatalf("report %+v", rep)
	}
	g := groups(t, out)
	for _, head := range []string{"text", "image", "ensemble"} {
		s := g[head]
		for name, want := range map[string]int{"novel": 1, "base": 2, "all": 3} {
			if !near(s[name].AP, 1) || !near(s[name].AP50, 1) || s[name].Categories != want {
				t.Errorf("%s %s = %+v, want AP 1 over %d categories", head, name, s[name], want)
			}
		}
	}
	for _, c := range rep.Heads[0].Categories {
		if c.Name == "yellow" && (c.AP != nil || c.NumGT != 0) {
			t.Errorf("yellow has no ground truth: %+v", c)
		}
	}
}

// TestEvalMissedObject: a red box that is annotated but not drawn cannot be
// found; red's recall stops at 2/3 with precision 1, so its AP is 67/101 (the
// recall points 0, 0.01, …, 0.66) and --limit restricts the ground truth too.
func TestEvalMissedObject(t *testing.T) {
	scenes := colourScenes()
	scenes[2].objects = append(scenes[2].objects, evalObject{"red", 5, 5, 20, 20, false})
	ann, images := writeEvalSet(t, colourCategories, scenes)
	out, _, err := runEvalWith(t, colourLoader(&handlerstest.ColorDetector{}), "--annotations", ann, "--images", images, "--json", "--head", "text")
	if err != nil {
		t.Fatal(err)
	}
	rep := decodeReport(t, out)
	if len(rep.Heads) != 1 || rep.Heads[0].Head != detector.HeadText {
		t.Fatalf("heads %+v", rep.Heads)
	}
	red := rep.Heads[0].Categories[0]
	if red.Name != "red" || red.NumGT != 3 || !near(red.AP, 67.0/101) || !near(red.AP50, 67.0/101) {
		t.Errorf("red = %+v, want AP 67/101", red)
	}
	if s := groups(t, out)["text"]["base"]; !near(s.AP, (67.0/101+1)/2) {
		t.Errorf("base = %+v", s)
	}
	out, _, err = runEvalWith(t, colourLoader(&handlerstest.ColorDetector{}), "--annotations", ann, "--images", images, "--json", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if rep := decodeReport(t, out); rep.Images != 2 || rep.Heads[0].Categories[0].NumGT != 1 || !near(rep.Heads[0].Categories[0].AP, 1) {
		t.Errorf("--limit 2: %+v", rep)
	}
}

func TestEvalTable(t *testing.T) {
	ann, images := writeEvalSet(t, colourCategories, colourScenes())
	out, _, err := runEvalWith(t, colourLoader(&handlerstest.ColorDetector{}), "--annotations", ann, "--images", images, "--progress-every", "0")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"| method | novel AP | novel AP50 | base AP | base AP50 | all AP | all AP50 |",
		"|---|---:|---:|---:|---:|---:|---:|",
		"| ViLD-text | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |",
		"| ViLD-image | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |",
		"| ViLD-ensemble | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |",
	}
	if len(lines) != 9 || !strings.HasPrefix(lines[0], ann+": 3 images, 4 categories, model colors@0") ||
		strings.Join(lines[2:7], "\n") != strings.Join(want, "\n") || !strings.HasPrefix(lines[8], "(1 novel and 2 base categories with ground truth") {
		t.Fatalf("table:\n%s", out)
	}
}

func TestEvalErrors(t *testing.T) {
	ann, images := writeEvalSet(t, colourCategories, colourScenes())
	load := colourLoader(&handlerstest.ColorDetector{})
	wrongSize := t.TempDir()
	data, _ := os.ReadFile(filepath.Join(images, "000001.png"))
	for _, n := range []string{"000000.png", "000001.png", "000002.png"} {
		os.WriteFile(filepath.Join(wrongSize, n), data, 0o644) // every image 100x100
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"images":[],"categories":[{"id":1,"name":"a","split":"seen"}],"annotations":[]}`), 0o644)
	failing := func(ctx context.Context, cfg modelConfig) (*model, error) { return nil, errors.New("no model here") }
	for _, tc := range []struct {
		name string
		load loader
		args []string
		want string
	}{
		{"missing images", load, []string{"--annotations", ann, "--images", t.TempDir()}, "image 1:"},
		{"wrong size", load, []string{"--annotations", ann, "--images", wrongSize}, "is 100x100 but the annotations say 120x90"},
		{"invalid annotations", load, []string{"--annotations", bad, "--images", images}, "neither"},
		{"no annotations file", load, []string{"--annotations", ann + ".nope", "--images", images}, "no such file"},
		{"model fails", failing, []string{"--annotations", ann, "--images", images}, "no model here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runEvalWith(t, tc.load, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestEvalConfig(t *testing.T) {
	c, err := parseEvalConfig([]string{"--annotations", "a.json", "--images", "d", "--head", "image", "--limit", "5", "--model", "/m"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Annotations != "a.json" || c.Images != "d" || c.Limit != 5 || c.Model.ModelDir != "/m" || len(c.Heads) != 1 || c.Heads[0] != detector.HeadImage {
		t.Fatalf("%+v", c)
	}
	c, err = parseEvalConfig([]string{"--annotations", "a.json", "--images", "d"}, env("VILD_MODEL", "/env"), io.Discard)
	if err != nil || len(c.Heads) != 3 || c.Model.ModelDir != "/env" || c.ProgressEvery != 50 || c.LabelsPerBox != 20 || c.IoUType != eval.BBox || c.Scores != detector.ScoresSoftmax {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	if c, err = parseEvalConfig([]string{"--annotations", "a.json", "--images", "d", "--iou-type", "segm"}, env(), io.Discard); err != nil || c.IoUType != eval.Segm {
		t.Fatalf("--iou-type segm: %+v %v", c, err)
	}
	for _, args := range [][]string{
		{"--images", "d"},
		{"--annotations", "a.json"},
		{"--annotations", "a.json", "--images", "d", "--head", "clip"},
		{"--annotations", "a.json", "--images", "d", "--limit", "-1"},
		{"--annotations", "a.json", "--images", "d", "--labels-per-box", "0"},
		{"--annotations", "a.json", "--images", "d", "extra"},
		{"--annotations", "a.json", "--images", "d", "--iou-type", "mask"},
		{"--annotations", "a.json", "--images", "d", "--scores", "calibrated"},
		{"--annotations", "a.json", "--results", "r.json", "--scores", "stable"},
		{"--annotations", "a.json", "--results", "r.json", "--iou-type", "segm"},
	} {
		if _, err := parseEvalConfig(args, env(), io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestEvalTinyBundle runs the served pipeline end to end over the
// random-weight fixture bundle (ONNX Runtime needed): the run completes and
// the report has every head and group. Its AP is about 0, not a figure.
func TestEvalTinyBundle(t *testing.T) {
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	// the bundle's own categories (precomputed embeddings) and one it must encode
	cats := [][2]string{{"cat", "base"}, {"dog", "base"}, {"kettle", "novel"}, {"red umbrella", "novel"}, {"green box", "novel"}}
	scenes := []evalScene{
		{160, 120, []evalObject{{"cat", 10, 10, 50, 40, true}, {"kettle", 80, 50, 60, 60, true}}},
		{100, 140, []evalObject{{"dog", 20, 20, 60, 90, true}, {"green box", 5, 5, 30, 30, true}}},
	}
	ann, images := writeEvalSet(t, cats, scenes)
	args := []string{"--annotations", ann, "--images", images, "--model", filepath.Join("..", "..", "testdata", "tinybundle"),
		"--ort-lib", lib, "--data-dir", t.TempDir(), "--intra-op-threads", "1"}
	cfg, err := parseEvalConfig(append(args, "--json"), env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out, progress bytes.Buffer
	err = evalWith(context.Background(), cfg, loadModel, &out, &progress)
	if errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	}
	if err != nil {
		t.Fatal(err)
	}
	rep := decodeReport(t, out.String())
	if rep.Images != 2 || rep.Categories != 5 || len(rep.Heads) != 3 || rep.MaxDetections <= 0 || rep.LabelsPerBox != 20 || !strings.HasPrefix(rep.Model, "tiny-random-fixture@") {
		t.Fatalf("report %+v", rep)
	}
	for head, s := range groups(t, out.String()) {
		for name, want := range map[string]int{"novel": 2, "base": 2, "all": 4} {
			g := s[name]
			if g.Categories != want || g.AP == nil || *g.AP < 0 || *g.AP > 1 || g.AP50 == nil || *g.AP50 < *g.AP-1e-12 {
				t.Errorf("%s %s = %+v", head, name, g)
			}
		}
	}
	if !strings.Contains(progress.String(), "eval: 2/2 images") {
		t.Errorf("progress %q", progress.String())
	}
}

func TestEvalResultsConfig(t *testing.T) {
	c, err := parseEvalConfig([]string{"--annotations", "a.json", "--results", "r.json", "--results-dataset", "none"}, env(), io.Discard)
	if err != nil || c.Results != "r.json" || c.ResultsDataset != "none" || c.Images != "" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, args := range [][]string{
		{"--annotations", "a.json", "--results", "r.json", "--images", "d"},
		{"--annotations", "a.json", "--images", "d", "--results-dataset", "x.json"},
		{"--results", "r.json"},
		{"--annotations", "a.json", "--results", "r.json", "--head", "text"},
		{"--annotations", "a.json", "--results", "r.json", "--labels-per-box", "1"},
	} {
		if _, err := parseEvalConfig(args, env(), io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestEvalResultsIDs: without its dataset file a results file's ids are the
// annotations' own; with it, ids are mapped by file name and category name, so
// a run over a folder in another order scores the same. The table names the
// results file.
func TestEvalResultsIDs(t *testing.T) {
	ann, _ := writeEvalSet(t, colourCategories, colourScenes())
	dir := t.TempDir()
	// the annotations' ids: image 1 red and blue, image 3 green, red and blue
	direct := filepath.Join(dir, "direct.json")
	os.WriteFile(direct, []byte(`[{"image_id":1,"category_id":100,"bbox":[10,10,30,20],"score":0.9},
{"image_id":1,"category_id":101,"bbox":[60,40,40,30],"score":0.8},{"image_id":3,"category_id":102,"bbox":[5,50,25,25],"score":0.9},
{"image_id":3,"category_id":100,"bbox":[50,5,30,60],"score":0.9},{"image_id":3,"category_id":101,"bbox":[40,90,20,20],"score":0.7}]`), 0o644)
	// the same boxes under a detector run's ids, with its dataset
	mapped := filepath.Join(dir, "mapped.json")
	os.WriteFile(mapped, []byte(`[{"image_id":2,"category_id":1,"bbox":[10,10,30,20],"score":0.9},
{"image_id":2,"category_id":2,"bbox":[60,40,40,30],"score":0.8},{"image_id":1,"category_id":3,"bbox":[5,50,25,25],"score":0.9},
{"image_id":1,"category_id":1,"bbox":[50,5,30,60],"score":0.9},{"image_id":1,"category_id":2,"bbox":[40,90,20,20],"score":0.7}]`), 0o644)
	os.WriteFile(filepath.Join(dir, "mapped.dataset.json"), []byte(`{"images":[{"id":1,"file_name":"000002.png","width":90,"height":120},
{"id":2,"file_name":"000000.png","width":120,"height":90}],"categories":[{"id":1,"name":"Red"},{"id":2,"name":"blue"},{"id":3,"name":"green"}],"annotations":[]}`), 0o644)
	load := colourLoader(&handlerstest.ColorDetector{})
	for _, f := range []string{direct, mapped} {
		rep := evalJSON(t, load, "--annotations", ann, "--results", f)
		if s := rep.Heads[0].Summary.All; math.Abs(s.AP-1) > 1e-12 || s.Categories != 3 || rep.Model != "" {
			t.Errorf("%s: %+v", f, rep)
		}
	}
	// the mapped file read with the annotations' ids scores nothing
	if s := evalJSON(t, load, "--annotations", ann, "--results", mapped, "--results-dataset", "none").Heads[0].Summary.All; s.AP != 0 {
		t.Errorf("unmapped: %+v", s)
	}
	out, _, err := runEvalWith(t, load, "--annotations", ann, "--results", mapped)
	if err != nil || !strings.HasPrefix(out, ann+": 3 images, 4 categories, results "+mapped+"\n") || !strings.Contains(out, "| results | 1.000 | 1.000 | 1.000 |") {
		t.Errorf("table %v:\n%s", err, out)
	}
	if _, _, err := runEvalWith(t, load, "--annotations", ann, "--results", filepath.Join(dir, "none.json")); err == nil {
		t.Error("a missing results file was accepted")
	}
}
