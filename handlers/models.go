package handlers

import (
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/api"
	"github.com/vild/vild/request"
	"github.com/vild/vild/vocabulary"
)

// embeddingsResource is /v1/embeddings.
type embeddingsResource struct {
	p        *problems
	in       request.Reader
	embedder vocabulary.Embedder
	model    api.Model
	cfg      Config
}

// Routes mounts the resource.
func (e embeddingsResource) Routes() chi.Router {
	r := chi.NewRouter()
	r.Post("/text", e.p.handle(e.text))
	return r
}

// text godoc
//
//	@Summary		Embed texts with the model's text encoder
//	@Description	Each text goes through the prompt-template ensemble; embeddings are L2-normalised.
//	@Tags			embeddings
//	@Accept			json
//	@Produce		json
//	@Param			request	body		api.TextEmbeddingRequest	true	"texts"
//	@Success		200		{object}	api.TextEmbeddingResponse
//	@Failure		400		{object}	api.Problem
//	@Failure		413		{object}	api.Problem
//	@Failure		415		{object}	api.Problem
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router			/v1/embeddings/text [post]
func (e embeddingsResource) text(w http.ResponseWriter, r *http.Request) error {
	var req api.TextEmbeddingRequest
	if err := e.in.JSON(w, r, &req); err != nil {
		return err
	}
	cfg := e.cfg
	if len(req.Texts) == 0 || len(req.Texts) > cfg.MaxCategories {
		return api.BadRequest("invalid-request", fmt.Sprintf("texts must hold 1 to %d entries", cfg.MaxCategories), nil)
	}
	texts := make([]string, len(req.Texts))
	for i, t := range req.Texts {
		t, err := vocabulary.CheckName("text", t, cfg.MaxCategoryLength)
		if err != nil {
			return err
		}
		texts[i] = t
	}
	embs, err := e.embedder.Embed(r.Context(), texts)
	if err != nil {
		return fmt.Errorf("handlers: embed texts: %w", err)
	}
	if len(embs) != len(texts) {
		return fmt.Errorf("handlers: embedder returned %d embeddings for %d texts", len(embs), len(texts))
	}
	resp := api.TextEmbeddingResponse{Model: e.model.ID, Dim: e.model.EmbeddingDim, Embeddings: make([]api.TextEmbedding, len(texts))}
	for i := range texts {
		resp.Embeddings[i] = api.TextEmbedding{Text: texts[i], Embedding: embs[i]}
		if resp.Dim == 0 {
			resp.Dim = len(embs[i])
		}
	}
	return writeJSON(w, http.StatusOK, resp)
}

// modelsResource is /v1/models.
type modelsResource struct {
	p     *problems
	model api.Model
}

// Routes mounts the resource.
func (m modelsResource) Routes() chi.Router {
	r := chi.NewRouter()
	r.Get("/", m.p.handle(m.list))
	return r
}

// list godoc
//
//	@Summary	The served model: name, digest, embedding size, prompt templates, base categories
//	@Tags		models
//	@Produce	json
//	@Success	200	{object}	api.ModelList
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router		/v1/models [get]
func (m modelsResource) list(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, api.ModelList{Models: []api.Model{m.model}})
}
