package eval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vild/vild/mask"
)

// MaxFileBytes caps an annotation or results file (segmentation masks make
// annotation files large; 500 pictogram scenes take a few MB).
const MaxFileBytes = 512 << 20

// maxNameRunes caps a category name; the CLI embeds every name.
const maxNameRunes = 256

// ErrInvalid marks a file that parsed as JSON but is not valid COCO.
var ErrInvalid = errors.New("eval: invalid COCO data")

// COCO is the part of a COCO detection file the evaluation reads. Masks,
// areas, licences and info are skipped.
type COCO struct {
	Images      []Image
	Annotations []Annotation
	Categories  []Category
}

// Image is one entry of "images".
type Image struct {
	ID       int64
	FileName string // a local relative path (validated)
	Width    int
	Height   int
}

// Category is one entry of "categories". Split is vild's "base" or "novel"
// (empty when the file does not say).
type Category struct {
	ID    int64
	Name  string
	Split string
}

// Annotation is one ground-truth box, with its instance mask when the file
// gives one as an RLE.
type Annotation struct {
	ID         int64
	ImageID    int64
	CategoryID int64
	BBox       [4]float64 // x, y, width, height in pixels
	// Segm is the mask's COCO run lengths (column-major, zeros first), nil
	// when the annotation has no RLE segmentation.
	Segm []int
}

type rawCOCO struct {
	Images      *[]rawImage      `json:"images"`
	Annotations *[]rawAnnotation `json:"annotations"`
	Categories  *[]rawCategory   `json:"categories"`
}

type rawImage struct {
	ID       *int64  `json:"id"`
	FileName *string `json:"file_name"`
	Width    *int    `json:"width"`
	Height   *int    `json:"height"`
}

type rawCategory struct {
	ID    *int64  `json:"id"`
	Name  *string `json:"name"`
	Split string  `json:"split"`
}

type rawAnnotation struct {
	ID         *int64          `json:"id"`
	ImageID    *int64          `json:"image_id"`
	CategoryID *int64          `json:"category_id"`
	BBox       []float64       `json:"bbox"`
	IsCrowd    int             `json:"iscrowd"`
	Segm       json.RawMessage `json:"segmentation"`
}

// ReadCOCOFile reads and validates a COCO detection file.
func ReadCOCOFile(path string) (*COCO, error) {
	data, err := readCapped(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCOCO(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("eval: read %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("eval: %s is larger than %d bytes", path, MaxFileBytes)
	}
	return data, nil
}

// decodeOne decodes exactly one JSON value from data into v.
func decodeOne(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON value", ErrInvalid)
	}
	return nil
}

// ParseCOCO parses and validates a COCO detection file: unique image and
// category ids, unique category names (case-insensitively, since they become
// a vocabulary), local image file names, positive image sizes, annotations
// that refer to listed images and categories with four finite box numbers and
// a non-negative size. Crowd annotations are refused: the evaluation, like
// training/vildtrain/evaluate/cocoeval.py, has no ignore regions.
func ParseCOCO(data []byte) (*COCO, error) {
	var raw rawCOCO
	if err := decodeOne(data, &raw); err != nil {
		return nil, err
	}
	if raw.Images == nil || raw.Annotations == nil || raw.Categories == nil {
		return nil, fmt.Errorf("%w: \"images\", \"annotations\" and \"categories\" must all be lists", ErrInvalid)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	c := &COCO{
		Images:      make([]Image, 0, len(*raw.Images)),
		Annotations: make([]Annotation, 0, len(*raw.Annotations)),
		Categories:  make([]Category, 0, len(*raw.Categories)),
	}
	images := make(map[int64]bool, len(*raw.Images))
	sizes := make(map[int64][2]int, len(*raw.Images))
	for i, im := range *raw.Images {
		if im.ID == nil || im.FileName == nil || im.Width == nil || im.Height == nil {
			return nil, bad("images[%d] needs id, file_name, width and height", i)
		}
		if images[*im.ID] {
			return nil, bad("duplicate image id %d", *im.ID)
		}
		images[*im.ID] = true
		sizes[*im.ID] = [2]int{*im.Height, *im.Width}
		if *im.Width <= 0 || *im.Height <= 0 {
			return nil, bad("image %d is %dx%d", *im.ID, *im.Width, *im.Height)
		}
		name := *im.FileName
		if !utf8.ValidString(name) || strings.ContainsRune(name, 0) || strings.Contains(name, `\`) || !filepath.IsLocal(name) {
			return nil, bad("image %d: file_name %q is not a relative path inside the images folder", *im.ID, name)
		}
		c.Images = append(c.Images, Image{ID: *im.ID, FileName: name, Width: *im.Width, Height: *im.Height})
	}
	cats := make(map[int64]bool, len(*raw.Categories))
	names := make(map[string]int64, len(*raw.Categories))
	for i, ct := range *raw.Categories {
		if ct.ID == nil || ct.Name == nil {
			return nil, bad("categories[%d] needs id and name", i)
		}
		if cats[*ct.ID] {
			return nil, bad("duplicate category id %d", *ct.ID)
		}
		cats[*ct.ID] = true
		name := *ct.Name
		n := utf8.RuneCountInString(name)
		if !utf8.ValidString(name) || strings.TrimSpace(name) != name || n == 0 || n > maxNameRunes ||
			strings.IndexFunc(name, unicode.IsControl) >= 0 {
			return nil, bad("category %d: name %q must be 1 to %d characters without control characters or outer spaces", *ct.ID, name, maxNameRunes)
		}
		key := strings.ToLower(name)
		if other, dup := names[key]; dup {
			return nil, bad("categories %d and %d are both named %q", other, *ct.ID, name)
		}
		names[key] = *ct.ID
		switch ct.Split {
		case "", "base", "novel":
		default:
			return nil, bad("category %d: split %q is neither \"base\" nor \"novel\"", *ct.ID, ct.Split)
		}
		c.Categories = append(c.Categories, Category{ID: *ct.ID, Name: name, Split: ct.Split})
	}
	for i, a := range *raw.Annotations {
		if a.ID == nil || a.ImageID == nil || a.CategoryID == nil || a.BBox == nil {
			return nil, bad("annotations[%d] needs id, image_id, category_id and bbox", i)
		}
		if !images[*a.ImageID] {
			return nil, bad("annotation %d: image %d is not listed", *a.ID, *a.ImageID)
		}
		if !cats[*a.CategoryID] {
			return nil, bad("annotation %d: category %d is not listed", *a.ID, *a.CategoryID)
		}
		if a.IsCrowd != 0 {
			return nil, bad("annotation %d: crowd annotations are not supported", *a.ID)
		}
		box, err := checkBox(a.BBox)
		if err != nil {
			return nil, bad("annotation %d: %v", *a.ID, err)
		}
		runs, err := segmRuns(a.Segm, sizes[*a.ImageID])
		if err != nil {
			return nil, bad("annotation %d: %v", *a.ID, err)
		}
		c.Annotations = append(c.Annotations, Annotation{ID: *a.ID, ImageID: *a.ImageID, CategoryID: *a.CategoryID,
			BBox: box, Segm: runs})
	}
	return c, nil
}

// segmRuns reads an annotation's segmentation: the run lengths of a COCO RLE
// (compressed string or uncompressed counts) covering an image of size
// (height, width); nil when there is none or it is a polygon.
func segmRuns(raw json.RawMessage, size [2]int) ([]int, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, nil
	}
	var rle struct {
		Size   [2]int          `json:"size"`
		Counts json.RawMessage `json:"counts"`
	}
	if err := json.Unmarshal(raw, &rle); err != nil {
		return nil, fmt.Errorf("segmentation: %v", err)
	}
	if rle.Size != size {
		return nil, fmt.Errorf("segmentation of size %v on an image of %v", rle.Size, size)
	}
	var runs []int
	var s string
	if err := json.Unmarshal(rle.Counts, &s); err == nil {
		if runs, err = mask.DecompressCounts(s); err != nil {
			return nil, fmt.Errorf("segmentation: %v", err)
		}
	} else if err := json.Unmarshal(rle.Counts, &runs); err != nil {
		return nil, errors.New("segmentation counts must be a string or a list of integers")
	}
	return CheckRuns(runs, size[0]*size[1])
}

// CheckRuns checks that run lengths are non-negative and cover n pixels.
func CheckRuns(runs []int, n int) ([]int, error) {
	total := 0
	for _, r := range runs {
		if r < 0 || r > n {
			return nil, fmt.Errorf("segmentation run %d out of range", r)
		}
		total += r
	}
	if total != n {
		return nil, fmt.Errorf("segmentation runs cover %d pixels of %d", total, n)
	}
	if runs == nil {
		runs = []int{}
	}
	return runs, nil
}

func checkBox(b []float64) ([4]float64, error) {
	var box [4]float64
	if len(b) != 4 {
		return box, fmt.Errorf("bbox has %d numbers, want 4 (x, y, width, height)", len(b))
	}
	for i, v := range b {
		if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e15 {
			return box, fmt.Errorf("bbox %v is not finite", b)
		}
		box[i] = v
	}
	if box[2] < 0 || box[3] < 0 {
		return box, fmt.Errorf("bbox %v has a negative size", b)
	}
	return box, nil
}

// FirstImages returns the ground truth of the first n images (all when n <= 0
// or n >= the number of images), as the Python evaluation's --count does.
func (c *COCO) FirstImages(n int) *COCO {
	if n <= 0 || n >= len(c.Images) {
		return c
	}
	out := &COCO{Images: c.Images[:n], Categories: c.Categories}
	keep := make(map[int64]bool, n)
	for _, im := range out.Images {
		keep[im.ID] = true
	}
	for _, a := range c.Annotations {
		if keep[a.ImageID] {
			out.Annotations = append(out.Annotations, a)
		}
	}
	return out
}

// Detection is one scored box of one category, with its mask's COCO run
// lengths for mask AP.
type Detection struct {
	CategoryID int64
	BBox       [4]float64 // x, y, width, height in pixels
	Score      float64    // finite
	Segm       []int      // nil: no mask
}

// ImageDetections are the detections of one image, in the detector's order
// (stable sorts keep it among equal scores).
type ImageDetections struct {
	ImageID    int64
	Detections []Detection
}

type rawResult struct {
	ImageID    *int64    `json:"image_id"`
	CategoryID *int64    `json:"category_id"`
	BBox       []float64 `json:"bbox"`
	Score      *float64  `json:"score"`
}

// ParseResults parses a COCO results file (a list of {image_id, category_id,
// bbox, score}), grouping detections by image in first-seen order and keeping
// their order within an image.
func ParseResults(data []byte) ([]ImageDetections, error) {
	var raw *[]rawResult
	if err := decodeOne(data, &raw); err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: results must be a list", ErrInvalid)
	}
	var out []ImageDetections
	index := map[int64]int{}
	for i, r := range *raw {
		if r.ImageID == nil || r.CategoryID == nil || r.BBox == nil || r.Score == nil {
			return nil, fmt.Errorf("%w: results[%d] needs image_id, category_id, bbox and score", ErrInvalid, i)
		}
		box, err := checkBox(r.BBox)
		if err != nil {
			return nil, fmt.Errorf("%w: results[%d]: %v", ErrInvalid, i, err)
		}
		if math.IsNaN(*r.Score) || math.IsInf(*r.Score, 0) {
			return nil, fmt.Errorf("%w: results[%d]: score is not finite", ErrInvalid, i)
		}
		k, ok := index[*r.ImageID]
		if !ok {
			k = len(out)
			index[*r.ImageID] = k
			out = append(out, ImageDetections{ImageID: *r.ImageID})
		}
		out[k].Detections = append(out[k].Detections, Detection{CategoryID: *r.CategoryID, BBox: box, Score: *r.Score})
	}
	return out, nil
}
