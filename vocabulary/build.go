package vocabulary

import (
	"context"
	"errors"
	"fmt"
	"image"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/internal/lru"
)

// Embedder turns names into L2-normalised text embeddings with the model's
// prompt templates (textbank.Bank satisfies it).
type Embedder interface {
	Embed(ctx context.Context, names []string) ([][]float32, error)
}

// TemplateEmbedder is implemented by embedders that can use a vocabulary's own
// prompt templates instead of the model's.
type TemplateEmbedder interface {
	EmbedTemplates(ctx context.Context, names, templates []string) ([][]float32, error)
}

// ErrTemplatesUnsupported: the spec has templates and the embedder takes none.
var ErrTemplatesUnsupported = errors.New("this model's text encoder does not take custom templates")

// ExemplarEmbedder is implemented by embedders that can also embed exemplars
// (the model has an image encoder): each box of a decoded image, in its
// pixels, becomes a unit embedding (exemplar.Encoder.Embed).
type ExemplarEmbedder interface {
	EmbedExemplars(ctx context.Context, img image.Image, boxes [][4]float32) ([][]float32, error)
}

// ErrExemplarsUnsupported: exemplars were given and the model has no image encoder.
var ErrExemplarsUnsupported = errors.New("this model has no image encoder, so it takes no exemplars: define categories by name")

// BaseNames returns the set Build marks classes base by: the model's base
// category names, compared case-insensitively.
func BaseNames(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[NormName(n)] = true
	}
	return m
}

// Build embeds a spec (categories, their synonyms under the category's label,
// negatives, per-category thresholds, templates, exemplars) into the
// detector's classes. base names the model's base categories (BaseNames). The
// spec should be canonical (Normalize); its digest becomes the vocabulary's.
//
// Exemplars (docs/exemplars.md): a label defined by exemplars alone is one
// class whose embedding is the unit mean of its exemplars' embeddings, never
// base (the detector was trained on names, not on image embeddings, so the
// ensemble leans on the image head for it); a named category with exemplars
// keeps one class for its name, whose embedding becomes the unit mean of the
// name's text embedding and the exemplars' mean (its synonyms stay text).
// When emb reports its dimension (Dim), exemplar embeddings of another length
// are refused.
func Build(ctx context.Context, emb Embedder, base map[string]bool, spec Spec) (*detector.Vocabulary, error) {
	var classes []detector.Class
	add := func(label, text string, negative bool) {
		classes = append(classes, detector.Class{
			Label: label, Text: text, Negative: negative,
			Base:      base[NormName(text)] || base[NormName(label)],
			Threshold: spec.Thresholds[label],
		})
	}
	named := map[string]bool{}
	for _, c := range spec.Categories {
		named[c] = true
		add(c, c, false)
		for _, s := range spec.Synonyms[c] {
			add(c, s, false)
		}
	}
	for _, e := range spec.Exemplars {
		if !named[e.Label] {
			for _, s := range spec.Synonyms[e.Label] {
				add(e.Label, s, false)
			}
		}
	}
	for _, n := range spec.Negatives {
		add(n, n, true)
	}
	var texts []string
	for _, c := range classes {
		texts = append(texts, c.Text)
	}
	blend := map[int][]float32{} // name class → its exemplars' mean
	for _, e := range spec.Exemplars {
		if d, ok := emb.(interface{ Dim() int }); ok && len(e.Embeddings) > 0 && len(e.Embeddings[0]) != d.Dim() {
			return nil, invalid(ErrInvalidExemplars, "exemplar embeddings have %d values, this model's %d", len(e.Embeddings[0]), d.Dim())
		}
		m := MeanEmbedding(e.Embeddings)
		if m == nil {
			return nil, invalid(ErrInvalidExemplars, "a category's exemplar embeddings cancel out")
		}
		if named[e.Label] {
			for i, c := range classes {
				if c.Label == e.Label && c.Text == e.Label {
					blend[i] = m
				}
			}
			continue
		}
		classes = append(classes, detector.Class{Label: e.Label, Embedding: m, Threshold: spec.Thresholds[e.Label]})
	}
	if len(classes) == 0 {
		return nil, detector.ErrEmptyVocabulary
	}
	if len(texts) > 0 {
		var embs [][]float32
		var err error
		if len(spec.Templates) > 0 {
			te, ok := emb.(TemplateEmbedder)
			if !ok {
				return nil, ErrTemplatesUnsupported
			}
			embs, err = te.EmbedTemplates(ctx, texts, spec.Templates)
		} else {
			embs, err = emb.Embed(ctx, texts)
		}
		if err != nil {
			return nil, fmt.Errorf("vocabulary: embed: %w", err)
		}
		if len(embs) != len(texts) {
			return nil, fmt.Errorf("vocabulary: embedder returned %d embeddings for %d names", len(embs), len(texts))
		}
		for i := range texts {
			classes[i].Embedding = embs[i]
			if m, ok := blend[i]; ok {
				if classes[i].Embedding = MeanEmbedding([][]float32{embs[i], m}); classes[i].Embedding == nil {
					return nil, invalid(ErrInvalidExemplars, "a category's exemplars cancel its name out")
				}
			}
		}
	}
	return &detector.Vocabulary{Classes: classes, Digest: spec.Digest()}, nil
}

// Builder builds vocabularies for one model and keeps the most recently used
// ones in memory by digest, so a spec is embedded once while it is in use.
// It is safe for concurrent use.
type Builder struct {
	emb   Embedder
	base  map[string]bool
	cache *lru.Cache[string, *detector.Vocabulary]
}

// NewBuilder returns a Builder over emb for a model with the given base
// category names, keeping up to cacheSize built vocabularies.
func NewBuilder(emb Embedder, baseCategories []string, cacheSize int) *Builder {
	return &Builder{emb: emb, base: BaseNames(baseCategories), cache: lru.New[string, *detector.Vocabulary](cacheSize, 0)}
}

// Forget drops the built vocabulary of a digest (a stored vocabulary's ETag)
// from memory, as when another replica replaced or deleted it.
func (b *Builder) Forget(digest string) { b.cache.Remove(digest) }

// TakesExemplars reports whether the Builder's embedder embeds exemplars.
func (b *Builder) TakesExemplars() bool {
	_, ok := b.emb.(ExemplarEmbedder)
	return ok
}

// EmbedExemplars embeds the boxes of img with the Builder's embedder, or
// answers ErrExemplarsUnsupported when it embeds no exemplars.
func (b *Builder) EmbedExemplars(ctx context.Context, img image.Image, boxes [][4]float32) ([][]float32, error) {
	e, ok := b.emb.(ExemplarEmbedder)
	if !ok {
		return nil, ErrExemplarsUnsupported
	}
	return e.EmbedExemplars(ctx, img, boxes)
}

// Build is Build with the Builder's embedder and base names, cached by digest.
func (b *Builder) Build(ctx context.Context, spec Spec) (*detector.Vocabulary, error) {
	if v, _, ok := b.cache.Get(spec.Digest()); ok {
		return v, nil
	}
	v, err := Build(ctx, b.emb, b.base, spec)
	if err != nil {
		return nil, err
	}
	b.cache.Put(v.Digest, v)
	return v, nil
}
