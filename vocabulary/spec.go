// Package vocabulary is what a detection is scored against, before and after
// embedding: a Spec (categories, synonyms, negatives, per-category thresholds,
// prompt templates) is normalised, given a content digest, embedded into the
// detector's classes (Builder) and stored by name (Store). It knows nothing of
// HTTP: its errors are sentinels that the server maps to problems.
package vocabulary

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Spec is what a vocabulary holds: categories, synonyms, negatives,
// per-category thresholds and optional prompt templates.
type Spec struct {
	// Categories are the labels reported (1–128 characters each).
	Categories []string `json:"categories" example:"mug,kettle,teapot"`
	// Synonyms map a category to further names reported under its label.
	Synonyms map[string][]string `json:"synonyms,omitempty"`
	// Negatives absorb look-alikes and are never reported.
	Negatives []string `json:"negatives,omitempty" example:"bowl"`
	// Thresholds are per-category minimum scores in [0, 1].
	Thresholds map[string]float32 `json:"thresholds,omitempty"`
	// Templates replace the model's prompt templates; each holds "{}" once.
	Templates []string `json:"templates,omitempty" example:"a photo of a {}."`
	// Exemplars define categories by example crops, kept as the image
	// encoder's embeddings (not the images). A label that is also one of
	// Categories keeps its name and gains the exemplars; any other label is a
	// category defined by its exemplars alone (docs/exemplars.md).
	Exemplars []ExemplarCategory `json:"exemplars,omitempty"`
}

// ExemplarCategory is a category's exemplars as embeddings.
type ExemplarCategory struct {
	// Label is reported for detections of this category (1–128 characters).
	Label string `json:"label" example:"dango"`
	// Embeddings of the exemplars, one per exemplar, unit length (renormalised when stored).
	Embeddings [][]float32 `json:"embeddings"`
}

// Limits on exemplars: per category, per spec (a request or a stored
// vocabulary), and an embedding's length.
const (
	MaxExemplarsPerCategory = 8
	MaxExemplars            = 32
	MaxEmbeddingDim         = 4096
)

// MaxTemplates caps a spec's prompt templates; MaxTemplateLength caps one, in characters.
const (
	MaxTemplates      = 32
	MaxTemplateLength = 256
)

// Limits bound a spec's names.
type Limits struct {
	MaxNames      int // categories + synonyms + negatives
	MaxNameLength int // characters of one name
}

// Kinds of invalid spec, each the Kind of an *InvalidError.
var (
	ErrInvalidName       = errors.New("invalid name")
	ErrTooManyNames      = errors.New("too many names")
	ErrInvalidSynonyms   = errors.New("invalid synonyms")
	ErrInvalidNegatives  = errors.New("invalid negatives")
	ErrInvalidThresholds = errors.New("invalid thresholds")
	ErrInvalidTemplates  = errors.New("invalid templates")
	ErrInvalidExemplars  = errors.New("invalid exemplars")
)

// InvalidError says what is wrong with a spec. Msg is written for the client
// and never echoes input; errors.Is matches Kind.
type InvalidError struct {
	Kind error
	Msg  string
}

func (e *InvalidError) Error() string { return e.Msg }
func (e *InvalidError) Unwrap() error { return e.Kind }

func invalid(kind error, format string, args ...any) *InvalidError {
	return &InvalidError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// NormName is the key names are deduplicated and compared by.
func NormName(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// CheckName validates one name (what says which: "category", "synonym", …)
// and returns it trimmed.
func CheckName(what, s string, maxLength int) (string, error) {
	s = strings.TrimSpace(s)
	n := utf8.RuneCountInString(s)
	if n == 0 || n > maxLength {
		return "", invalid(ErrInvalidName, "each %s must be 1 to %d characters", what, maxLength)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return "", invalid(ErrInvalidName, "a %s holds invalid UTF-8 or control characters", what)
	}
	return s, nil
}

// Normalize validates a spec and returns it canonical: names trimmed and
// deduplicated (case-insensitively, first spelling kept), maps keyed by the
// canonical category spelling.
func Normalize(spec Spec, lim Limits) (Spec, error) {
	n := normalizer{lim: lim, seen: map[string]string{}, canon: map[string]string{}}
	steps := []func(Spec) error{n.categories, n.exemplars, n.synonyms, n.negatives, n.thresholds, n.templates}
	for _, step := range steps {
		if err := step(spec); err != nil {
			return n.out, err
		}
	}
	return n.out, nil
}

// normalizer holds what Normalize's steps share.
type normalizer struct {
	lim   Limits
	out   Spec
	seen  map[string]string // norm name → role
	canon map[string]string // norm category → spelling
	total int
}

func (n *normalizer) count() error {
	n.total++
	if n.total > n.lim.MaxNames {
		return invalid(ErrTooManyNames, "at most %d names (categories, synonyms and negatives together)", n.lim.MaxNames)
	}
	return nil
}

func (n *normalizer) categories(spec Spec) error {
	for _, c := range spec.Categories {
		c, err := CheckName("category", c, n.lim.MaxNameLength)
		if err != nil {
			return err
		}
		k := NormName(c)
		if _, dup := n.seen[k]; dup {
			continue
		}
		if err := n.count(); err != nil {
			return err
		}
		n.seen[k] = "category"
		n.canon[k] = c
		n.out.Categories = append(n.out.Categories, c)
	}
	return nil
}

// exemplars checks the exemplar categories: each label once, a known
// category's or a new one (which counts as a name), 1 to
// MaxExemplarsPerCategory finite, non-zero embeddings of one length, stored
// at unit length. Then at least one category, named or by exemplars, must be
// there.
func (n *normalizer) exemplars(spec Spec) error {
	labels := map[string]bool{}
	total, dim := 0, 0
	for _, e := range spec.Exemplars {
		label, err := CheckName("exemplar label", e.Label, n.lim.MaxNameLength)
		if err != nil {
			return err
		}
		k := NormName(label)
		if labels[k] {
			return invalid(ErrInvalidExemplars, "each exemplars label appears once")
		}
		labels[k] = true
		if len(e.Embeddings) == 0 || len(e.Embeddings) > MaxExemplarsPerCategory {
			return invalid(ErrInvalidExemplars, "each exemplar category has 1 to %d exemplars", MaxExemplarsPerCategory)
		}
		if total += len(e.Embeddings); total > MaxExemplars {
			return invalid(ErrInvalidExemplars, "at most %d exemplars in all", MaxExemplars)
		}
		out := ExemplarCategory{Embeddings: make([][]float32, len(e.Embeddings))}
		for i, v := range e.Embeddings {
			if dim == 0 {
				dim = len(v)
			}
			if len(v) == 0 || len(v) > MaxEmbeddingDim || len(v) != dim {
				return invalid(ErrInvalidExemplars, "exemplar embeddings have one length, 1 to %d values", MaxEmbeddingDim)
			}
			if out.Embeddings[i] = unit(v); out.Embeddings[i] == nil {
				return invalid(ErrInvalidExemplars, "exemplar embeddings must be finite and not all zero")
			}
		}
		if c, ok := n.canon[k]; ok && n.seen[k] == "category" {
			out.Label = c // a named category gains exemplars
		} else {
			if err := n.count(); err != nil {
				return err
			}
			n.seen[k] = "category"
			n.canon[k] = label
			out.Label = label
		}
		n.out.Exemplars = append(n.out.Exemplars, out)
	}
	if len(n.out.Categories) == 0 && len(n.out.Exemplars) == 0 {
		return invalid(ErrInvalidName, "give at least one category (a name, or a label with exemplars)")
	}
	return nil
}

// unit returns v scaled to unit length, nil when it is not finite or zero. A
// vector within 1e-6 of unit length is kept as it is, so that normalising
// again changes nothing (a stored spec's digest is stable).
func unit(v []float32) []float32 {
	var sum float64
	for _, x := range v {
		sum += float64(x) * float64(x)
	}
	norm := math.Sqrt(sum)
	if norm == 0 || math.IsNaN(norm) || math.IsInf(norm, 0) {
		return nil
	}
	out := make([]float32, len(v))
	if math.Abs(norm-1) < 1e-6 {
		copy(out, v)
		return out
	}
	for i, x := range v {
		out[i] = float32(float64(x) / norm)
	}
	return out
}

// MeanEmbedding is the unit-length mean of vectors of one length (a
// category's embedding from its exemplars); nil when there are none or they
// cancel out.
func MeanEmbedding(vs [][]float32) []float32 {
	if len(vs) == 0 {
		return nil
	}
	sum := make([]float32, len(vs[0]))
	for _, v := range vs {
		for j, x := range v {
			sum[j] += x
		}
	}
	return unit(sum)
}

func (n *normalizer) synonyms(spec Spec) error {
	keys := make([]string, 0, len(spec.Synonyms))
	for k := range spec.Synonyms {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		label, ok := n.canon[NormName(k)]
		if !ok {
			return invalid(ErrInvalidSynonyms, "every synonyms key must be one of the categories")
		}
		for _, s := range spec.Synonyms[k] {
			s, err := CheckName("synonym", s, n.lim.MaxNameLength)
			if err != nil {
				return err
			}
			key := NormName(s)
			if role, dup := n.seen[key]; dup {
				if role == "synonym:"+NormName(label) {
					continue
				}
				return invalid(ErrInvalidSynonyms, "a synonym is also a category, a negative or another category's synonym")
			}
			if err := n.count(); err != nil {
				return err
			}
			n.seen[key] = "synonym:" + NormName(label)
			if n.out.Synonyms == nil {
				n.out.Synonyms = map[string][]string{}
			}
			n.out.Synonyms[label] = append(n.out.Synonyms[label], s)
		}
	}
	return nil
}

func (n *normalizer) negatives(spec Spec) error {
	for _, s := range spec.Negatives {
		s, err := CheckName("negative", s, n.lim.MaxNameLength)
		if err != nil {
			return err
		}
		key := NormName(s)
		if role, dup := n.seen[key]; dup {
			if role == "negative" {
				continue
			}
			return invalid(ErrInvalidNegatives, "a negative is also a category or a synonym")
		}
		if err := n.count(); err != nil {
			return err
		}
		n.seen[key] = "negative"
		n.out.Negatives = append(n.out.Negatives, s)
	}
	return nil
}

func (n *normalizer) thresholds(spec Spec) error {
	keys := make([]string, 0, len(spec.Thresholds))
	for k := range spec.Thresholds {
		keys = append(keys, k)
	}
	sort.Strings(keys) // errors, like the result, do not depend on map order
	for _, k := range keys {
		t := spec.Thresholds[k]
		label, ok := n.canon[NormName(k)]
		if !ok {
			return invalid(ErrInvalidThresholds, "every thresholds key must be one of the categories")
		}
		if !(t >= 0 && t <= 1) {
			return invalid(ErrInvalidThresholds, "thresholds must be in [0, 1]")
		}
		if _, dup := n.out.Thresholds[label]; dup {
			// "Red" and "red": which one wins would depend on map order.
			return invalid(ErrInvalidThresholds, "two thresholds keys name the same category")
		}
		if n.out.Thresholds == nil {
			n.out.Thresholds = map[string]float32{}
		}
		n.out.Thresholds[label] = t
	}
	return nil
}

func (n *normalizer) templates(spec Spec) error {
	if len(spec.Templates) > MaxTemplates {
		return invalid(ErrInvalidTemplates, "at most %d templates", MaxTemplates)
	}
	for _, t := range spec.Templates {
		if strings.Count(t, "{}") != 1 || utf8.RuneCountInString(t) > MaxTemplateLength || !utf8.ValidString(t) {
			return invalid(ErrInvalidTemplates, "each template holds \"{}\" exactly once and at most %d characters", MaxTemplateLength)
		}
		n.out.Templates = append(n.out.Templates, t)
	}
	return nil
}

// Digest is the content digest of a canonical spec (JSON with sorted map keys).
func (s Spec) Digest() string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
