package request

import (
	"context"
	"errors"
	"fmt"
	"image"
	"net/http"

	"github.com/vild/vild/api"
	"github.com/vild/vild/exemplar"
	"github.com/vild/vild/vocabulary"
)

// MaxExemplarImageBytes caps one exemplar image (its bytes after base64).
const MaxExemplarImageBytes = 4 << 20

// ImageDecoder decodes untrusted image bytes within the server's limits
// (imageio.Decoder).
type ImageDecoder interface {
	Decode(ctx context.Context, data []byte) (image.Image, error)
}

var errExemplarsUnsupported = api.Errorf(http.StatusUnprocessableEntity, "exemplars-unsupported",
	"this model has no image encoder, so it takes no exemplars: define categories by name (GET /v1/models says exemplars: false)")

func invalidExemplars(format string, args ...any) *api.Error {
	return api.BadRequest("invalid-exemplars", fmt.Sprintf(format, args...), nil)
}

// exemplars turns a request's exemplar categories into a spec's: each
// exemplar image decoded and its box embedded by the model's image encoder,
// embeddings given as such kept (vocabulary.Normalize checks them). Counts
// and image sizes are checked before anything is decoded.
func (v *Vocabularies) exemplars(ctx context.Context, in []api.ExemplarCategory) ([]vocabulary.ExemplarCategory, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if !v.Builder.TakesExemplars() {
		return nil, errExemplarsUnsupported // embeddings given as such too: they would mean nothing to this model
	}
	total := 0
	for _, c := range in {
		n := len(c.Exemplars) + len(c.Embeddings)
		if n == 0 || n > vocabulary.MaxExemplarsPerCategory {
			return nil, invalidExemplars("each exemplar category has 1 to %d exemplars (images and embeddings together)", vocabulary.MaxExemplarsPerCategory)
		}
		if total += n; total > vocabulary.MaxExemplars {
			return nil, invalidExemplars("at most %d exemplars in all", vocabulary.MaxExemplars)
		}
		for _, e := range c.Exemplars {
			if len(e.Image) == 0 {
				return nil, api.BadRequest("missing-image", "an exemplar image is empty", nil)
			}
			if len(e.Image) > MaxExemplarImageBytes {
				return nil, invalidExemplars("each exemplar image is at most %d bytes", MaxExemplarImageBytes)
			}
		}
	}
	out := make([]vocabulary.ExemplarCategory, len(in))
	for i, c := range in {
		out[i] = vocabulary.ExemplarCategory{Label: c.Label, Embeddings: append([][]float32(nil), c.Embeddings...)}
		for _, e := range c.Exemplars {
			if v.Decoder == nil {
				return nil, errExemplarsUnsupported
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			img, err := v.Decoder.Decode(ctx, e.Image)
			if err != nil {
				return nil, err // imageio's errors: the translator's corrupt-image, unsupported-image, image-too-large
			}
			emb, err := v.Builder.EmbedExemplars(ctx, img, [][4]float32{e.Box})
			switch {
			case errors.Is(err, vocabulary.ErrExemplarsUnsupported):
				return nil, errExemplarsUnsupported
			case errors.Is(err, exemplar.ErrBox):
				return nil, invalidExemplars("%s", err.Error())
			case err != nil:
				return nil, fmt.Errorf("request: embed exemplar: %w", err)
			}
			out[i].Embeddings = append(out[i].Embeddings, emb[0])
		}
	}
	return out, nil
}

// StoredSpec is the spec PUT /v1/vocabularies/{name} stores for req: its
// exemplars embedded, normalised within the stored vocabularies' limits.
func (v *Vocabularies) StoredSpec(ctx context.Context, req api.VocabularyRequest) (vocabulary.Spec, error) {
	ex, err := v.exemplars(ctx, req.Exemplars)
	if err != nil {
		return vocabulary.Spec{}, err
	}
	return vocabulary.Normalize(vocabulary.Spec{Categories: req.Categories, Synonyms: req.Synonyms, Negatives: req.Negatives,
		Thresholds: req.Thresholds, Templates: req.Templates, Exemplars: ex}, v.Limits(v.MaxStoredNames))
}
