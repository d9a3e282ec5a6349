package main

import (
	"io"
	"strings"
	"testing"

	"github.com/vild/vild/detector"
)

func TestParseCalibrationConfig(t *testing.T) {
	c, err := parseCalibrationConfig([]string{"--annotations", "a.json", "--images", "im", "--sizes", "10, 100,all", "--scores", "softmax"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sizes) != 3 || c.Sizes[0] != 10 || c.Sizes[1] != 100 || c.Sizes[2] != 0 || len(c.Scores) != 1 ||
		c.Scores[0] != detector.ScoresSoftmax || c.Limit != 60 || c.Head != detector.HeadEnsemble || c.LabelsPerBox != 1 || c.Absent != 10 {
		t.Fatalf("config %+v", c)
	}
	for _, args := range [][]string{
		{"--images", "im"},
		{"--annotations", "a.json", "--images", "im", "--sizes", "0"},
		{"--annotations", "a.json", "--images", "im", "--scores", "calibrated"},
		{"--annotations", "a.json", "--images", "im", "--head", "clip"},
		{"--annotations", "a.json", "--images", "im", "--labels-per-box", "0"},
	} {
		if _, err := parseCalibrationConfig(args, env(), io.Discard); err == nil || !strings.HasPrefix(err.Error(), "calibration: ") {
			t.Fatalf("%v: %v", args, err)
		}
	}
}

// The random names are seeded by the seed and the image, and a smaller
// vocabulary is part of a larger one; absent vocabularies hold none of the
// image's names.
func TestCalibrationVocabulary(t *testing.T) {
	var names []string
	for i := range 50 {
		names = append(names, string(rune('A'+i%26))+string(rune('a'+i/26)))
	}
	truth := map[string]bool{names[3]: true, names[40]: true}
	small := calibrationVocabulary(names, truth, 5, false, 1, 7)
	large := calibrationVocabulary(names, truth, 20, false, 1, 7)
	all := calibrationVocabulary(names, truth, 0, false, 1, 7)
	if len(small) != 5 || len(large) != 20 || len(all) != 50 || !small[names[3]] || !small[names[40]] {
		t.Fatalf("sizes %d %d %d, %v", len(small), len(large), len(all), small)
	}
	for n := range small {
		if !large[n] {
			t.Fatalf("%s in the 5-name vocabulary, not in the 20-name one", n)
		}
	}
	again := calibrationVocabulary(names, truth, 5, false, 1, 7)
	other := calibrationVocabulary(names, truth, 20, false, 1, 8)
	same := true
	for n := range again {
		if !small[n] {
			t.Fatal("the same seed and image drew other names")
		}
	}
	for n := range other {
		same = same && large[n]
	}
	if same {
		t.Fatal("another image drew the same names")
	}
	absent := calibrationVocabulary(names, truth, 10, true, 1, 7)
	if len(absent) != 10 || absent[names[3]] || absent[names[40]] {
		t.Fatalf("absent vocabulary %v", absent)
	}
}
