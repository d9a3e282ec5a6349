package main

import (
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vild/vild/boxes"
	"github.com/vild/vild/client"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/models"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/vocabulary"
)

func TestExemplarArgs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want exemplarArg
	}{
		{"spotted bug=pics/a.png:1,2.5,30,40", exemplarArg{"spotted bug", "pics/a.png", [4]float32{1, 2.5, 30, 40}}},
		{" mug =dir:with:colons/b.jpg: 0, 0, 8 ,9", exemplarArg{"mug", "dir:with:colons/b.jpg", [4]float32{0, 0, 8, 9}}},
		{"a=b=c.png:1,2,3,4", exemplarArg{"a", "b=c.png", [4]float32{1, 2, 3, 4}}},
	} {
		got, err := parseExemplarArg(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"a.png:1,2,3,4", "x=a.png", "x=a.png:1,2,3", "x=a.png:1,2,3,4,5", "=a.png:1,2,3,4",
		"x=:1,2,3,4", "x=a.png:1,2,NaN,4", "x=a.png:1,2,Inf,4", "x=a.png:1,2,three,4"} {
		if _, err := parseExemplarArg(bad); err == nil || !strings.Contains(err.Error(), "LABEL=IMAGE:X1,Y1,X2,Y2") {
			t.Errorf("%q: err %v", bad, err)
		}
	}
	c, err := parseDetectConfig([]string{"a.png", "--exemplar", "x=e.png:1,2,3,4", "--exemplar", "y=f.png:5,6,7,8"}, env(), io.Discard)
	if err != nil || len(c.Exemplars) != 2 || c.Exemplars[1].Label != "y" {
		t.Fatalf("%+v %v", c.Exemplars, err)
	}
	args := []string{"a.png"}
	for range 9 {
		args = append(args, "--exemplar", "x=e.png:1,2,3,4")
	}
	if _, err := parseDetectConfig(args, env(), io.Discard); err == nil || !strings.Contains(err.Error(), "at most 8 examples of one label") {
		t.Errorf("nine of one label: %v", err)
	}
	args = []string{"a.png"}
	for i := range 33 {
		args = append(args, "--exemplar", string(rune('a'+i%26))+string(rune('a'+i/26))+"=e.png:1,2,3,4")
	}
	if _, err := parseDetectConfig(args, env(), io.Discard); err == nil || !strings.Contains(err.Error(), "at most 32 examples in all") {
		t.Errorf("33 examples: %v", err)
	}
}

// A model without an image encoder refuses --exemplar, in this process and
// through a server, and a box outside its picture is named with its file.
func TestDetectExemplarsRefused(t *testing.T) {
	_, images := writeColourSet(t)
	one := filepath.Join(images, mustFirst(t, images))
	ex := "thing=" + one + ":1,1,20,20"
	_, _, err := runDetectWith(context.Background(), t, colorModel(&handlerstest.ColorDetector{}), one, "--exemplar", ex)
	if !errors.Is(err, vocabulary.ErrExemplarsUnsupported) {
		t.Errorf("in process: %v", err)
	}
	url := serveColours(t, &handlerstest.ColorDetector{})
	err = runDetect(context.Background(), []string{one, "--exemplar", ex, "--server", url}, io.Discard)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 422 || !strings.HasSuffix(ce.Type, "exemplars-unsupported") {
		t.Errorf("through the server: %v", err)
	}
	// Checked here before anything is sent: a box outside its picture, named
	// by its file, and more example bytes than every request can carry.
	err = runDetect(context.Background(), []string{one, "--exemplar", "thing=" + one + ":0,0,9999,20", "--server", url}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), filepath.Base(one)) || !strings.Contains(err.Error(), "inside the image") {
		t.Errorf("a box outside its picture, through the server: %v", err)
	}
	big := filepath.Join(t.TempDir(), "noise.png")
	writeNoisePNG(t, big, 1100) // about 3.6 MB: five are more than 15 MiB
	args := []string{one, "--server", url}
	for range 5 {
		args = append(args, "--exemplar", "thing="+big+":1,1,50,50")
	}
	if err := runDetect(context.Background(), args, io.Discard); err == nil || !strings.Contains(err.Error(), "at most 15 MiB together") {
		t.Errorf("too many example bytes through the server: %v", err)
	}
}

// Labels that differ in case are one label, as the API takes them: their
// examples are counted and grouped together under the first spelling.
func TestExemplarLabelsIgnoreCase(t *testing.T) {
	_, images := writeColourSet(t)
	one := filepath.Join(images, mustFirst(t, images))
	got, err := readExemplars([]exemplarArg{{"Bug", one, [4]float32{1, 1, 20, 20}}, {"other", one, [4]float32{1, 1, 9, 9}},
		{" bug", one, [4]float32{2, 2, 20, 20}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Label != "Bug" || len(got[0].Exemplars) != 2 || got[0].Exemplars[1].Box[0] != 2 || got[1].Label != "other" {
		t.Errorf("grouped %+v", got)
	}
	args := []string{"a.png"}
	for i := range 9 {
		args = append(args, "--exemplar", []string{"Bug", "bug", "BUG"}[i%3]+"=e.png:1,2,3,4")
	}
	if _, err := parseDetectConfig(args, env(), io.Discard); err == nil || !strings.Contains(err.Error(), "at most 8 examples of one label") {
		t.Errorf("nine of one label in three spellings: %v", err)
	}
}

// writeNoisePNG writes a side×side picture of random pixels (which PNG
// cannot compress).
func writeNoisePNG(t *testing.T, path string, side int) {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, side, side))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = uint8(r.Uint32())
		if i%4 == 3 {
			img.Pix[i] = 255
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}

// On the embedded model a box drawn around the lady beetle of a sample scene
// defines "spotted bug", which then finds the beetle; through a server the
// results are the same to the last digit.
func TestDetectWithExemplarsOnTheDefaultModel(t *testing.T) {
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	if !models.Present() {
		t.Skip("no default bundle")
	}
	ctx := context.Background()
	m, err := loadModel(ctx, modelConfig{ORTLib: lib, DataDir: t.TempDir()})
	if errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	} else if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	scene := filepath.Join("..", "..", "web", "static", "samples", "scene-000008.png")
	beetle := [4]float32{1.4, 196.7, 77.6, 297.6} // the model's "lady beetle" box on it
	ex := "spotted bug=" + scene + ":1.4,196.7,77.6,297.6"

	labelsOf := func(stdout string) (labels []string, bug [4]float32) {
		var line detectResult
		if err := json.Unmarshal([]byte(stdout), &line); err != nil {
			t.Fatalf("%v: %s", err, stdout)
		}
		for _, d := range line.Detections {
			labels = append(labels, d.Label)
			if d.Label == "spotted bug" {
				bug = d.Box
			}
		}
		slices.Sort(labels)
		return labels, bug
	}
	out, _, err := runDetectWith(ctx, t, m, scene, "--categories", "pine decoration", "--exemplar", ex, "--score-threshold", "0.3")
	if err != nil {
		t.Fatal(err)
	}
	labels, bug := labelsOf(out)
	if !slices.Equal(labels, []string{"pine decoration", "spotted bug"}) || boxes.IoU(bug, beetle) < 0.7 {
		t.Errorf("with the example: %v, spotted bug at %v (the beetle at %v)", labels, bug, beetle)
	}
	// Without --categories the examples' labels are the vocabulary.
	out, _, err = runDetectWith(ctx, t, m, scene, "--exemplar", ex, "--score-threshold", "0.3")
	if err != nil {
		t.Fatal(err)
	}
	if labels, _ := labelsOf(out); !slices.Equal(labels, []string{"spotted bug"}) {
		t.Errorf("the example alone: %v", labels)
	}
	// A box outside the picture is refused, naming the file.
	if _, _, err := runDetectWith(ctx, t, m, scene, "--exemplar", "x="+scene+":0,0,400,20"); err == nil ||
		!strings.Contains(err.Error(), "scene-000008.png") || !strings.Contains(err.Error(), "inside the image") {
		t.Errorf("a box outside the picture: %v", err)
	}

	if _, _, err := runDetectWith(ctx, t, m, scene, "--exemplar", "x="+filepath.Join(t.TempDir(), "missing.png")+":1,1,20,20"); err == nil ||
		!strings.Contains(err.Error(), "missing.png") {
		t.Errorf("a missing example image: %v", err)
	}

	// Through a server on the same model: the same COCO results, whose
	// categories hold the example's label.
	dir := t.TempDir()
	local, remote := filepath.Join(dir, "local.json"), filepath.Join(dir, "remote.json")
	args := []string{scene, filepath.Join("..", "..", "web", "static", "samples", "scene-000023.png"),
		"--categories", "pine decoration, house", "--exemplar", ex, "--progress=false"}
	if _, stderr, err := runDetectWith(ctx, t, m, append(args, "--out", local)...); err != nil {
		t.Fatal(err, stderr)
	}
	cfg := testServeConfig(t)
	cfg.Model.ORTLib = lib
	r := startServe(t, cfg, loadModel)
	url := "http://" + r.addr
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); c.Readyz(ctx) != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server did not become ready in 60 s")
		}
	}
	if err := runDetect(ctx, append(args, "--out", remote, "--server", url), io.Discard); err != nil {
		t.Fatal(err)
	}
	if a, b := readFile(t, local), readFile(t, remote); a != b || !strings.Contains(a, `"score"`) {
		t.Errorf("results through the server differ from the in-process ones:\n%s\n%s", b, a)
	}
	var ds struct {
		Categories []struct{ Name string } `json:"categories"`
	}
	readJSON(t, datasetPath(local), &ds)
	if len(ds.Categories) != 3 || ds.Categories[2].Name != "spotted bug" {
		t.Errorf("dataset categories %+v", ds.Categories)
	}
}
