package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/vild/vild/api"
	"github.com/vild/vild/vocabulary"
)

// ListVocabularies lists the stored vocabularies, and those whose stored
// files could not be loaded (Unavailable).
func (c *Client) ListVocabularies(ctx context.Context) (*api.VocabularyList, error) {
	var out api.VocabularyList
	if err := c.doJSON(ctx, call{method: http.MethodGet, path: "/v1/vocabularies"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetVocabulary returns a stored vocabulary with its ETag (Entry.ETag); an
// unknown name is an *Error with slug vocabulary-not-found.
func (c *Client) GetVocabulary(ctx context.Context, name string) (*vocabulary.Entry, error) {
	var out vocabulary.Entry
	if err := c.doJSON(ctx, call{method: http.MethodGet, path: vocabularyPath(name)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetVocabularyIfChanged returns the vocabulary when its ETag is no longer
// etag (If-None-Match), and changed false with no entry when it still is.
// An empty etag asks for the vocabulary whatever its ETag.
func (c *Client) GetVocabularyIfChanged(ctx context.Context, name, etag string) (e *vocabulary.Entry, changed bool, err error) {
	if etag == "" {
		e, err := c.GetVocabulary(ctx, name)
		return e, err == nil, err
	}
	cl := call{method: http.MethodGet, path: vocabularyPath(name), header: http.Header{"If-None-Match": {quoteETag(etag)}}}
	resp, err := c.do(ctx, cl)
	if err != nil {
		return nil, false, err
	}
	if resp.StatusCode == http.StatusNotModified {
		drain(resp)
		return nil, false, nil
	}
	var out vocabulary.Entry
	if err := decode(resp, cl, &out); err != nil {
		return nil, false, err
	}
	return &out, true, nil
}

// PutVocabulary creates or replaces a vocabulary; created tells which. The
// server checks and normalises spec (names trimmed and deduplicated) and
// embeds its names now. ifMatch, when not "", is the ETag the stored version
// must have ("*": any existing version); a mismatch is an *Error with slug
// precondition-failed.
func (c *Client) PutVocabulary(ctx context.Context, name string, spec vocabulary.Spec, ifMatch string) (e *vocabulary.Entry, created bool, err error) {
	cl, err := jsonCall(http.MethodPut, vocabularyPath(name), spec)
	if err != nil {
		return nil, false, err
	}
	cl.changesState = true
	if ifMatch != "" {
		cl.header = http.Header{"If-Match": {quoteETag(ifMatch)}}
	}
	resp, err := c.do(ctx, cl)
	if err != nil {
		return nil, false, err
	}
	created = resp.StatusCode == http.StatusCreated
	var out vocabulary.Entry
	if err := decode(resp, cl, &out); err != nil {
		return nil, false, err
	}
	return &out, created, nil
}

// DeleteVocabulary deletes a vocabulary; ifMatch as for PutVocabulary.
func (c *Client) DeleteVocabulary(ctx context.Context, name, ifMatch string) error {
	cl := call{method: http.MethodDelete, path: vocabularyPath(name), changesState: true}
	if ifMatch != "" {
		cl.header = http.Header{"If-Match": {quoteETag(ifMatch)}}
	}
	resp, err := c.do(ctx, cl)
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

func vocabularyPath(name string) string { return "/v1/vocabularies/" + url.PathEscape(name) }

// quoteETag makes an entity tag of an ETag as Entry.ETag holds it
// ("sha256:…"); "*" and tags already quoted stay as they are.
func quoteETag(t string) string {
	if t == "*" || strings.HasPrefix(t, `"`) || strings.HasPrefix(t, `W/"`) {
		return t
	}
	return `"` + t + `"`
}
