// Package api holds the JSON types of vild's HTTP API, shared by the server
// (package handlers), the command line and clients: requests, responses and
// the RFC 9457 problem body. It has no behaviour beyond JSON decoding and
// the Error the server answers as a Problem.
package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/vocabulary"
)

// Problem is an RFC 9457 problem details body. Detail is a safe message written
// for the client: it never echoes input or carries a stack trace.
type Problem struct {
	Type   string `json:"type" example:"urn:vild:problem:body-too-large"`
	Title  string `json:"title" example:"Request Entity Too Large"`
	Status int    `json:"status" example:"413"`
	Detail string `json:"detail,omitempty" example:"request body exceeds 20971520 bytes"`
	// Instance is the route the request matched (a pattern such as /v1/images/{id}/detect, never the raw path: input is not echoed).
	Instance string `json:"instance,omitempty" example:"/v1/detect"`
	// RequestID is the request's ID, as in its X-Request-ID response header.
	RequestID string `json:"request_id,omitempty" example:"4bf92f3577b34da6a3ce929d0e0e4736"`
}

// ProblemType is the type URI of a problem slug.
func ProblemType(slug string) string { return "urn:vild:problem:" + slug }

// Base64Image is image bytes carried in JSON as standard base64; a data URL
// prefix ("data:image/png;base64,") is accepted and dropped.
type Base64Image []byte

// UnmarshalJSON decodes a base64 string.
func (b *Base64Image) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return &ImageFieldError{"image must be a base64 string"}
	}
	if strings.HasPrefix(s, "data:") {
		i := strings.Index(s, ",")
		if i < 0 || !strings.HasSuffix(s[:i], ";base64") {
			return &ImageFieldError{"image data URL must be base64"}
		}
		s = s[i+1:]
	}
	out, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return &ImageFieldError{"image is not valid base64"}
	}
	*b = out
	return nil
}

// ImageFieldError says what is wrong with an image field, naming no input.
type ImageFieldError struct{ Msg string }

func (e *ImageFieldError) Error() string { return e.Msg }

// DetectOptions choose the vocabulary and post-processing of a detection.
type DetectOptions struct {
	// Categories to detect (1–128 characters each, deduplicated). Give these or Vocabulary; neither means the model's default vocabulary. An empty list is answered 422 empty-vocabulary.
	Categories []string `json:"categories,omitempty" example:"dog,red umbrella,mug"`
	// Vocabulary names a stored vocabulary (PUT /v1/vocabularies/{name}).
	Vocabulary string `json:"vocabulary,omitempty" example:"kitchen"`
	// Synonyms: several names reported under one label; keys must be categories.
	Synonyms map[string][]string `json:"synonyms,omitempty"`
	// Negatives absorb look-alikes and are never reported.
	Negatives []string `json:"negatives,omitempty" example:"bowl"`
	// Thresholds are per-category score thresholds; keys must be categories.
	Thresholds map[string]float32 `json:"thresholds,omitempty"`
	// Exemplars define categories by example crops: a label that is also one of categories gains exemplars, any other label is a category defined by its exemplars alone (categories may then be left out). Models without an image encoder answer 422 exemplars-unsupported.
	Exemplars []ExemplarCategory `json:"exemplars,omitempty"`
	// ScoreThreshold is the minimum score of a reported detection (default: the model's).
	ScoreThreshold *float32 `json:"score_threshold,omitempty" example:"0.3" minimum:"0" maximum:"1"`
	// MaxDetections per image (default: the model's; at most the server's cap, 300 by default).
	MaxDetections *int `json:"max_detections,omitempty" example:"100" minimum:"1"`
	// NMSIoU is the IoU above which the lower-scored box of a label is dropped.
	NMSIoU *float32 `json:"nms_iou,omitempty" example:"0.5" minimum:"0" maximum:"1"`
	// Head chooses the classifier: ensemble (default), text or image.
	Head string `json:"head,omitempty" enums:"ensemble,text,image" example:"ensemble"`
	// RunnersUp is how many runner-up labels to report per detection (default 3, at most 5).
	RunnersUp *int `json:"runners_up,omitempty" example:"3" minimum:"0"`
	// LabelsPerBox is how many labels one region may be reported with, each as a
	// detection of its own (default: the model's, 1 for the bundled one; at most
	// the server's cap, 20 by default). Above 1 it is the per-class output that
	// COCO-style evaluation expects.
	LabelsPerBox *int `json:"labels_per_box,omitempty" example:"1" minimum:"1"`
	// Scores chooses what a score is a probability over: "stable" (default for
	// models with a category list) scores each name against the background and
	// the model's own category list, so a name's score on a box does not move
	// when other names are added or removed; "softmax" is ViLD's softmax over
	// the background and this request's names, which falls as similar names
	// are added. docs/api.md "What a score means".
	Scores string `json:"scores,omitempty" enums:"stable,softmax" example:"stable"`
	// Masks asks for each detection's instance mask: "rle" (mask, COCO RLE with compressed string counts, as pycocotools) or "polygon" (polygons, the mask's outer contours). Models without a mask head answer 422 masks-unsupported.
	Masks string `json:"masks,omitempty" enums:"rle,polygon" example:"rle"`
}

// Exemplar is one example crop of a category: an image and a box in its pixels.
type Exemplar struct {
	// Image is one base64-encoded image (JPEG, PNG, GIF or WebP), at most 4 MiB decoded.
	Image Base64Image `json:"image" swaggertype:"string" format:"byte"`
	// Box is [x1, y1, x2, y2] in the image's pixels (after EXIF orientation): inside the image, each side at least 2 px.
	Box [4]float32 `json:"box" example:"12,40,96,120"`
}

// ExemplarCategory defines a category by example crops, or by their
// embeddings as a stored vocabulary returns them.
type ExemplarCategory struct {
	// Label is reported for detections of this category (1–128 characters).
	Label string `json:"label" example:"dango"`
	// Exemplars are example crops: 1–8 per category with embeddings, 32 per request or vocabulary in all.
	Exemplars []Exemplar `json:"exemplars,omitempty"`
	// Embeddings are exemplar embeddings as GET /v1/vocabularies/{name} returns them (the model's embedding_dim values each), with or instead of exemplars.
	Embeddings [][]float32 `json:"embeddings,omitempty"`
}

// VocabularyRequest is the body of PUT /v1/vocabularies/{name}: a vocabulary
// whose exemplar categories may carry images; the server stores their
// embeddings, not the images (vocabulary.Spec).
type VocabularyRequest struct {
	// Categories are the labels reported (1–128 characters each); may be left out when exemplars define the categories.
	Categories []string `json:"categories,omitempty" example:"mug,kettle,teapot"`
	// Synonyms map a category to further names reported under its label.
	Synonyms map[string][]string `json:"synonyms,omitempty"`
	// Negatives absorb look-alikes and are never reported.
	Negatives []string `json:"negatives,omitempty" example:"bowl"`
	// Thresholds are per-category minimum scores in [0, 1].
	Thresholds map[string]float32 `json:"thresholds,omitempty"`
	// Templates replace the model's prompt templates; each holds "{}" once.
	Templates []string `json:"templates,omitempty" example:"a photo of a {}."`
	// Exemplars define categories by example crops (see DetectOptions.exemplars).
	Exemplars []ExemplarCategory `json:"exemplars,omitempty"`
}

// DetectRequest is the JSON body of POST /v1/detect: one image or a batch.
type DetectRequest struct {
	// Image is one base64-encoded image (JPEG, PNG, GIF or WebP).
	Image Base64Image `json:"image,omitempty" swaggertype:"string" format:"byte"`
	// Images is a batch of base64-encoded images; the answer has one result each.
	Images []Base64Image `json:"images,omitempty" swaggertype:"array,string" format:"byte"`
	DetectOptions
}

// ImageRequest is the JSON body of POST /v1/images.
type ImageRequest struct {
	Image Base64Image `json:"image" swaggertype:"string" format:"byte"`
}

// ImageSize is an image's size in pixels.
type ImageSize struct {
	Width  int `json:"width" example:"640"`
	Height int `json:"height" example:"480"`
}

// Timings are per-stage wall times in milliseconds.
type Timings struct {
	Queue      float64 `json:"queue"`
	Decode     float64 `json:"decode"`
	Preprocess float64 `json:"preprocess"`
	Backbone   float64 `json:"backbone"`
	Proposals  float64 `json:"proposals"`
	RoIAlign   float64 `json:"roi_align"`
	BoxHead    float64 `json:"box_head"`
	// Crops: the teacher's crops of the best regions (models whose ensemble
	// consults them, docs/api.md "Heads").
	Crops   float64 `json:"crops,omitempty"`
	Scoring float64 `json:"scoring"`
	// Masks: mask RoIAlign, the mask head, paste and encoding (with "masks" only).
	Masks float64 `json:"masks,omitempty"`
	Total float64 `json:"total"`
}

// ImageResult is the outcome for one image of a batch: detections or a problem.
type ImageResult struct {
	Image *ImageSize `json:"image,omitempty"`
	// Detections of this image: always present, [] when nothing was found or the image failed.
	Detections []detector.Detection `json:"detections"`
	TimingsMS  *Timings             `json:"timings_ms,omitempty"`
	Error      *Problem             `json:"error,omitempty"`
}

// MarshalJSON writes detections as [] when there are none.
func (r ImageResult) MarshalJSON() ([]byte, error) {
	type plain ImageResult // the fields without this method
	if r.Detections == nil {
		r.Detections = []detector.Detection{}
	}
	return json.Marshal(plain(r))
}

// DetectResponse answers POST /v1/detect. A single image fills image,
// detections and timings_ms; a batch (images) fills results, one per image.
// Its JSON (MarshalJSON) always carries detections for a single image, [] when
// there are none, and never for a batch.
type DetectResponse struct {
	Model            string     `json:"model" example:"pictogram-vild-small@3f2a9c1b"`
	VocabularyDigest string     `json:"vocabulary_digest" example:"sha256:9b1c..."`
	Image            *ImageSize `json:"image,omitempty"`
	// Detections of a single image: always present, [] when nothing was found. Absent from a batch answer (see results).
	Detections []detector.Detection `json:"detections"`
	TimingsMS  *Timings             `json:"timings_ms,omitempty"`
	// Results of a batch (images), one per image in order. Absent for a single image.
	Results []ImageResult `json:"results,omitempty"`
}

// MarshalJSON writes detections for a single image ([] for none) and leaves
// them out of a batch answer, which carries results instead.
func (r DetectResponse) MarshalJSON() ([]byte, error) {
	type plain DetectResponse // the fields without this method
	out := struct {
		plain
		Detections *[]detector.Detection `json:"detections,omitempty"` // shadows plain's
	}{plain: plain(r)}
	if r.Results == nil {
		ds := r.Detections
		if ds == nil {
			ds = []detector.Detection{}
		}
		out.Detections = &ds
	}
	return json.Marshal(out)
}

// ImageSession answers POST /v1/images and GET /v1/images/{id}.
type ImageSession struct {
	ID        string    `json:"id" example:"4f9c2a7e0b1d4c3a8e6f5d2c1b0a9f8e"`
	Image     ImageSize `json:"image"`
	Regions   int       `json:"regions" example:"300"`
	Model     string    `json:"model"`
	ExpiresAt time.Time `json:"expires_at"`
	TimingsMS *Timings  `json:"timings_ms,omitempty"`
}

// VocabularyList answers GET /v1/vocabularies.
type VocabularyList struct {
	Vocabularies []vocabulary.Summary `json:"vocabularies"`
	// Unavailable are stored vocabularies whose files could not be loaded at start (set aside, not served); [] when none. Writing one of these names again stores it anew.
	Unavailable []vocabulary.Unavailable `json:"unavailable"`
}

// TextEmbeddingRequest is the body of POST /v1/embeddings/text.
type TextEmbeddingRequest struct {
	// Texts to embed (1–128 characters each; at most the per-request category cap).
	Texts []string `json:"texts" example:"mug,red umbrella"`
}

// TextEmbedding is one text's prompt-ensemble embedding.
type TextEmbedding struct {
	Text      string    `json:"text" example:"mug"`
	Embedding []float32 `json:"embedding"`
}

// TextEmbeddingResponse answers POST /v1/embeddings/text.
type TextEmbeddingResponse struct {
	Model      string          `json:"model"`
	Dim        int             `json:"dim" example:"256"`
	Embeddings []TextEmbedding `json:"embeddings"`
}

// ModelCategory is one of the categories a model was trained or evaluated on.
type ModelCategory struct {
	Name string `json:"name" example:"raccoon"`
	// Split is base (boxed in training) or novel (never boxed: found through its text embedding alone).
	Split string `json:"split" enums:"base,novel" example:"base"`
	// Synonyms are further names of the category; a class named by one counts as the category's split. Absent when none.
	Synonyms []string `json:"synonyms,omitempty" example:"trash panda"`
}

// Model describes the served model bundle. Its categories are set with
// SetCategories, which also fills the name lists the server builds
// vocabularies with.
type Model struct {
	ID           string `json:"id" example:"pictogram-vild-small@3f2a9c1b"`
	Name         string `json:"name" example:"pictogram-vild-small"`
	Digest       string `json:"digest" example:"sha256:3f2a9c1b..."`
	EmbeddingDim int    `json:"embedding_dim" example:"256"`
	// Exemplars says whether the model takes exemplar categories (it has an image encoder).
	Exemplars bool `json:"exemplars" example:"true"`
	// Masks says whether the model computes instance masks (it has a mask head).
	Masks bool `json:"masks" example:"true"`
	// Scores is the default of a request's "scores": stable (a model with a category list) or softmax.
	Scores    string   `json:"scores" enums:"stable,softmax" example:"stable"`
	Templates []string `json:"templates"`
	// The bundle's categories in its order, each with its split and synonyms; their names are the default vocabulary, used when a request names no categories.
	CategoryList []ModelCategory `json:"categories"`
	// Categories are CategoryList's names: the default vocabulary.
	Categories []string `json:"-"`
	// BaseCategories are the names that mark a class base
	// (vocabulary.BaseNames): the base categories and their synonyms.
	BaseCategories []string `json:"-"`
	// Defaults are the model's post-processing defaults.
	Defaults detector.Options `json:"-"`
}

// SetCategories sets CategoryList and the name lists derived from it,
// Categories and BaseCategories.
func (m *Model) SetCategories(cs []ModelCategory) {
	m.CategoryList = cs
	m.Categories, m.BaseCategories = nil, nil
	for _, c := range cs {
		m.Categories = append(m.Categories, c.Name)
		if c.Split == "base" {
			m.BaseCategories = append(m.BaseCategories, c.Name)
			m.BaseCategories = append(m.BaseCategories, c.Synonyms...)
		}
	}
}

// MarshalJSON writes categories as [] when there are none.
func (m Model) MarshalJSON() ([]byte, error) {
	type plain Model // the fields without this method
	if m.CategoryList == nil {
		m.CategoryList = []ModelCategory{}
	}
	return json.Marshal(plain(m))
}

// ModelList answers GET /v1/models.
type ModelList struct {
	Models []Model `json:"models"`
}

// Error is an error with an HTTP status, a problem type slug and a message that
// is safe to show the client; the server answers it as a Problem. Err, the
// cause, goes to the server's log only.
type Error struct {
	Status     int
	Slug       string
	Msg        string
	Err        error
	RetryAfter int // seconds; set on 503s
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Slug, e.Msg, e.Err)
	}
	return e.Slug + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf is an *Error without a cause.
func Errorf(status int, slug, format string, args ...any) *Error {
	return &Error{Status: status, Slug: slug, Msg: fmt.Sprintf(format, args...)}
}

// BadRequest is a 400 with a client-safe message and the cause for the log.
func BadRequest(slug, msg string, cause error) *Error {
	return &Error{Status: http.StatusBadRequest, Slug: slug, Msg: msg, Err: cause}
}
