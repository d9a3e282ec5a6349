package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// Format is the manifest format this package reads.
const Format = "vild-bundle/1"

// MaxCropRegions bounds embedding.crops.regions: each region costs one image
// encoder pass per crop scale.
const MaxCropRegions = 1000

// Manifest is manifest.json: every number the Go pipeline needs. The field
// meanings are defined in docs/bundle.md.
type Manifest struct {
	Format      string          `json:"format"`
	Name        string          `json:"name"`
	Input       Input           `json:"input"`
	FPN         FPN             `json:"fpn"`
	Anchors     Anchors         `json:"anchors"`
	RPN         RPN             `json:"rpn"`
	RoIAlign    RoIAlign        `json:"roi_align"`
	BoxHead     BoxHead         `json:"box_head"`
	Embedding   Embedding       `json:"embedding"`
	Postprocess Postprocess     `json:"postprocess"`
	Text        Text            `json:"text"`
	Categories  []Category      `json:"categories"`
	Training    json.RawMessage `json:"training,omitempty"`
	// ImageEncoder is the optional mini-CLIP image tower for exemplar
	// categories; nil when the bundle has none.
	ImageEncoder *ImageEncoder `json:"image_encoder,omitempty"`
	// MaskHead is the optional class-agnostic Mask R-CNN mask head; nil
	// when the bundle has none (a request for masks then answers 422).
	MaskHead *MaskHead         `json:"mask_head,omitempty"`
	SHA256   map[string]string `json:"sha256"`
}

// Input says how an image becomes the backbone's input tensor.
type Input struct {
	MaxSide       int        `json:"max_side"`
	SizeDivisible int        `json:"size_divisible"`
	Mean          [3]float32 `json:"mean"`
	Std           [3]float32 `json:"std"`
	Resize        string     `json:"resize"`
}

// FPN describes the feature pyramid levels, finest first.
type FPN struct {
	Channels int     `json:"channels"`
	Levels   []Level `json:"levels"`
}

// Level is one FPN level.
type Level struct {
	Name        string    `json:"name"`
	Stride      int       `json:"stride"`
	AnchorSizes []float32 `json:"anchor_sizes"`
	RPN         bool      `json:"rpn"` // the backbone emits rpn_logits_<name>, rpn_deltas_<name>
	RoI         bool      `json:"roi"` // the backbone emits feat_<name>, pooled by RoIAlign
}

// Anchors holds the anchor aspect ratios (height/width) shared by all levels.
type Anchors struct {
	AspectRatios []float32 `json:"aspect_ratios"`
}

// RPN holds torchvision RegionProposalNetwork.filter_proposals settings.
type RPN struct {
	PreNMSTopN      int        `json:"pre_nms_top_n"`
	PostNMSTopN     int        `json:"post_nms_top_n"`
	NMSIoU          float32    `json:"nms_iou"`
	MinSize         float32    `json:"min_size"`
	ScoreThreshold  float32    `json:"score_threshold"`
	BoxCoderWeights [4]float32 `json:"box_coder_weights"`
}

// RoIAlign holds torchvision MultiScaleRoIAlign settings.
type RoIAlign struct {
	OutputSize     int     `json:"output_size"`
	SamplingRatio  int     `json:"sampling_ratio"`
	Aligned        bool    `json:"aligned"`
	CanonicalScale float32 `json:"canonical_scale"`
	CanonicalLevel int     `json:"canonical_level"`
}

// BoxHead holds the class-agnostic box regression's coder weights.
type BoxHead struct {
	BoxCoderWeights [4]float32 `json:"box_coder_weights"`
}

// Embedding describes the shared text/region embedding space.
type Embedding struct {
	Dim            int     `json:"dim"`
	Temperature    float32 `json:"temperature"`
	EnsembleLambda float32 `json:"ensemble_lambda"`
	// ImageTemperature is the image head's softmax temperature; absent (0),
	// the image head uses Temperature as the text head does.
	ImageTemperature float32 `json:"image_temperature,omitempty"`
	// Crops, when present, makes the ensemble consult the teacher itself: the
	// image encoder (ImageEncoder, which it requires) embeds the crops of
	// each picture's first Crops.Regions regions, and their probabilities
	// join the ensemble's (docs/bundle.md "scoring").
	Crops *Crops `json:"crops,omitempty"`
}

// Crops says how the teacher's view of a region's crops joins the ensemble
// (docs/decisions/0031-teacher-crops-in-the-ensemble.md): the first Regions
// regions (proposal order, best objectness first) are cropped and embedded
// as exemplars are, without the modality shift; p_crop is the softmax over
// the vocabulary of their similarities divided by Temperature; a class's
// ensemble probability p becomes p^(1-μ)·p_crop^μ, μ = LambdaBase for base
// classes and LambdaNovel for the others. Scales and Mirror say which views
// of a region the teacher sees (absent: the image encoder's crop scales,
// unmirrored); their embeddings are summed and L2-normalised.
type Crops struct {
	Regions     int     `json:"regions"`
	Temperature float32 `json:"temperature"`
	LambdaBase  float32 `json:"lambda_base"`
	LambdaNovel float32 `json:"lambda_novel"`
	// Scales are the square crops of each region, as multiples of its
	// longer side (absent: ImageEncoder.CropScales).
	Scales []float32 `json:"scales,omitempty"`
	// Mirror embeds each crop mirrored left to right as well.
	Mirror bool `json:"mirror,omitempty"`
}

// Views returns the crop scales of the teacher's view of a region: the
// section's own, else the image encoder's (enc may be nil).
func (c *Crops) Views(enc *ImageEncoder) []float32 {
	if len(c.Scales) > 0 || enc == nil {
		return c.Scales
	}
	return enc.CropScales
}

// Postprocess holds the default detection post-processing settings.
type Postprocess struct {
	ScoreThreshold float32 `json:"score_threshold"`
	NMSIoU         float32 `json:"nms_iou"`
	MaxDetections  int     `json:"max_detections"`
	// LabelsPerBox is how many labels one region may be reported with (absent: 1).
	LabelsPerBox int `json:"labels_per_box,omitempty"`
}

// Text describes the text encoder's input: tokenizer, context and prompts.
type Text struct {
	Tokenizer     string   `json:"tokenizer"`
	ContextLength int      `json:"context_length"`
	Templates     []string `json:"templates"`
}

// ImageEncoder says how an exemplar (an image and a box) becomes an embedding
// in the embedding space: crop the box square at each of CropScales about its
// centre (RoIAlign, aligned, adaptive sampling, zeros outside the image) at
// InputSize × InputSize, normalise with Mean and Std, run File (with Mirror,
// on each crop mirrored left to right as well), sum the unit embeddings over
// the views and L2-normalise; then, when Shift names a file, add that [D]
// vector (the modality gap) and L2-normalise again (docs/bundle.md).
type ImageEncoder struct {
	File       string     `json:"file"`
	InputSize  int        `json:"input_size"`
	Mean       [3]float32 `json:"mean"`
	Std        [3]float32 `json:"std"`
	CropScales []float32  `json:"crop_scales"`
	// Mirror embeds each exemplar crop mirrored left to right as well.
	Mirror bool   `json:"mirror,omitempty"`
	Crop   string `json:"crop"`
	Shift  string `json:"shift,omitempty"`
	// Gap records how the exporter measured the shift (provenance only).
	Gap            json.RawMessage `json:"gap,omitempty"`
	MiniCLIPDigest string          `json:"miniclip_digest,omitempty"`
}

// MaskHead says how a detection's box becomes an instance mask: pool the
// FPN features over the box (scaled to the resized image) with RoIAlign
// (its own output size, the box RoIAlign's level mapping), run Graph
// (rois [N,C,S,S] -> mask_logits [N,1,M,M]), take the sigmoid, paste it into
// the original image as torchvision's paste_masks_in_image (padding 1) and
// keep the pixels whose probability is >= Threshold (docs/bundle.md).
type MaskHead struct {
	Graph         string   `json:"graph"`
	ClassAgnostic bool     `json:"class_agnostic"`
	RoIAlign      RoIAlign `json:"roi_align"`
	MaskSize      int      `json:"mask_size"`
	Threshold     float32  `json:"threshold"`
	Paste         string   `json:"paste"`
	Width         int      `json:"width,omitempty"`
	Layers        int      `json:"layers,omitempty"`
	FLOPsPerRoI   int64    `json:"flops_per_roi,omitempty"`
	Opset         int      `json:"opset,omitempty"`
	// Golden lists the parity files per golden case (golden/<case>/<file>)
	// and how many detections each covers.
	Golden struct {
		Files      []string       `json:"files"`
		Detections map[string]int `json:"detections"`
	} `json:"golden"`
	Training json.RawMessage `json:"training,omitempty"`
}

// Category is one of the categories the model was trained or evaluated on.
type Category struct {
	Name     string   `json:"name"`
	Split    string   `json:"split"` // "base" or "novel"
	Synonyms []string `json:"synonyms,omitempty"`
}

// ErrManifest is wrapped by every manifest parse or validation error.
var ErrManifest = errors.New("bundle: invalid manifest")

// ParseManifest decodes and validates manifest.json. Unknown fields are
// rejected so that a misspelt key is an error, not a silent default.
func ParseManifest(data []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrManifest)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks that every number is in range and the parts agree.
func (m *Manifest) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	finite := func(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

	if m.Format != Format {
		bad("format %q, want %q", m.Format, Format)
	}
	if m.Input.MaxSide < 1 || m.Input.MaxSide > 8192 {
		bad("input.max_side %d not in [1, 8192]", m.Input.MaxSide)
	}
	if m.Input.SizeDivisible < 1 || m.Input.SizeDivisible > 1024 {
		bad("input.size_divisible %d not in [1, 1024]", m.Input.SizeDivisible)
	}
	for i := range 3 {
		if !finite(m.Input.Mean[i]) {
			bad("input.mean[%d] not finite", i)
		}
		if !finite(m.Input.Std[i]) || m.Input.Std[i] <= 0 {
			bad("input.std[%d] must be > 0", i)
		}
	}
	if m.Input.Resize != "bilinear" {
		bad("input.resize %q, want \"bilinear\"", m.Input.Resize)
	}
	if m.FPN.Channels < 1 {
		bad("fpn.channels %d < 1", m.FPN.Channels)
	}
	if len(m.FPN.Levels) == 0 || len(m.FPN.Levels) > 8 {
		bad("fpn.levels: %d levels, want 1 to 8", len(m.FPN.Levels))
	}
	names := map[string]bool{}
	rpnLevels, roiLevels, prevStride := 0, 0, 0
	for i, l := range m.FPN.Levels {
		if l.Name == "" || names[l.Name] {
			bad("fpn.levels[%d]: empty or duplicate name %q", i, l.Name)
		}
		names[l.Name] = true
		if l.Stride < 1 || l.Stride&(l.Stride-1) != 0 || l.Stride <= prevStride {
			bad("fpn.levels[%d] %q: stride %d must be a power of two larger than the previous level's", i, l.Name, l.Stride)
		}
		prevStride = l.Stride
		if m.Input.SizeDivisible >= 1 && l.Stride >= 1 && m.Input.SizeDivisible%l.Stride != 0 {
			bad("fpn.levels[%d] %q: stride %d does not divide input.size_divisible %d", i, l.Name, l.Stride, m.Input.SizeDivisible)
		}
		if l.RPN {
			rpnLevels++
			if len(l.AnchorSizes) == 0 {
				bad("fpn.levels[%d] %q: rpn level without anchor_sizes", i, l.Name)
			}
		}
		for _, s := range l.AnchorSizes {
			if !finite(s) || s <= 0 {
				bad("fpn.levels[%d] %q: anchor size %v must be > 0", i, l.Name, s)
			}
		}
		if l.RoI {
			if roiLevels > 0 && !m.FPN.Levels[i-1].RoI {
				bad("fpn.levels[%d] %q: roi levels must be consecutive", i, l.Name)
			}
			roiLevels++
		}
	}
	if rpnLevels == 0 {
		bad("fpn.levels: no level has \"rpn\": true")
	}
	if roiLevels == 0 {
		bad("fpn.levels: no level has \"roi\": true")
	}
	if len(m.Anchors.AspectRatios) == 0 {
		bad("anchors.aspect_ratios is empty")
	}
	for _, r := range m.Anchors.AspectRatios {
		if !finite(r) || r <= 0 {
			bad("anchors.aspect_ratios: %v must be > 0", r)
		}
	}
	if m.RPN.PreNMSTopN < 1 || m.RPN.PostNMSTopN < 1 {
		bad("rpn.pre_nms_top_n %d and rpn.post_nms_top_n %d must be >= 1", m.RPN.PreNMSTopN, m.RPN.PostNMSTopN)
	}
	if !(m.RPN.NMSIoU > 0 && m.RPN.NMSIoU <= 1) {
		bad("rpn.nms_iou %v not in (0, 1]", m.RPN.NMSIoU)
	}
	if !finite(m.RPN.MinSize) || m.RPN.MinSize < 0 {
		bad("rpn.min_size %v must be >= 0", m.RPN.MinSize)
	}
	if !(m.RPN.ScoreThreshold >= 0 && m.RPN.ScoreThreshold <= 1) {
		bad("rpn.score_threshold %v not in [0, 1]", m.RPN.ScoreThreshold)
	}
	for i := range 4 {
		if !finite(m.RPN.BoxCoderWeights[i]) || m.RPN.BoxCoderWeights[i] <= 0 {
			bad("rpn.box_coder_weights[%d] must be > 0", i)
		}
		if !finite(m.BoxHead.BoxCoderWeights[i]) || m.BoxHead.BoxCoderWeights[i] <= 0 {
			bad("box_head.box_coder_weights[%d] must be > 0", i)
		}
	}
	if m.RoIAlign.OutputSize < 1 || m.RoIAlign.OutputSize > 64 {
		bad("roi_align.output_size %d not in [1, 64]", m.RoIAlign.OutputSize)
	}
	if m.RoIAlign.SamplingRatio < 0 || m.RoIAlign.SamplingRatio > 16 {
		bad("roi_align.sampling_ratio %d not in [0, 16]", m.RoIAlign.SamplingRatio)
	}
	if !finite(m.RoIAlign.CanonicalScale) || m.RoIAlign.CanonicalScale <= 0 {
		bad("roi_align.canonical_scale %v must be > 0", m.RoIAlign.CanonicalScale)
	}
	if m.Embedding.Dim < 1 || m.Embedding.Dim > 1<<16 {
		bad("embedding.dim %d not in [1, 65536]", m.Embedding.Dim)
	}
	if !finite(m.Embedding.Temperature) || m.Embedding.Temperature <= 0 {
		bad("embedding.temperature %v must be > 0", m.Embedding.Temperature)
	}
	if !finite(m.Embedding.ImageTemperature) || m.Embedding.ImageTemperature < 0 {
		bad("embedding.image_temperature %v must be > 0 (or absent)", m.Embedding.ImageTemperature)
	}
	if !(m.Embedding.EnsembleLambda >= 0 && m.Embedding.EnsembleLambda <= 1) {
		bad("embedding.ensemble_lambda %v not in [0, 1]", m.Embedding.EnsembleLambda)
	}
	if c := m.Embedding.Crops; c != nil {
		if m.ImageEncoder == nil {
			bad("embedding.crops needs an image_encoder to embed the crops")
		}
		if c.Regions < 1 || c.Regions > MaxCropRegions {
			bad("embedding.crops.regions %d not in [1, %d]", c.Regions, MaxCropRegions)
		}
		if !finite(c.Temperature) || c.Temperature <= 0 {
			bad("embedding.crops.temperature %v must be > 0", c.Temperature)
		}
		if !(c.LambdaBase >= 0 && c.LambdaBase <= 1) || !(c.LambdaNovel >= 0 && c.LambdaNovel <= 1) {
			bad("embedding.crops.lambda_base %v and lambda_novel %v must be in [0, 1]", c.LambdaBase, c.LambdaNovel)
		}
		if c.Scales != nil {
			checkCropScales("embedding.crops.scales", c.Scales, bad)
		}
	}
	if !(m.Postprocess.ScoreThreshold >= 0 && m.Postprocess.ScoreThreshold <= 1) {
		bad("postprocess.score_threshold %v not in [0, 1]", m.Postprocess.ScoreThreshold)
	}
	if !(m.Postprocess.NMSIoU > 0 && m.Postprocess.NMSIoU <= 1) {
		bad("postprocess.nms_iou %v not in (0, 1]", m.Postprocess.NMSIoU)
	}
	if m.Postprocess.MaxDetections < 1 {
		bad("postprocess.max_detections %d < 1", m.Postprocess.MaxDetections)
	}
	if m.Postprocess.LabelsPerBox < 0 {
		bad("postprocess.labels_per_box %d < 0", m.Postprocess.LabelsPerBox)
	}
	if m.Text.Tokenizer != "clip-bpe" {
		bad("text.tokenizer %q, want \"clip-bpe\"", m.Text.Tokenizer)
	}
	if m.Text.ContextLength < 3 || m.Text.ContextLength > 4096 {
		bad("text.context_length %d not in [3, 4096]", m.Text.ContextLength)
	}
	if len(m.Text.Templates) == 0 {
		bad("text.templates is empty")
	}
	for i, t := range m.Text.Templates {
		if strings.Count(t, "{}") != 1 {
			bad("text.templates[%d] %q must hold \"{}\" exactly once", i, t)
		}
	}
	seen := map[string]bool{}
	for i, c := range m.Categories {
		if strings.TrimSpace(c.Name) == "" || seen[c.Name] {
			bad("categories[%d]: empty or duplicate name %q", i, c.Name)
		}
		seen[c.Name] = true
		if c.Split != "base" && c.Split != "novel" {
			bad("categories[%d] %q: split %q, want \"base\" or \"novel\"", i, c.Name, c.Split)
		}
	}
	if e := m.ImageEncoder; e != nil {
		if e.File != ImageEncoderFile {
			bad("image_encoder.file %q, want %q", e.File, ImageEncoderFile)
		} else if _, ok := m.SHA256[e.File]; !ok {
			bad("sha256: no checksum for %s", e.File)
		}
		if e.InputSize < 8 || e.InputSize > 1024 {
			bad("image_encoder.input_size %d not in [8, 1024]", e.InputSize)
		}
		for i := range 3 {
			if !finite(e.Mean[i]) {
				bad("image_encoder.mean[%d] not finite", i)
			}
			if !finite(e.Std[i]) || e.Std[i] <= 0 {
				bad("image_encoder.std[%d] must be > 0", i)
			}
		}
		checkCropScales("image_encoder.crop_scales", e.CropScales, bad)
		if e.Shift != "" {
			if _, ok := m.SHA256[e.Shift]; !ok || !validPath(e.Shift) {
				bad("image_encoder.shift %q: not a checksummed file of the bundle", e.Shift)
			}
		}
		if e.Crop != "square" {
			bad("image_encoder.crop %q, want \"square\"", e.Crop)
		}
	}
	if h := m.MaskHead; h != nil {
		if h.Graph != MaskHeadFile {
			bad("mask_head.graph %q, want %q", h.Graph, MaskHeadFile)
		} else if _, ok := m.SHA256[h.Graph]; !ok {
			bad("sha256: no checksum for %s", h.Graph)
		}
		if !h.ClassAgnostic {
			bad("mask_head.class_agnostic must be true")
		}
		if a := h.RoIAlign; a.OutputSize < 1 || a.OutputSize > 64 || a.SamplingRatio < 0 || a.SamplingRatio > 16 ||
			!finite(a.CanonicalScale) || a.CanonicalScale <= 0 {
			bad("mask_head.roi_align: output_size %d, sampling_ratio %d, canonical_scale %v out of range",
				a.OutputSize, a.SamplingRatio, a.CanonicalScale)
		}
		if h.MaskSize < 2 || h.MaskSize > 256 {
			bad("mask_head.mask_size %d not in [2, 256]", h.MaskSize)
		}
		if !finite(h.Threshold) || h.Threshold <= 0 || h.Threshold >= 1 {
			bad("mask_head.threshold %v not in (0, 1)", h.Threshold)
		}
		if h.Paste != "torchvision paste_masks_in_image" {
			bad("mask_head.paste %q, want \"torchvision paste_masks_in_image\"", h.Paste)
		}
	}
	for name, sum := range m.SHA256 {
		if !validPath(name) {
			bad("sha256: bad file name %q", name)
		}
		if len(sum) != 64 || strings.Trim(strings.ToLower(sum), "0123456789abcdef") != "" {
			bad("sha256[%q]: %q is not a hex SHA-256", name, sum)
		}
	}
	for _, f := range RuntimeFiles {
		if _, ok := m.SHA256[f]; !ok {
			bad("sha256: no checksum for %s", f)
		}
	}
	if len(errs) > 0 {
		if len(errs) > 8 {
			errs = append(errs[:8], fmt.Sprintf("and %d more", len(errs)-8))
		}
		return fmt.Errorf("%w: %s", ErrManifest, strings.Join(errs, "; "))
	}
	return nil
}

// RPNLevels returns the levels with "rpn": true, in order.
func (m *Manifest) RPNLevels() []Level { return m.levels(func(l Level) bool { return l.RPN }) }

// RoILevels returns the levels with "roi": true, in order.
func (m *Manifest) RoILevels() []Level { return m.levels(func(l Level) bool { return l.RoI }) }

func (m *Manifest) levels(keep func(Level) bool) []Level {
	var out []Level
	for _, l := range m.FPN.Levels {
		if keep(l) {
			out = append(out, l)
		}
	}
	return out
}

// AnchorsPerLocation is A: anchors per feature-map location of a level.
func (m *Manifest) AnchorsPerLocation(l Level) int {
	return len(m.Anchors.AspectRatios) * len(l.AnchorSizes)
}

// BaseNames returns the set of base category names and their synonyms.
func (m *Manifest) BaseNames() map[string]bool {
	out := map[string]bool{}
	for _, c := range m.Categories {
		if c.Split != "base" {
			continue
		}
		out[c.Name] = true
		for _, s := range c.Synonyms {
			out[s] = true
		}
	}
	return out
}

// validPath reports whether name is a clean, relative, slash-separated path
// inside the bundle.
func validPath(name string) bool {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return false
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

// checkCropScales reports a list of crop scales that is not 1 to 4 finite
// multiples in [0.5, 4].
func checkCropScales(field string, scales []float32, bad func(string, ...any)) {
	if len(scales) == 0 || len(scales) > 4 {
		bad("%s: %d scales, want 1 to 4", field, len(scales))
	}
	for _, s := range scales {
		if math.IsNaN(float64(s)) || s < 0.5 || s > 4 {
			bad("%s: %v not in [0.5, 4]", field, s)
		}
	}
}
