package client

import (
	"context"
	"net/http"

	"github.com/vild/vild/api"
)

// EmbedTexts returns the prompt-ensemble text embedding of each text, in
// order (L2-normalised, the model's embedding size).
func (c *Client) EmbedTexts(ctx context.Context, texts []string) (*api.TextEmbeddingResponse, error) {
	cl, err := jsonCall(http.MethodPost, "/v1/embeddings/text", api.TextEmbeddingRequest{Texts: texts})
	if err != nil {
		return nil, err
	}
	var out api.TextEmbeddingResponse
	if err := c.doJSON(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Models describes the served model: id, digest, embedding size, prompt
// templates and its categories (the default vocabulary).
func (c *Client) Models(ctx context.Context) (*api.ModelList, error) {
	var out api.ModelList
	if err := c.doJSON(ctx, call{method: http.MethodGet, path: "/v1/models"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Livez is nil while the server process answers (GET /livez).
func (c *Client) Livez(ctx context.Context) error { return c.probe(ctx, "/livez") }

// Readyz is nil when the server takes traffic (GET /readyz), and an *Error
// with status 503 (slug not-ready) while it loads the model, drains or its
// shared store does not answer. It is not retried: it reports the state.
func (c *Client) Readyz(ctx context.Context) error { return c.probe(ctx, "/readyz") }

func (c *Client) probe(ctx context.Context, path string) error {
	resp, err := c.do(ctx, call{method: http.MethodGet, path: path, accept: "text/plain", noRetry: true})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}
