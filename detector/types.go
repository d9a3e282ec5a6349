// Package detector runs vild's two-stage open-vocabulary detector: it turns an
// image into region proposals with region embeddings (Regions, which do not
// depend on the vocabulary) and scores them against a vocabulary of text
// embeddings (Detect = Regions + Score).
package detector

import (
	"context"
	"errors"
	"image"
	"time"
)

// Head selects which embedding head classifies regions (ViLD section 3).
type Head string

const (
	// HeadEnsemble is ViLD-ensemble: the geometric mean of the text and image heads'
	// probabilities, weighted towards the text head for base categories and towards
	// the image head for novel ones.
	HeadEnsemble Head = "ensemble"
	// HeadText is ViLD-text: softmax over the background plus the vocabulary.
	HeadText Head = "text"
	// HeadImage is ViLD-image: the distilled image head alone.
	HeadImage Head = "image"
)

// Class is one entry of a vocabulary: a text embedding and the label it reports.
// Several classes may share a label (synonyms); their probabilities are summed.
type Class struct {
	Label     string    // label reported for detections of this class
	Text      string    // the name that was embedded (equal to Label unless a synonym)
	Embedding []float32 // L2-normalised prompt-ensemble text embedding
	Base      bool      // a category the detector was trained on with boxes
	Negative  bool      // absorbs look-alikes; never reported
	Threshold float32   // per-class score threshold; 0 means Options.ScoreThreshold
}

// Vocabulary is the set of classes a request scores regions against.
type Vocabulary struct {
	Classes []Class
	Digest  string // content digest of the classes, for caching and responses
}

// Options control scoring and post-processing.
type Options struct {
	Head           Head    // default HeadEnsemble
	ScoreThreshold float32 // minimum score of a reported detection
	NMSIoU         float32 // IoU above which the lower-scored box of a label is suppressed
	MaxDetections  int     // cap on reported detections
	RunnersUp      int     // how many runner-up labels to report per detection
	LabelsPerBox   int     // labels a region may be reported with, each a detection (≤ 1: its best only)
	Masks          Masks   // instance masks of the detections: none, RLE or polygons
	Scores         Scores  // what a score is a probability over; empty: the detector's default
}

// Scores selects what a detection's score is a probability over
// (docs/api.md "What a score means", docs/decisions/0027).
type Scores string

const (
	// ScoresStable scores every name against the background and the model's
	// own category list (its reference vocabulary), the name added to it when
	// it is not one of them: a name's score on a region does not depend on
	// the other names of the request. The default of models with a category
	// list.
	ScoresStable Scores = "stable"
	// ScoresSoftmax is ViLD's rule: a softmax over the background and the
	// request's vocabulary, so a name's score falls as similar names are
	// added.
	ScoresSoftmax Scores = "softmax"
)

// Masks selects whether and how detections carry instance masks.
type Masks string

const (
	MasksNone    Masks = ""
	MasksRLE     Masks = "rle"     // Detection.Mask, COCO RLE
	MasksPolygon Masks = "polygon" // Detection.Polygons
)

// RLE is a COCO run-length encoded mask: the image's pixels column by column,
// alternating runs starting with zeros, the counts compressed as pycocotools'
// rleToString writes them.
type RLE struct {
	Size   [2]int `json:"size" example:"480,640"` // [height, width]
	Counts string `json:"counts" example:"lXf1;b;6K4L4M2N2N2"`
}

// Candidate is a label with its score.
type Candidate struct {
	Label string  `json:"label"`
	Score float32 `json:"score"`
}

// Detection is one reported object.
type Detection struct {
	Label     string      `json:"label"`
	Score     float32     `json:"score"`
	Box       [4]float32  `json:"box"` // x1, y1, x2, y2 in the original image's pixels
	RunnersUp []Candidate `json:"runners_up,omitempty"`
	// Mask is the instance mask (with "masks": "rle").
	Mask *RLE `json:"mask,omitempty"`
	// Polygons are the mask's outer contours (with "masks": "polygon"), each
	// x1, y1, x2, y2, … in image pixels, as COCO's polygon segmentation.
	Polygons [][]float32 `json:"polygons,omitempty"`
}

// Timings are per-stage wall times of one request.
type Timings struct {
	Preprocess time.Duration
	Backbone   time.Duration
	Proposals  time.Duration
	RoIAlign   time.Duration
	BoxHead    time.Duration
	Crops      time.Duration // the teacher's crops of the first regions (bundles with embedding.crops)
	Scoring    time.Duration
	Masks      time.Duration // mask RoIAlign, mask head, paste and encoding
}

// Features are what a mask head needs of an image: the FPN levels RoIAlign
// pools and the resize from the original image. Detectors with a mask head
// keep them in Regions.
type Features struct {
	Levels         []FeatureLevel
	ScaleX, ScaleY float64 // resized / original, per axis
}

// FeatureLevel is one FPN level, [Channels, Height, Width] float32 in C order.
type FeatureLevel struct {
	Data                    []float32
	Channels, Height, Width int
	Stride                  int
}

// Bytes is the memory the feature maps hold.
func (f *Features) Bytes() int {
	if f == nil {
		return 0
	}
	n := 0
	for _, l := range f.Levels {
		n += 4 * len(l.Data)
	}
	return n
}

// Regions are an image's proposals and region embeddings: everything that does
// not depend on the vocabulary, so an image can be re-scored against new
// vocabularies without running the backbone again.
type Regions struct {
	Width, Height   int          // original image size in pixels
	Boxes           [][4]float32 // per region: class-agnostic refined box, original pixels
	TextEmbeddings  [][]float32  // per region: text-head embedding, L2-normalised
	ImageEmbeddings [][]float32  // per region: image-head embedding, L2-normalised
	// CropEmbeddings are the teacher's (the image encoder's) embeddings of
	// the crops of the first regions, L2-normalised, for bundles whose
	// ensemble consults them (manifest embedding.crops); empty otherwise.
	CropEmbeddings [][]float32
	Features       *Features // for masks; nil when the detector has no mask head
	Timings        Timings
}

// Result is the outcome of scoring regions against a vocabulary.
type Result struct {
	Width, Height int
	Detections    []Detection
	Timings       Timings
}

// Detector is what the HTTP layer needs from a detector.
type Detector interface {
	// Regions runs the vocabulary-independent part of the pipeline.
	Regions(ctx context.Context, img image.Image) (*Regions, error)
	// Score classifies regions against a vocabulary.
	Score(ctx context.Context, r *Regions, vocab *Vocabulary, opts Options) (*Result, error)
}

// Errors returned by detectors; the HTTP layer maps them to status codes.
var (
	ErrEmptyVocabulary = errors.New("detector: empty vocabulary")
	ErrEmbeddingDim    = errors.New("detector: embedding dimension does not match the model")
	ErrCanceled        = errors.New("detector: canceled")
	// ErrMasksUnsupported: masks were asked of a detector (or of regions)
	// without a mask head (or without the features it needs).
	ErrMasksUnsupported = errors.New("detector: the model has no mask head")
	// ErrScoresUnsupported: stable scores were asked of a model without a
	// reference vocabulary (a bundle with no category list).
	ErrScoresUnsupported = errors.New("detector: the model has no reference vocabulary for stable scores")
)
