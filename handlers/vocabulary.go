package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vild/vild/detector"
)

// VocabularySpec is what a vocabulary holds: categories, synonyms, negatives,
// per-category thresholds and optional prompt templates.
type VocabularySpec struct {
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
}

const maxTemplates = 32

// normName is the key names are deduplicated and compared by.
func normName(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// checkName validates one name and returns it trimmed.
func (h *api) checkName(what, s string) (string, error) {
	s = strings.TrimSpace(s)
	n := utf8.RuneCountInString(s)
	if n == 0 || n > h.cfg.MaxCategoryLength {
		return "", badRequest("invalid-category", fmt.Sprintf("each %s must be 1 to %d characters", what, h.cfg.MaxCategoryLength), nil)
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return "", badRequest("invalid-category", fmt.Sprintf("a %s holds invalid UTF-8 or control characters", what), nil)
	}
	return s, nil
}

// normalize validates a spec and returns it canonical: names trimmed and
// deduplicated (case-insensitively, first spelling kept), maps keyed by the
// canonical category spelling. maxNames caps categories + synonyms + negatives.
func (h *api) normalize(spec VocabularySpec, maxNames int) (VocabularySpec, error) {
	var out VocabularySpec
	seen := map[string]string{}  // norm → role
	canon := map[string]string{} // norm category → spelling
	total := 0
	count := func() error {
		total++
		if total > maxNames {
			return badRequest("too-many-categories", fmt.Sprintf("at most %d names (categories, synonyms and negatives together)", maxNames), nil)
		}
		return nil
	}
	for _, c := range spec.Categories {
		c, err := h.checkName("category", c)
		if err != nil {
			return out, err
		}
		k := normName(c)
		if _, dup := seen[k]; dup {
			continue
		}
		if err := count(); err != nil {
			return out, err
		}
		seen[k] = "category"
		canon[k] = c
		out.Categories = append(out.Categories, c)
	}
	if len(out.Categories) == 0 {
		return out, badRequest("invalid-category", "give at least one category", nil)
	}
	keys := make([]string, 0, len(spec.Synonyms))
	for k := range spec.Synonyms {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		label, ok := canon[normName(k)]
		if !ok {
			return out, badRequest("invalid-synonyms", "every synonyms key must be one of the categories", nil)
		}
		for _, s := range spec.Synonyms[k] {
			s, err := h.checkName("synonym", s)
			if err != nil {
				return out, err
			}
			n := normName(s)
			if role, dup := seen[n]; dup {
				if role == "synonym:"+normName(label) {
					continue
				}
				return out, badRequest("invalid-synonyms", "a synonym is also a category, a negative or another category's synonym", nil)
			}
			if err := count(); err != nil {
				return out, err
			}
			seen[n] = "synonym:" + normName(label)
			if out.Synonyms == nil {
				out.Synonyms = map[string][]string{}
			}
			out.Synonyms[label] = append(out.Synonyms[label], s)
		}
	}
	for _, s := range spec.Negatives {
		s, err := h.checkName("negative", s)
		if err != nil {
			return out, err
		}
		n := normName(s)
		if role, dup := seen[n]; dup {
			if role == "negative" {
				continue
			}
			return out, badRequest("invalid-negatives", "a negative is also a category or a synonym", nil)
		}
		if err := count(); err != nil {
			return out, err
		}
		seen[n] = "negative"
		out.Negatives = append(out.Negatives, s)
	}
	for k, t := range spec.Thresholds {
		label, ok := canon[normName(k)]
		if !ok {
			return out, badRequest("invalid-thresholds", "every thresholds key must be one of the categories", nil)
		}
		if !(t >= 0 && t <= 1) {
			return out, badRequest("invalid-thresholds", "thresholds must be in [0, 1]", nil)
		}
		if out.Thresholds == nil {
			out.Thresholds = map[string]float32{}
		}
		out.Thresholds[label] = t
	}
	if len(spec.Templates) > maxTemplates {
		return out, badRequest("invalid-templates", fmt.Sprintf("at most %d templates", maxTemplates), nil)
	}
	for _, t := range spec.Templates {
		if strings.Count(t, "{}") != 1 || utf8.RuneCountInString(t) > 256 || !utf8.ValidString(t) {
			return out, badRequest("invalid-templates", "each template holds \"{}\" exactly once and at most 256 characters", nil)
		}
		out.Templates = append(out.Templates, t)
	}
	return out, nil
}

// digest is the content digest of a canonical spec (JSON with sorted map keys).
func digest(spec VocabularySpec) string {
	b, _ := json.Marshal(spec)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// embedVocabulary turns a canonical spec into a detector vocabulary, computing
// its text embeddings once per digest.
func (h *api) embedVocabulary(ctx context.Context, spec VocabularySpec) (*detector.Vocabulary, error) {
	if v, _, ok := h.vocabs.get(digest(spec)); ok {
		return v, nil
	}
	v, err := BuildVocabulary(ctx, h.deps.Embedder, h.base, spec)
	if err != nil {
		return nil, err
	}
	h.vocabs.put(v.Digest, v)
	return v, nil
}

// BaseNames returns the set BuildVocabulary marks classes base by: the
// model's base category names, compared case-insensitively.
func BaseNames(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[normName(n)] = true
	}
	return m
}

// BuildVocabulary embeds a vocabulary spec (categories, their synonyms under
// the category's label, negatives, per-category thresholds, templates) into
// the detector's classes. base names the model's base categories (BaseNames).
// The spec should be validated first; the HTTP layer does so.
func BuildVocabulary(ctx context.Context, emb Embedder, base map[string]bool, spec VocabularySpec) (*detector.Vocabulary, error) {
	var classes []detector.Class
	add := func(label, text string, negative bool) {
		classes = append(classes, detector.Class{
			Label: label, Text: text, Negative: negative,
			Base:      base[normName(text)] || base[normName(label)],
			Threshold: spec.Thresholds[label],
		})
	}
	for _, c := range spec.Categories {
		add(c, c, false)
		for _, s := range spec.Synonyms[c] {
			add(c, s, false)
		}
	}
	for _, n := range spec.Negatives {
		add(n, n, true)
	}
	if len(classes) == 0 {
		return nil, detector.ErrEmptyVocabulary
	}
	texts := make([]string, len(classes))
	for i, c := range classes {
		texts[i] = c.Text
	}
	var embs [][]float32
	var err error
	if len(spec.Templates) > 0 {
		te, ok := emb.(TemplateEmbedder)
		if !ok {
			return nil, errorf(http.StatusUnprocessableEntity, "templates-unsupported", "this model's text encoder does not take custom templates")
		}
		embs, err = te.EmbedTemplates(ctx, texts, spec.Templates)
	} else {
		embs, err = emb.Embed(ctx, texts)
	}
	if err != nil {
		return nil, fmt.Errorf("handlers: embed vocabulary: %w", err)
	}
	if len(embs) != len(texts) {
		return nil, fmt.Errorf("handlers: embedder returned %d embeddings for %d names", len(embs), len(texts))
	}
	for i := range classes {
		classes[i].Embedding = embs[i]
	}
	return &detector.Vocabulary{Classes: classes, Digest: digest(spec)}, nil
}

// resolveVocabulary picks the request's vocabulary: its categories, a stored
// vocabulary, or the model's default.
func (h *api) resolveVocabulary(ctx context.Context, o DetectOptions) (*detector.Vocabulary, error) {
	var spec VocabularySpec
	switch {
	case o.Vocabulary != "" && len(o.Categories) > 0:
		return nil, badRequest("invalid-request", "give categories or vocabulary, not both", nil)
	case o.Vocabulary != "":
		if o.Synonyms != nil || o.Negatives != nil || o.Thresholds != nil {
			return nil, badRequest("invalid-request", "synonyms, negatives and thresholds belong to the stored vocabulary; send categories to override them", nil)
		}
		if h.deps.Vocabularies == nil {
			return nil, errorf(http.StatusNotFound, "vocabulary-not-found", "this server stores no vocabularies")
		}
		v, err := h.deps.Vocabularies.Get(o.Vocabulary)
		if err != nil {
			return nil, err
		}
		spec = v.VocabularySpec // stored specs are canonical
	case len(o.Categories) > 0:
		var err error
		spec, err = h.normalize(VocabularySpec{Categories: o.Categories, Synonyms: o.Synonyms,
			Negatives: o.Negatives, Thresholds: o.Thresholds}, h.cfg.MaxCategories)
		if err != nil {
			return nil, err
		}
	default:
		if len(h.deps.Model.Categories) == 0 {
			return nil, badRequest("invalid-category", "give categories or a vocabulary", nil)
		}
		var err error
		spec, err = h.normalize(VocabularySpec{Categories: h.deps.Model.Categories, Synonyms: o.Synonyms,
			Negatives: o.Negatives, Thresholds: o.Thresholds}, h.cfg.MaxVocabularyCategories)
		if err != nil {
			return nil, err
		}
	}
	return h.embedVocabulary(ctx, spec)
}
