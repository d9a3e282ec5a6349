package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/vild/vild/api"
)

// CreateImage registers an image (POST /v1/images): the server runs the
// backbone, proposals and region embeddings once and keeps them for
// DetectImage until the session expires (ExpiresAt) or is evicted. The image
// goes up as a multipart upload.
func (c *Client) CreateImage(ctx context.Context, image []byte) (*api.ImageSession, error) {
	body, contentType, err := imageForm(image, nil)
	if err != nil {
		return nil, err
	}
	cl := call{method: http.MethodPost, path: "/v1/images", body: body, contentType: contentType, changesState: true}
	var out api.ImageSession
	if err := c.doJSON(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetImage describes a registered image; an unknown or expired id is an
// *Error with slug image-not-found.
func (c *Client) GetImage(ctx context.Context, id string) (*api.ImageSession, error) {
	cl := call{method: http.MethodGet, path: "/v1/images/" + url.PathEscape(id)}
	var out api.ImageSession
	if err := c.doJSON(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteImage forgets a registered image.
func (c *Client) DeleteImage(ctx context.Context, id string) error {
	cl := call{method: http.MethodDelete, path: "/v1/images/" + url.PathEscape(id), changesState: true}
	resp, err := c.do(ctx, cl)
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// DetectImage scores a registered image's regions against opts' vocabulary
// without running the backbone again (the timings show scoring only).
func (c *Client) DetectImage(ctx context.Context, id string, opts api.DetectOptions) (*api.DetectResponse, error) {
	cl, err := jsonCall(http.MethodPost, "/v1/images/"+url.PathEscape(id)+"/detect", opts)
	if err != nil {
		return nil, err
	}
	var out api.DetectResponse
	if err := c.doJSON(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// doJSON runs cl and decodes its JSON answer into v.
func (c *Client) doJSON(ctx context.Context, cl call, v any) error {
	resp, err := c.do(ctx, cl)
	if err != nil {
		return err
	}
	return decode(resp, cl, v)
}
