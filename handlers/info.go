package handlers

import (
	"fmt"
	"net/http"
)

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

// ModelList answers GET /v1/models.
type ModelList struct {
	Models []Model `json:"models"`
}

// embedText godoc
//
//	@Summary		Embed texts with the model's text encoder
//	@Description	Each text goes through the prompt-template ensemble; embeddings are L2-normalised.
//	@Tags			embeddings
//	@Accept			json
//	@Produce		json
//	@Param			request	body		TextEmbeddingRequest	true	"texts"
//	@Success		200		{object}	TextEmbeddingResponse
//	@Failure		400		{object}	Problem
//	@Failure		413		{object}	Problem
//	@Failure		415		{object}	Problem
//	@Router			/v1/embeddings/text [post]
func (h *api) embedText(w http.ResponseWriter, r *http.Request) error {
	var req TextEmbeddingRequest
	if err := h.readJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Texts) == 0 || len(req.Texts) > h.cfg.MaxCategories {
		return badRequest("invalid-request", fmt.Sprintf("texts must hold 1 to %d entries", h.cfg.MaxCategories), nil)
	}
	texts := make([]string, len(req.Texts))
	for i, t := range req.Texts {
		t, err := h.checkName("text", t)
		if err != nil {
			return err
		}
		texts[i] = t
	}
	embs, err := h.deps.Embedder.Embed(r.Context(), texts)
	if err != nil {
		return fmt.Errorf("handlers: embed texts: %w", err)
	}
	if len(embs) != len(texts) {
		return fmt.Errorf("handlers: embedder returned %d embeddings for %d texts", len(embs), len(texts))
	}
	resp := TextEmbeddingResponse{Model: h.deps.Model.ID, Dim: h.deps.Model.EmbeddingDim, Embeddings: make([]TextEmbedding, len(texts))}
	for i := range texts {
		resp.Embeddings[i] = TextEmbedding{Text: texts[i], Embedding: embs[i]}
		if resp.Dim == 0 {
			resp.Dim = len(embs[i])
		}
	}
	return writeJSON(w, http.StatusOK, resp)
}

// listModels godoc
//
//	@Summary	The served model: name, digest, embedding size, prompt templates, base categories
//	@Tags		models
//	@Produce	json
//	@Success	200	{object}	ModelList
//	@Router		/v1/models [get]
func (h *api) listModels(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, ModelList{Models: []Model{h.deps.Model}})
}
