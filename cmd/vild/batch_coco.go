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
	// Segmentation is the instance mask with --masks: an RLE or polygons.
	Segmentation any `json:"segmentation,omitempty"`
}

// The dataset `vild detect --format coco` writes next to the results is a
// COCO detection dataset: info, licenses, images, categories, and one
// annotation per detection (pre-labels for an annotation tool). It is
// streamed (writeCOCO); these are its entries.

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

// finishedImage is an input the journal holds; ID is its place in the input
// list (1-based), so it does not change when a failed image is retried.
type finishedImage struct {
	ID       int64
	FileName string
	Entry    journalEntry
}

// finished lists the inputs the journal holds, in input order.
func finished(inputs []batchInput, j *journal) []finishedImage {
	var out []finishedImage
	for i, in := range inputs {
		if e, ok := j.index[in.FileName]; ok {
			out = append(out, finishedImage{ID: int64(i + 1), FileName: in.FileName, Entry: e})
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

// cocoDetection is one detection in COCO terms.
type cocoDetection struct {
	CategoryID   int64
	BBox         [4]float64
	Score        float64
	Segmentation any // nil, *detector.RLE or [][]float32
}

// eachDetection reads the images' records back from the journal in input
// order and calls fn with each detection, its box converted with
// eval.BoxFromCorners as `vild eval` converts it.
func eachDetection(j *journal, images []finishedImage, fp runFingerprint, fn func(im finishedImage, d cocoDetection) error) error {
	ids := categoryIDs(fp)
	for _, im := range images {
		rec, err := j.record(im.Entry)
		if err != nil {
			return err
		}
		for _, d := range rec.Detections {
			cat, ok := ids[d.Label]
			if !ok {
				return fmt.Errorf("detect: %s: label %q is not one of the categories", im.FileName, d.Label)
			}
			cd := cocoDetection{CategoryID: cat, BBox: eval.BoxFromCorners(d.Box), Score: float64(d.Score)}
			if d.Mask != nil {
				cd.Segmentation = d.Mask
			} else if d.Polygons != nil {
				cd.Segmentation = d.Polygons
			}
			if err := fn(im, cd); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeCOCO writes the results list to resultsPath and the dataset to
// datasetPath, each replaced whole (written aside, then renamed), one entry
// a line so the files read and diff line by line. It returns the number of
// detections.
func writeCOCO(resultsPath, datasetPath string, j *journal, images []finishedImage, fp runFingerprint) (int, error) {
	n := 0
	err := writeFileAtomic(resultsPath, func(w *bufio.Writer) error {
		w.WriteString("[")
		err := eachDetection(j, images, fp, func(im finishedImage, d cocoDetection) error {
			if n > 0 {
				w.WriteString(",")
			}
			n++
			return writeLine(w, cocoResult{ImageID: im.ID, CategoryID: d.CategoryID, BBox: d.BBox, Score: d.Score,
				Segmentation: d.Segmentation})
		})
		w.WriteString("\n]\n")
		return err
	})
	if err != nil {
		return 0, err
	}
	err = writeFileAtomic(datasetPath, func(w *bufio.Writer) error {
		head, err := json.Marshal(cocoInfo{Description: "vild detect", Version: fp.Model})
		if err != nil {
			return err
		}
		w.WriteString(`{"info":` + string(head) + `,"licenses":[],` + "\n" + `"images":[`)
		for i, im := range images {
			if i > 0 {
				w.WriteString(",")
			}
			if err := writeLine(w, cocoImage{ID: im.ID, FileName: im.FileName, Width: im.Entry.Width, Height: im.Entry.Height}); err != nil {
				return err
			}
		}
		w.WriteString("],\n" + `"categories":[`)
		for i, name := range fp.Categories {
			if i > 0 {
				w.WriteString(",")
			}
			if err := writeLine(w, cocoCategory{ID: int64(i + 1), Name: name, Supercategory: ""}); err != nil {
				return err
			}
		}
		w.WriteString("],\n" + `"annotations":[`)
		id := int64(0)
		err = eachDetection(j, images, fp, func(im finishedImage, d cocoDetection) error {
			if id > 0 {
				w.WriteString(",")
			}
			id++
			return writeLine(w, cocoAnnotation{ID: id, ImageID: im.ID, CategoryID: d.CategoryID, BBox: d.BBox,
				Area: d.BBox[2] * d.BBox[3], Segmentation: []any{}, Score: d.Score})
		})
		w.WriteString("\n]}\n")
		return err
	})
	return n, err
}

// writeLine writes a newline and v's JSON.
func writeLine(w *bufio.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.WriteByte('\n')
	_, err = w.Write(b)
	return err
}

// writeJSONL writes one batchLine per finished image, in input order, and
// returns the number of detections.
func writeJSONL(path string, j *journal, images []finishedImage, fp runFingerprint) (int, error) {
	n := 0
	err := writeFileAtomic(path, func(w *bufio.Writer) error {
		enc := json.NewEncoder(w)
		for _, im := range images {
			rec, err := j.record(im.Entry)
			if err != nil {
				return err
			}
			if rec.Detections == nil {
				rec.Detections = []detector.Detection{}
			}
			n += len(rec.Detections)
			if err := enc.Encode(batchLine{ImageID: im.ID, FileName: rec.FileName, Model: fp.Model,
				VocabularyDigest: fp.VocabularyDigest, Image: api.ImageSize{Width: rec.Width, Height: rec.Height},
				Detections: rec.Detections}); err != nil {
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
