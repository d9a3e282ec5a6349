package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"reflect"
	"strconv"

	"github.com/vild/vild/api"
)

// Detect finds objects of opts' categories (or its stored vocabulary, or the
// model's own categories when it names neither) in one image: JPEG, PNG, GIF
// or WebP bytes, sent as a multipart upload with the options as JSON (the
// multipart field "options"). The answer's Detections is [] when nothing was
// found.
func (c *Client) Detect(ctx context.Context, image []byte, opts api.DetectOptions) (*api.DetectResponse, error) {
	cl, err := detectCall(image, opts)
	if err != nil {
		return nil, err
	}
	var out api.DetectResponse
	if err := c.doJSON(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DetectBatch detects in several images at once (at most the server's
// --max-batch, 8 by default), sent as JSON with base64 images. The answer's
// Results has one entry per image, in order; an image that fails on its own
// (corrupt, too large) has its problem in Error while the others succeed.
func (c *Client) DetectBatch(ctx context.Context, images [][]byte, opts api.DetectOptions) (*api.DetectResponse, error) {
	req := api.DetectRequest{Images: make([]api.Base64Image, len(images)), DetectOptions: opts}
	for i, im := range images {
		req.Images[i] = im
	}
	cl, err := jsonCall(http.MethodPost, "/v1/detect", req)
	if err != nil {
		return nil, err
	}
	var out api.DetectResponse
	if err := c.doJSON(ctx, cl, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Annotated is a picture with the detections drawn on it.
type Annotated struct {
	Image       []byte // encoded as ContentType says
	ContentType string // image/png or image/jpeg
	Detections  int    // how many detections were drawn (X-Detections)
}

// maxAnnotatedBytes bounds an annotated picture read into memory.
const maxAnnotatedBytes = 256 << 20

// DetectAnnotated detects as Detect does and answers the picture with boxes
// and labels drawn, encoded as mediaType: "image/png" or "image/jpeg".
func (c *Client) DetectAnnotated(ctx context.Context, image []byte, opts api.DetectOptions, mediaType string) (*Annotated, error) {
	if mediaType != "image/png" && mediaType != "image/jpeg" {
		return nil, fmt.Errorf("client: annotated image type %q: want image/png or image/jpeg", mediaType)
	}
	cl, err := detectCall(image, opts)
	if err != nil {
		return nil, err
	}
	cl.accept = mediaType
	resp, err := c.do(ctx, cl)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnnotatedBytes+1))
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: reading the answer: %w", cl.method, cl.path, err)
	}
	if len(b) > maxAnnotatedBytes {
		return nil, fmt.Errorf("client: %s %s: the answer exceeds %d bytes", cl.method, cl.path, maxAnnotatedBytes)
	}
	out := &Annotated{Image: b, ContentType: resp.Header.Get("Content-Type")}
	if out.ContentType != mediaType {
		return nil, fmt.Errorf("client: %s %s: answered %q, asked for %s", cl.method, cl.path, out.ContentType, mediaType)
	}
	if n := resp.Header.Get("X-Detections"); n != "" {
		if out.Detections, err = strconv.Atoi(n); err != nil {
			return nil, fmt.Errorf("client: %s %s: X-Detections %q is not a number", cl.method, cl.path, n)
		}
	}
	return out, nil
}

// detectCall is POST /v1/detect with a multipart body: the image and, when
// any is set, the options as JSON.
func detectCall(image []byte, opts api.DetectOptions) (call, error) {
	var options []byte
	if !reflect.ValueOf(opts).IsZero() {
		var err error
		if options, err = json.Marshal(opts); err != nil {
			return call{}, fmt.Errorf("client: POST /v1/detect: encoding the options: %w", err)
		}
	}
	body, contentType, err := imageForm(image, options)
	if err != nil {
		return call{}, err
	}
	return call{method: http.MethodPost, path: "/v1/detect", body: body, contentType: contentType}, nil
}

// imageForm is a multipart/form-data body of the image (field "image") and
// options (field "options", when not nil).
func imageForm(image, options []byte) (body []byte, contentType string, err error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="image"; filename="image"`)
	h.Set("Content-Type", http.DetectContentType(image))
	pw, err := mw.CreatePart(h)
	if err == nil {
		_, err = pw.Write(image)
	}
	if err == nil && options != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="options"`)
		h.Set("Content-Type", "application/json")
		if pw, err = mw.CreatePart(h); err == nil {
			_, err = pw.Write(options)
		}
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		return nil, "", fmt.Errorf("client: building the multipart body: %w", err)
	}
	return buf.Bytes(), mw.FormDataContentType(), nil
}
