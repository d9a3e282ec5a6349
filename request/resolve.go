package request

import (
	"context"
	"fmt"
	"net/http"

	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/vocabulary"
)

// Options turn a request's options into the detector's: the model's
// defaults, then the request's values checked against the server's caps.
type Options struct {
	Defaults detector.Options // the model's
	Caps     Caps
}

// Caps are the server's caps on a request's options.
type Caps struct {
	MaxDetections   int
	MaxRunnersUp    int
	MaxLabelsPerBox int
	Masks           bool // the model has a mask head
	// StableScores: the model has a reference vocabulary (a category list)
	// for "scores": "stable".
	StableScores bool
}

// Resolve checks req's options and fills the rest from the defaults.
func (o *Options) Resolve(req api.DetectOptions) (detector.Options, error) {
	d, cfg := o.Defaults, o.Caps
	opts := detector.Options{Head: detector.HeadEnsemble, ScoreThreshold: d.ScoreThreshold,
		NMSIoU: d.NMSIoU, MaxDetections: d.MaxDetections, RunnersUp: 3, LabelsPerBox: max(d.LabelsPerBox, 1),
		Scores: d.Scores}
	if d.Head != "" {
		opts.Head = d.Head
	}
	if opts.NMSIoU == 0 {
		opts.NMSIoU = 0.5
	}
	switch detector.Head(req.Head) {
	case "":
	case detector.HeadEnsemble, detector.HeadText, detector.HeadImage:
		opts.Head = detector.Head(req.Head)
	default:
		return opts, api.BadRequest("invalid-option", "head must be ensemble, text or image", nil)
	}
	if req.ScoreThreshold != nil {
		if t := *req.ScoreThreshold; !(t >= 0 && t <= 1) {
			return opts, api.BadRequest("invalid-option", "score_threshold must be in [0, 1]", nil)
		}
		opts.ScoreThreshold = *req.ScoreThreshold
	}
	if req.NMSIoU != nil {
		if t := *req.NMSIoU; !(t > 0 && t <= 1) {
			return opts, api.BadRequest("invalid-option", "nms_iou must be in (0, 1]", nil)
		}
		opts.NMSIoU = *req.NMSIoU
	}
	if req.MaxDetections != nil {
		if *req.MaxDetections < 1 {
			return opts, api.BadRequest("invalid-option", "max_detections must be at least 1", nil)
		}
		opts.MaxDetections = *req.MaxDetections
	}
	if opts.MaxDetections <= 0 || opts.MaxDetections > cfg.MaxDetections {
		opts.MaxDetections = cfg.MaxDetections
	}
	if req.RunnersUp != nil {
		if *req.RunnersUp < 0 || *req.RunnersUp > cfg.MaxRunnersUp {
			return opts, api.BadRequest("invalid-option", fmt.Sprintf("runners_up must be 0 to %d", cfg.MaxRunnersUp), nil)
		}
		opts.RunnersUp = *req.RunnersUp
	}
	if req.LabelsPerBox != nil {
		if *req.LabelsPerBox < 1 || *req.LabelsPerBox > cfg.MaxLabelsPerBox {
			return opts, api.BadRequest("invalid-option", fmt.Sprintf("labels_per_box must be 1 to %d", cfg.MaxLabelsPerBox), nil)
		}
		opts.LabelsPerBox = *req.LabelsPerBox
	}
	opts.LabelsPerBox = min(opts.LabelsPerBox, cfg.MaxLabelsPerBox)
	switch detector.Scores(req.Scores) {
	case "":
	case detector.ScoresSoftmax:
		opts.Scores = detector.ScoresSoftmax
	case detector.ScoresStable:
		if !cfg.StableScores {
			return opts, ErrScoresUnsupported
		}
		opts.Scores = detector.ScoresStable
	default:
		return opts, api.BadRequest("invalid-option", "scores must be stable or softmax", nil)
	}
	switch detector.Masks(req.Masks) {
	case detector.MasksNone:
	case detector.MasksRLE, detector.MasksPolygon:
		if !cfg.Masks {
			return opts, ErrMasksUnsupported
		}
		opts.Masks = detector.Masks(req.Masks)
	default:
		return opts, api.BadRequest("invalid-option", "masks must be rle or polygon", nil)
	}
	return opts, nil
}

// Vocabularies find a request's vocabulary: its own categories, a stored
// vocabulary, or the model's default; built (embedded) once per digest.
type Vocabularies struct {
	Builder  *vocabulary.Builder
	Store    vocabulary.Store // nil: no stored vocabularies
	Defaults []string         // the model's categories
	// MaxNames caps a request's names, MaxStoredNames a stored vocabulary's
	// (and the model's default one); MaxNameLength one name, in characters.
	MaxNames, MaxStoredNames, MaxNameLength int
	// Decoder decodes exemplar images; nil: exemplar images are refused
	// (exemplars-unsupported).
	Decoder ImageDecoder
}

// ErrNoStore answers a vocabulary route of a server that stores none.
var ErrNoStore = api.Errorf(http.StatusNotFound, "vocabulary-not-found", "this server stores no vocabularies")

// errEmptyCategories answers categories given as an empty list: leaving them
// out means the model's own vocabulary, an empty list means nothing to detect.
var errEmptyCategories = api.Errorf(http.StatusUnprocessableEntity, "empty-vocabulary",
	"categories is an empty list: give at least one category, or leave categories out for the model's own vocabulary")

// Resolve picks the vocabulary of o. Categories given (non-nil, even empty)
// differ from categories left out (nil): request keeps the difference.
func (v *Vocabularies) Resolve(ctx context.Context, o api.DetectOptions) (*detector.Vocabulary, error) {
	var spec vocabulary.Spec
	var err error
	switch {
	case o.Vocabulary != "" && o.Categories != nil:
		return nil, api.BadRequest("invalid-request", "give categories or vocabulary, not both", nil)
	case o.Vocabulary != "" && o.Exemplars != nil:
		return nil, api.BadRequest("invalid-request", "give exemplars or vocabulary, not both", nil)
	case o.Vocabulary != "":
		if o.Synonyms != nil || o.Negatives != nil || o.Thresholds != nil {
			return nil, api.BadRequest("invalid-request", "synonyms, negatives and thresholds belong to the stored vocabulary; send categories to override them", nil)
		}
		if v.Store == nil {
			return nil, ErrNoStore
		}
		e, err := v.Store.Get(ctx, o.Vocabulary)
		if err != nil {
			return nil, err
		}
		spec = e.Spec // stored specs are canonical
	case o.Categories != nil && len(o.Categories) == 0 && len(o.Exemplars) == 0:
		return nil, errEmptyCategories
	case len(o.Categories) > 0 || len(o.Exemplars) > 0:
		// Exemplars without categories: the exemplar categories alone.
		ex, err := v.exemplars(ctx, o.Exemplars)
		if err != nil {
			return nil, err
		}
		spec, err = vocabulary.Normalize(vocabulary.Spec{Categories: o.Categories, Synonyms: o.Synonyms,
			Negatives: o.Negatives, Thresholds: o.Thresholds, Exemplars: ex}, v.Limits(v.MaxNames))
		if err != nil {
			return nil, err
		}
	default:
		if len(v.Defaults) == 0 {
			return nil, api.BadRequest("invalid-category", "give categories or a vocabulary", nil)
		}
		spec, err = vocabulary.Normalize(vocabulary.Spec{Categories: v.Defaults, Synonyms: o.Synonyms,
			Negatives: o.Negatives, Thresholds: o.Thresholds}, v.Limits(v.MaxStoredNames))
	}
	if err != nil {
		return nil, err
	}
	return v.Builder.Build(ctx, spec)
}

// Limits are the normalisation limits with maxNames names.
func (v *Vocabularies) Limits(maxNames int) vocabulary.Limits {
	return vocabulary.Limits{MaxNames: maxNames, MaxNameLength: v.MaxNameLength}
}

// ErrScoresUnsupported answers a request for stable scores to a model
// without a category list to normalise them by.
var ErrScoresUnsupported = api.Errorf(http.StatusUnprocessableEntity, "scores-unsupported",
	"stable scores need the model's category list, which this model lacks; ask for \"scores\": \"softmax\"")

// ErrMasksUnsupported answers a request for masks to a model without a mask
// head.
var ErrMasksUnsupported = api.Errorf(http.StatusUnprocessableEntity, "masks-unsupported",
	"this model has no mask head, so it answers no masks (GET /v1/models says masks: false)")
