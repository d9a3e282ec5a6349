package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/eval"
)

// cocoResult is one entry of a COCO results file, as pycocotools' loadRes
// and `vild eval --results` read it.
type cocoResult struct {
	ImageID    int64      `json:"image_id"`
	CategoryID int64      `json:"category_id"`
	BBox       [4]float64 `json:"bbox"` // x, y, width, height in pixels
	Score      float64    `json:"score"`
}

// cocoDataset is the COCO detection dataset `vild detect --format coco`
// writes next to the results: the images, the categories and one annotation
// per detection (pre-labels for an annotation tool).
type cocoDataset struct {
	Info        cocoInfo         `json:"info"`
	Licenses    []struct{}       `json:"licenses"`
	Images      []cocoImage      `json:"images"`
	Categories  []cocoCategory   `json:"categories"`
	Annotations []cocoAnnotation `json:"annotations"`
}

type cocoInfo struct {
	Description string `json:"description"`
	Version     string `json:"version"` // the model's id
}

type cocoImage struct {
	ID       int64  `json:"id"`
	FileName string `json:"file_name"`
	Width    int    `json:"width"`
	Height   int    `json:"height"`
}

type cocoCategory struct {
	ID            int64  `json:"id"`
	Name          string `json:"name"`
	Supercategory string `json:"supercategory"`
}

type cocoAnnotation struct {
	ID           int64      `json:"id"`
	ImageID      int64      `json:"image_id"`
	CategoryID   int64      `json:"category_id"`
	BBox         [4]float64 `json:"bbox"`
	Area         float64    `json:"area"`
	IsCrowd      int        `json:"iscrowd"`
	Segmentation []any      `json:"segmentation"`
	Score        float64    `json:"score"`
}

// batchLine is one image of `--format jsonl`: `vild detect`'s stdout line
// with the image's id and file_name, without the timing.
type batchLine struct {
	ImageID          int64                `json:"image_id"`
	FileName         string               `json:"file_name"`
	Model            string               `json:"model"`
	VocabularyDigest string               `json:"vocabulary_digest"`
	Image            api.ImageSize        `json:"image"`
	Detections       []detector.Detection `json:"detections"`
}

// finishedImage is an input with its record; ID is its place in the input
// list (1-based), so it does not change when a failed image is retried.
type finishedImage struct {
	ID  int64
	Rec journalRecord
}

// finished lists the inputs that have a record, in input order.
func finished(inputs []batchInput, records map[string]journalRecord) []finishedImage {
	var out []finishedImage
	for i, in := range inputs {
		if rec, ok := records[in.FileName]; ok {
			out = append(out, finishedImage{ID: int64(i + 1), Rec: rec})
		}
	}
	return out
}

// categoryIDs numbers the run's categories 1, 2, … in vocabulary order.
func categoryIDs(fp runFingerprint) map[string]int64 {
	ids := make(map[string]int64, len(fp.Categories))
	for i, n := range fp.Categories {
		ids[n] = int64(i + 1)
	}
	return ids
}

// cocoOutputs builds the results list and the dataset. Boxes are converted
// with eval.BoxFromCorners, as `vild eval` converts them.
func cocoOutputs(images []finishedImage, fp runFingerprint) ([]cocoResult, *cocoDataset, error) {
	ids := categoryIDs(fp)
	results := []cocoResult{}
	ds := &cocoDataset{Info: cocoInfo{Description: "vild detect", Version: fp.Model}, Licenses: []struct{}{},
		Images: []cocoImage{}, Categories: make([]cocoCategory, len(fp.Categories)), Annotations: []cocoAnnotation{}}
	for i, n := range fp.Categories {
		ds.Categories[i] = cocoCategory{ID: int64(i + 1), Name: n, Supercategory: ""}
	}
	for _, im := range images {
		ds.Images = append(ds.Images, cocoImage{ID: im.ID, FileName: im.Rec.FileName, Width: im.Rec.Width, Height: im.Rec.Height})
		for _, d := range im.Rec.Detections {
			cat, ok := ids[d.Label]
			if !ok {
				return nil, nil, fmt.Errorf("detect: %s: label %q is not one of the categories", im.Rec.FileName, d.Label)
			}
			box := eval.BoxFromCorners(d.Box)
			score := float64(d.Score)
			results = append(results, cocoResult{ImageID: im.ID, CategoryID: cat, BBox: box, Score: score})
			ds.Annotations = append(ds.Annotations, cocoAnnotation{ID: int64(len(ds.Annotations) + 1), ImageID: im.ID,
				CategoryID: cat, BBox: box, Area: box[2] * box[3], Segmentation: []any{}, Score: score})
		}
	}
	return results, ds, nil
}

// writeCOCO writes the results list to resultsPath and the dataset to
// datasetPath, each replaced whole (written aside, then renamed).
func writeCOCO(resultsPath, datasetPath string, images []finishedImage, fp runFingerprint) (int, error) {
	results, ds, err := cocoOutputs(images, fp)
	if err != nil {
		return 0, err
	}
	err = writeFileAtomic(resultsPath, func(w *bufio.Writer) error {
		// one result a line, so the file reads and diffs line by line
		if _, err := w.WriteString("["); err != nil {
			return err
		}
		for i, r := range results {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if i > 0 {
				w.WriteString(",")
			}
			w.WriteString("\n")
			w.Write(b)
		}
		_, err := w.WriteString("\n]\n")
		return err
	})
	if err != nil {
		return 0, err
	}
	err = writeFileAtomic(datasetPath, func(w *bufio.Writer) error {
		return json.NewEncoder(w).Encode(ds)
	})
	return len(results), err
}

// writeJSONL writes one batchLine per finished image, in input order.
func writeJSONL(path string, images []finishedImage, fp runFingerprint) (int, error) {
	n := 0
	err := writeFileAtomic(path, func(w *bufio.Writer) error {
		enc := json.NewEncoder(w)
		for _, im := range images {
			dets := im.Rec.Detections
			if dets == nil {
				dets = []detector.Detection{}
			}
			n += len(dets)
			if err := enc.Encode(batchLine{ImageID: im.ID, FileName: im.Rec.FileName, Model: fp.Model,
				VocabularyDigest: fp.VocabularyDigest, Image: api.ImageSize{Width: im.Rec.Width, Height: im.Rec.Height},
				Detections: dets}); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// writeFileAtomic writes path through a temporary file in its folder, renamed
// over it once complete: a reader never sees half a file.
func writeFileAtomic(path string, write func(w *bufio.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	w := bufio.NewWriterSize(tmp, 1<<20)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	err = errors.Join(err, tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("detect: write %s: %w", path, err)
	}
	return nil
}

// datasetPath is the dataset file next to a results file: results.json →
// results.dataset.json.
func datasetPath(results string) string {
	return strings.TrimSuffix(results, filepath.Ext(results)) + ".dataset.json"
}
