package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/eval"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/ort"
)

// runDetectWith runs `vild detect args...` on model m as runDetect does,
// without loading a model.
func runDetectWith(ctx context.Context, t *testing.T, m *model, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cfg, err := parseDetectConfig(args, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	inputs, err := collectInputs(cfg.Images)
	if err != nil {
		return "", "", err
	}
	var out, errb bytes.Buffer
	err = detectFiles(ctx, cfg, inputs, m, &out, &errb)
	return out.String(), errb.String(), err
}

func TestDetectConfigOutputs(t *testing.T) {
	for _, tc := range []struct {
		args            []string
		format, dataset string
	}{
		{[]string{"a.png"}, outStdout, ""},
		{[]string{"a.png", "--out", "x.PNG"}, outImage, ""},
		{[]string{"a.png", "--out", "x.jpeg"}, outImage, ""},
		{[]string{"dir", "b.png", "--out", "res/r.json"}, formatCOCO, "res/r.dataset.json"},
		{[]string{"dir", "--out", "r.json", "--dataset", "d.json"}, formatCOCO, "d.json"},
		{[]string{"dir", "--out", "r.jsonl"}, formatJSONL, ""},
		{[]string{"dir", "--out", "r.json", "--format", "jsonl"}, formatJSONL, ""},
		{[]string{"dir", "--out", "r.out", "--format", "coco"}, formatCOCO, "r.dataset.json"},
	} {
		c, err := parseDetectConfig(tc.args, env(), io.Discard)
		if err != nil || c.Format != tc.format || c.Dataset != tc.dataset {
			t.Errorf("%v: format %q dataset %q (%v), want %q %q", tc.args, c.Format, c.Dataset, err, tc.format, tc.dataset)
		}
	}
	c, err := parseDetectConfig([]string{"dir", "--workers", "2"}, env(), io.Discard)
	if err != nil || c.Workers != 2 || c.Model.IntraOpThreads < 1 || !c.Progress {
		t.Errorf("workers: %+v %v", c, err)
	}
	for _, args := range [][]string{
		{"dir", "--format", "coco"},                     // no --out
		{"dir", "--out", "r.json", "--format", "xml"},   // unknown format
		{"a.png", "--out", "x.png", "--format", "coco"}, // an image is no results file
		{"dir", "--out", "r.txt"},                       // unknown extension
		{"dir", "--out", "r.jsonl", "--dataset", "d.json"},
		{"dir", "--out", "r.json", "--dataset", "./r.json"},
		{"dir", "--workers", "0"},
		{"dir", "--workers", fmt.Sprint(maxDetectWorkers + 1)},
		{"a.png", "b.png", "--out", "x.jpg"},
	} {
		if _, err := parseDetectConfig(args, env(), io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCollectInputs(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.png", "a/z.JPG", "a/y.webp", "c.gif", "d.jpeg", "notes.txt", ".hidden.png", ".cache/e.png", "a/.f.png"} {
		touch(t, filepath.Join(dir, n))
	}
	single := filepath.Join(t.TempDir(), "single.png")
	touch(t, single)
	got, err := collectInputs([]string{dir, single})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range got {
		names = append(names, in.FileName)
	}
	want := []string{"a/y.webp", "a/z.JPG", "b.png", "c.gif", "d.jpeg", "single.png"}
	if !slices.Equal(names, want) || got[0].Path != filepath.Join(dir, "a", "y.webp") || got[5].Path != single {
		t.Fatalf("inputs %+v, want file names %v", got, want)
	}
	// a relative file keeps its path as file_name; a missing one is left to the run to report
	if got, err := collectInputs([]string{"testdata/none.png"}); err != nil || got[0].FileName != "testdata/none.png" {
		t.Errorf("relative: %+v %v", got, err)
	}
	if _, err := collectInputs([]string{dir, filepath.Join(dir, "b.png")}); err == nil || !strings.Contains(err.Error(), `file_name "b.png"`) {
		t.Errorf("duplicate file_name: %v", err)
	}
	empty := t.TempDir()
	touch(t, filepath.Join(empty, "readme.md"))
	if _, err := collectInputs([]string{empty}); err == nil || !strings.Contains(err.Error(), "no image files") {
		t.Errorf("empty folder: %v", err)
	}
}

// writeColourSet writes a COCO set the colour detector finds most of: eight
// scenes with a missed object (annotated, not drawn) and a grey square
// annotated yellow (it gets some colour's label), so AP is neither 0 nor 1.
func writeColourSet(t *testing.T) (ann, images string) {
	t.Helper()
	var scenes []evalScene
	for i := range 8 {
		s := evalScene{100 + 10*i, 90, []evalObject{
			{"red", 5 + i, 5, 30, 20, true}, {"blue", 50, 40, 30 + i, 30, true}}}
		if i%3 == 0 {
			s.objects = append(s.objects, evalObject{"green", 5, 50, 25, 25, true}, evalObject{"red", 60, 5, 20, 20, false})
		}
		if i%4 == 1 {
			s.objects = append(s.objects, evalObject{"yellow", 10, 60, 20, 20, true})
		}
		scenes = append(scenes, s)
	}
	return writeEvalSet(t, colourCategories, scenes)
}

// evalJSON runs `vild eval args... --json` and decodes the report.
func evalJSON(t *testing.T, load loader, args ...string) evalReport {
	t.Helper()
	out, _, err := runEvalWith(t, load, append(args, "--json")...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeReport(t, out)
}

// sameAP requires two reports' first rows to agree exactly, category by category.
func sameAP(t *testing.T, got, want evalReport) {
	t.Helper()
	g, w := got.Heads[0], want.Heads[0]
	if !reflect.DeepEqual(g.Summary, w.Summary) && fmt.Sprint(g.Summary) != fmt.Sprint(w.Summary) {
		t.Errorf("summary: results %+v, in-process %+v", g.Summary, w.Summary)
	}
	gj, _ := json.Marshal(g.Categories)
	wj, _ := json.Marshal(w.Categories)
	if !bytes.Equal(gj, wj) {
		t.Errorf("categories:\nresults    %s\nin-process %s", gj, wj)
	}
	if got.Images != want.Images {
		t.Errorf("images %d, want %d", got.Images, want.Images)
	}
}

// TestBatchResultsEvaluateAsInProcess: COCO results written by vild detect
// over a folder, evaluated with --results, give every category's AP exactly as
// vild eval running the detector in-process (same head, labels per box 20).
func TestBatchResultsEvaluateAsInProcess(t *testing.T) {
	ann, images := writeColourSet(t)
	det := &handlerstest.ColorDetector{Extra: 2} // jittered duplicates: false positives
	out := filepath.Join(t.TempDir(), "r.json")
	_, stderr, err := runDetectWith(context.Background(), t, colorModel(det), images, "--out", out,
		"--categories", "red,blue,green,yellow", "--labels-per-box", "20", "--workers", "3")
	if err != nil {
		t.Fatal(err, stderr)
	}
	load := colourLoader(&handlerstest.ColorDetector{Extra: 2})
	results := evalJSON(t, load, "--annotations", ann, "--results", out)
	inProcess := evalJSON(t, load, "--annotations", ann, "--images", images, "--head", "ensemble", "--progress-every", "0")
	sameAP(t, results, inProcess)
	s := results.Heads[0].Summary.All
	if s.AP50 <= 0.3 || s.AP50 >= 1 || results.Heads[0].Method != "results" || results.Results != out {
		t.Errorf("results report %+v (want AP50 strictly between 0.3 and 1)", results)
	}
	// --limit takes the first images and their detections
	sameAP(t, evalJSON(t, load, "--annotations", ann, "--results", out, "--limit", "3"),
		evalJSON(t, load, "--annotations", ann, "--images", images, "--head", "ensemble", "--limit", "3"))
}

// TestBatchTinyBundleResultsEvaluateAsInProcess is the same check on the
// served pipeline (ONNX Runtime, the random-weight fixture bundle).
func TestBatchTinyBundleResultsEvaluateAsInProcess(t *testing.T) {
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	cats := [][2]string{{"cat", "base"}, {"dog", "base"}, {"mug", "base"}, {"kettle", "novel"}, {"red umbrella", "novel"},
		{"apple", "base"}, {"bicycle", "novel"}, {"hot air balloon", "novel"}}
	scenes := []evalScene{
		{160, 120, []evalObject{{"cat", 10, 10, 50, 40, true}, {"kettle", 80, 50, 60, 60, true}}},
		{100, 140, []evalObject{{"dog", 20, 20, 60, 90, true}, {"mug", 5, 5, 30, 30, true}}},
		{128, 128, []evalObject{{"apple", 30, 30, 60, 60, true}, {"bicycle", 0, 70, 50, 50, true}}},
	}
	ann, images := writeEvalSet(t, cats, scenes)
	modelArgs := []string{"--model", filepath.Join("..", "..", "testdata", "tinybundle"), "--ort-lib", lib,
		"--data-dir", t.TempDir(), "--intra-op-threads", "1"}
	cfg, err := parseDetectConfig(append([]string{images, "--labels-per-box", "20"}, modelArgs...), env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := loadModel(context.Background(), cfg.Model)
	if errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	load := func(context.Context, modelConfig) (*model, error) {
		return &model{Detector: m.Detector, Embedder: m.Embedder, Info: m.Info, Close: func() error { return nil }}, nil
	}
	out := filepath.Join(t.TempDir(), "r.json")
	if _, stderr, err := runDetectWith(context.Background(), t, m, images, "--labels-per-box", "20", "--out", out, "--workers", "2"); err != nil {
		t.Fatal(err, stderr)
	}
	dets, err := eval.ReadResultsFile(out)
	if err != nil || len(dets) != 3 {
		t.Fatalf("results of %d images (%v), want 3", len(dets), err)
	}
	results := evalJSON(t, load, "--annotations", ann, "--results", out)
	inProcess := evalJSON(t, load, "--annotations", ann, "--images", images, "--head", "ensemble", "--progress-every", "0")
	sameAP(t, results, inProcess)
}

// TestBatchCOCOShape checks the two files against what COCO readers need
// (pycocotools' COCO and loadRes, FiftyOne's and CVAT's COCO importers):
// the results' exact keys, the dataset's lists with ids, and both read back
// by the eval package's validating readers.
func TestBatchCOCOShape(t *testing.T) {
	_, images := writeColourSet(t)
	out := filepath.Join(t.TempDir(), "r.json")
	if _, stderr, err := runDetectWith(context.Background(), t, colorModel(&handlerstest.ColorDetector{}), images,
		"--out", out, "--categories", "red,blue,green,yellow"); err != nil {
		t.Fatal(err, stderr)
	}
	var results []map[string]any
	readJSON(t, out, &results)
	if len(results) < 16 {
		t.Fatalf("%d results, want at least 2 per image", len(results))
	}
	for _, r := range results {
		keys := slices.Sorted(maps.Keys(r))
		if !slices.Equal(keys, []string{"bbox", "category_id", "image_id", "score"}) {
			t.Fatalf("result keys %v", keys)
		}
	}
	var ds map[string]json.RawMessage
	readJSON(t, datasetPath(out), &ds)
	for _, k := range []string{"info", "licenses", "images", "categories", "annotations"} {
		if _, ok := ds[k]; !ok {
			t.Errorf("dataset has no %q", k)
		}
	}
	var anns []cocoAnnotation
	if err := json.Unmarshal(ds["annotations"], &anns); err != nil {
		t.Fatal(err)
	}
	dets, err := eval.ReadResultsFile(out)
	if err != nil {
		t.Fatal(err)
	}
	coco, err := eval.ReadCOCOFile(datasetPath(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(coco.Images) != 8 || coco.Images[0].FileName != "000000.png" || coco.Images[0].Width != 100 || coco.Images[7].Width != 170 || coco.Images[7].ID != 8 {
		t.Errorf("images %+v", coco.Images)
	}
	wantCats := []eval.Category{{ID: 1, Name: "red"}, {ID: 2, Name: "blue"}, {ID: 3, Name: "green"}, {ID: 4, Name: "yellow"}}
	if !reflect.DeepEqual(coco.Categories, wantCats) {
		t.Errorf("categories %+v", coco.Categories)
	}
	// one annotation per result, same image, category and box; area = w*h
	k := 0
	for _, d := range dets {
		for _, x := range d.Detections {
			a := anns[k]
			if a.ID != int64(k+1) || a.ImageID != d.ImageID || a.CategoryID != x.CategoryID || a.BBox != x.BBox ||
				a.Score != x.Score || a.Area != x.BBox[2]*x.BBox[3] || a.IsCrowd != 0 || a.Segmentation == nil {
				t.Fatalf("annotation %+v for result %+v", a, x)
			}
			k++
		}
	}
	if k != len(anns) || len(coco.Annotations) != k {
		t.Errorf("%d annotations for %d results", len(anns), k)
	}
	// the first image: blue, red and green, boxes as eval converts them
	first := dets[0]
	if first.ImageID != 1 || len(first.Detections) != 3 || first.Detections[1].CategoryID != 1 || first.Detections[1].BBox != [4]float64{5, 5, 30, 20} {
		t.Errorf("image 1: %+v", first)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// stopAfter cancels its run once n images have been scored.
type stopAfter struct {
	detector.Detector
	n      int64
	count  atomic.Int64
	cancel context.CancelFunc
}

func (s *stopAfter) Score(ctx context.Context, r *detector.Regions, v *detector.Vocabulary, o detector.Options) (*detector.Result, error) {
	res, err := s.Detector.Score(ctx, r, v, o)
	if s.count.Add(1) == s.n {
		s.cancel()
	}
	return res, err
}

// TestBatchResume: a run interrupted after k images, resumed, writes the same
// files as a run that was never interrupted, detecting each image once; a
// journal line cut short by a kill is dropped; other settings are refused.
func TestBatchResume(t *testing.T) {
	_, images := writeColourSet(t)
	args := func(out string, more ...string) []string {
		return append([]string{images, "--out", out, "--categories", "red,blue,green,yellow", "--workers", "2"}, more...)
	}
	for _, format := range []string{"coco", "jsonl"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			whole := filepath.Join(dir, "whole."+format)
			if _, _, err := runDetectWith(context.Background(), t, colorModel(&handlerstest.ColorDetector{}), args(whole, "--format", format)...); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "resumed."+format)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := &handlerstest.ColorDetector{}
			m := colorModel(first)
			m.Detector = &stopAfter{Detector: first, n: 3, cancel: cancel}
			_, stderr, err := runDetectWith(ctx, t, m, args(out, "--format", format)...)
			if err == nil || !strings.Contains(err.Error(), "run the same command again to resume") {
				t.Fatalf("interrupted run: %v", err)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatalf("an interrupted run wrote %s", out)
			}
			journaled := strings.Count(readFile(t, out+".journal"), "\n") - 1
			if journaled < 3 || journaled >= 8 {
				t.Fatalf("%d images journaled after the interruption at 3 (stderr %q)", journaled, stderr)
			}
			// a kill in the middle of a write leaves part of a line
			f, err := os.OpenFile(out+".journal", os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(`{"file_name":"000007.png","width":1`)
			f.Close()

			// other settings are refused, and the journal is left as it was
			_, _, err = runDetectWith(context.Background(), t, colorModel(&handlerstest.ColorDetector{}),
				append(args(out, "--format", format), "--categories", "red,blue")...)
			if err == nil || !strings.Contains(err.Error(), "other settings") || !strings.Contains(err.Error(), "categories: 4 names then, 2 names now") {
				t.Fatalf("resumed with other categories: %v", err)
			}
			_, _, err = runDetectWith(context.Background(), t, colorModel(&handlerstest.ColorDetector{}), append(args(out, "--format", format), "--head", "text")...)
			if err == nil || !strings.Contains(err.Error(), "head: ensemble then, text now") {
				t.Fatalf("resumed with another head: %v", err)
			}

			second := &handlerstest.ColorDetector{}
			_, stderr, err = runDetectWith(context.Background(), t, colorModel(second), args(out, "--format", format)...)
			if err != nil {
				t.Fatal(err)
			}
			if got := second.RegionsCalls.Load(); got != int64(8-journaled) {
				t.Errorf("the resumed run detected %d images, want the %d left", got, 8-journaled)
			}
			if !strings.Contains(stderr, fmt.Sprintf("resuming: %d of 8 images done", journaled)) {
				t.Errorf("stderr %q", stderr)
			}
			if readFile(t, out) != readFile(t, whole) {
				t.Errorf("resumed output differs from the uninterrupted run's")
			}
			if format == "coco" && readFile(t, datasetPath(out)) != readFile(t, datasetPath(whole)) {
				t.Errorf("resumed dataset differs from the uninterrupted run's")
			}
			if _, err := os.Stat(out + ".journal"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("journal left after a complete run: %v", err)
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBatchBadFiles: unreadable and undecodable files are reported one by
// one and counted, the others are written, the status is an error; a rerun
// after the files are fixed detects only them.
func TestBatchBadFiles(t *testing.T) {
	_, images := writeColourSet(t)
	good := readFile(t, filepath.Join(images, "000001.png"))
	os.WriteFile(filepath.Join(images, "text.png"), []byte("not a picture"), 0o644)
	os.WriteFile(filepath.Join(images, "cut.png"), []byte(good[:len(good)/2]), 0o644)
	os.Symlink(filepath.Join(images, "gone.png"), filepath.Join(images, "link.png"))
	out := filepath.Join(t.TempDir(), "r.json")
	args := []string{images, "--out", out, "--categories", "red,blue,green,yellow", "--workers", "2"}
	_, stderr, err := runDetectWith(context.Background(), t, colorModel(&handlerstest.ColorDetector{}), args...)
	if err == nil || err.Error() != "detect: 3 of 11 images failed" {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"text.png: imageio: unsupported image format", "cut.png: imageio: ", "link.png: open ",
		"detect: 8 of 11 images (0 resumed), 3 failed", "11/11 images"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	coco, err := eval.ReadCOCOFile(datasetPath(out))
	if err != nil || len(coco.Images) != 8 {
		t.Fatalf("dataset: %v, %+v", err, coco)
	}
	// image ids are places in the sorted input list: cut.png is 9, link.png 10, text.png 11
	if coco.Images[7].ID != 8 || coco.Images[7].FileName != "000007.png" {
		t.Errorf("images %+v", coco.Images)
	}
	for _, n := range []string{"text.png", "cut.png", "link.png"} {
		os.Remove(filepath.Join(images, n))
		os.WriteFile(filepath.Join(images, n), []byte(good), 0o644)
	}
	det := &handlerstest.ColorDetector{}
	if _, stderr, err := runDetectWith(context.Background(), t, colorModel(det), args...); err != nil || det.RegionsCalls.Load() != 3 {
		t.Fatalf("retry: %v, %d images detected, want 3\n%s", err, det.RegionsCalls.Load(), stderr)
	}
	coco, err = eval.ReadCOCOFile(datasetPath(out))
	if err != nil || len(coco.Images) != 11 || coco.Images[8].FileName != "cut.png" || coco.Images[8].ID != 9 {
		t.Fatalf("after the retry: %v %+v", err, coco.Images)
	}
}

// TestDetectStdoutKeepsInputOrder: with several workers and images that take
// different times, the JSON lines come in the order of the inputs; a bad file
// is reported and the others are printed.
func TestDetectStdoutKeepsInputOrder(t *testing.T) {
	_, images := writeColourSet(t)
	os.WriteFile(filepath.Join(images, "000003.png"), []byte("broken"), 0o644)
	slow := &slowFirst{ColorDetector: &handlerstest.ColorDetector{}}
	m := colorModel(slow.ColorDetector)
	m.Detector = slow
	stdout, stderr, err := runDetectWith(context.Background(), t, m, images, "--categories", "red,blue", "--workers", "4")
	if err == nil || !strings.Contains(err.Error(), "1 of 8 images failed") || !strings.Contains(stderr, "000003.png: imageio") {
		t.Fatalf("err %v, stderr %q", err, stderr)
	}
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var r detectResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Base(r.File))
	}
	want := []string{"000000.png", "000001.png", "000002.png", "000004.png", "000005.png", "000006.png", "000007.png"}
	if !slices.Equal(files, want) {
		t.Errorf("lines for %v, want %v", files, want)
	}
}

// slowFirst makes the first image (100 pixels wide) the slowest.
type slowFirst struct{ *handlerstest.ColorDetector }

func (s *slowFirst) Regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	if img.Bounds().Dx() == 100 {
		time.Sleep(100 * time.Millisecond)
	}
	return s.ColorDetector.Regions(ctx, img)
}

func TestProgressLines(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	var b bytes.Buffer
	p := &progress{W: &b, Total: 50, Resumed: 10, Now: clock}
	p.begin()
	for i := range 40 {
		now = now.Add(500 * time.Millisecond)
		p.add(i == 5)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 21 || lines[0] != "detect: resuming: 10 of 50 images done by an earlier run" ||
		lines[1] != "detect: 12/50 images, 2.00 img/s, ETA 19s" ||
		lines[20] != "detect: 50/50 images, 2.00 img/s, ETA 0s, 1 failed" {
		t.Fatalf("plain progress:\n%s", b.String())
	}
	b.Reset()
	p = &progress{W: &b, Terminal: true, Total: 4, Now: clock}
	p.begin()
	for range 4 {
		now = now.Add(time.Second)
		p.add(false)
	}
	if s := b.String(); !strings.Contains(s, "\r\033[Kdetect: [======                  ] 1/4 images, 1.00 img/s, ETA 3s") ||
		!strings.HasSuffix(s, "[========================] 4/4 images, 1.00 img/s, ETA 0s\n") {
		t.Fatalf("terminal progress %q", s)
	}
}

// TestJournalRefusesWhatItCannotTrust: a journal of another format or with a
// broken line before the last is refused, not silently redone or mixed in.
func TestJournalRefusesWhatItCannotTrust(t *testing.T) {
	fp := runFingerprint{Model: "m@1", VocabularyDigest: "sha256:1", Categories: []string{"red"}, Head: detector.HeadEnsemble}
	header, _ := json.Marshal(journalHeader{Version: journalVersion, Run: fp})
	rec := `{"file_name":"a.png","width":4,"height":3,"detections":[{"label":"red","score":0.5,"box":[0,0,1,1]}]}`
	for _, tc := range []struct{ name, content, want string }{
		{"other version", `{"vild_detect_journal":2,"run":{}}` + "\n", "not a journal of this version"},
		{"not a journal", "hello\n", "not a journal of this version"},
		{"broken middle line", string(header) + "\n{\"file_name\":\n" + rec + "\n", "line 2 is not a record"},
		{"unknown field", string(header) + "\n" + `{"file_name":"a.png","colour":1}` + "\n" + rec + "\n", "line 2 is not a record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "r.json.journal")
			os.WriteFile(path, []byte(tc.content), 0o644)
			if _, err := openJournal(path, fp); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if readFile(t, path) != tc.content {
				t.Error("a refused journal was changed")
			}
		})
	}
	// whole records are read back exactly; a last line cut short is cut off
	path := filepath.Join(t.TempDir(), "r.json.journal")
	os.WriteFile(path, []byte(string(header)+"\n"+rec+"\n"+`{"file_name":"b.png","wid`), 0o644)
	j, err := openJournal(path, fp)
	if err != nil {
		t.Fatal(err)
	}
	want := journalRecord{FileName: "a.png", Width: 4, Height: 3, Detections: []detector.Detection{{Label: "red", Score: 0.5, Box: [4]float32{0, 0, 1, 1}}}}
	if got, err := j.record(j.index["a.png"]); len(j.index) != 1 || err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("index %+v, record %+v (%v)", j.index, got, err)
	}
	b := journalRecord{FileName: "b.png", Width: 1, Height: 1}
	if err := j.add(b); err != nil {
		t.Fatal(err)
	}
	if got, err := j.record(j.index["b.png"]); err != nil || !reflect.DeepEqual(got, b) || !j.has("b.png") {
		t.Errorf("appended record %+v (%v)", got, err)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != string(header)+"\n"+rec+"\n"+`{"file_name":"b.png","width":1,"height":1,"detections":null}`+"\n" {
		t.Errorf("journal after the append:\n%s", got)
	}
}
