package labelstudio

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/vild/vild/api"
	"github.com/vild/vild/urlfetch"
)

// load reads the image a task names: a data: URI, an http(s) URL, or a path
// on Label Studio (an upload: /data/upload/…, a storage link:
// /tasks/…/presign/…). Task i is named in errors by its index.
func (b *Backend) load(ctx context.Context, i int, src string, project ProjectID) ([]byte, error) {
	if strings.HasPrefix(src, "data:") {
		return dataURI(i, src)
	}
	u, err := url.Parse(src)
	if err != nil {
		return nil, taskError(http.StatusBadRequest, "invalid-task", i, "its image is not a URL")
	}
	var header http.Header
	switch {
	case u.Scheme == "http" || u.Scheme == "https":
		if o, ok := b.origin(project); ok && sameOrigin(u, o.base) && o.token != "" {
			header = http.Header{"Authorization": {"Token " + o.token}}
		}
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(u.Path, "/"):
		o, ok := b.origin(project)
		if !ok {
			return nil, taskError(http.StatusUnprocessableEntity, "no-label-studio-url", i,
				"its image is a Label Studio path, and the server knows no Label Studio address: start it with --label-studio-url, or connect the model again so that /setup gives the hostname")
		}
		ref := *o.base
		ref.Path = strings.TrimSuffix(o.base.Path, "/") + u.Path
		ref.RawPath = ""
		ref.RawQuery = u.RawQuery
		ref.Fragment = ""
		u = &ref
		if o.token != "" {
			header = http.Header{"Authorization": {"Token " + o.token}}
		}
	default:
		return nil, taskError(http.StatusUnprocessableEntity, "unsupported-image-source", i,
			"its image is neither an http(s) URL, a Label Studio path nor a data: URI (cloud storage: let Label Studio presign the URLs)")
	}
	if b.set.Fetcher == nil {
		return nil, taskError(http.StatusUnprocessableEntity, "url-refused", i, "this server fetches no image URLs")
	}
	data, err := b.set.Fetcher.Fetch(ctx, u.String(), header)
	if err == nil {
		return data, nil
	}
	var se *urlfetch.StatusError
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("labelstudio: fetch task %d's image: %w", i, ctx.Err())
	case errors.Is(err, urlfetch.ErrRefused):
		return nil, taskError(http.StatusUnprocessableEntity, "url-refused", i,
			"its image URL is refused by the fetch policy: only http(s), a host on the allow-list (--fetch-allow-hosts), and no loopback, link-local, private or reserved address unless --fetch-allow-cidrs allows it; redirects are checked the same way", err)
	case errors.Is(err, urlfetch.ErrTooLarge):
		return nil, taskError(http.StatusUnprocessableEntity, "url-too-large", i, "its image is over the fetch size limit (--fetch-max-bytes)", err)
	case errors.As(err, &se):
		return nil, taskError(http.StatusBadGateway, "url-fetch-failed", i, fmt.Sprintf("its image URL answered HTTP %d", se.Code), err)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, taskError(http.StatusGatewayTimeout, "url-fetch-timeout", i, "its image URL did not answer within the fetch time limit (--fetch-timeout)", err)
	}
	return nil, taskError(http.StatusBadGateway, "url-fetch-failed", i, "its image URL could not be fetched", err)
}

// taskError is a problem about task i; the message never holds the task's data.
func taskError(status int, slug string, i int, msg string, cause ...error) error {
	return &api.Error{Status: status, Slug: slug, Msg: fmt.Sprintf("task at index %d: %s", i, msg), Err: errors.Join(cause...)}
}

// sameOrigin reports whether a and b have the same scheme and host.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Host, b.Host)
}

// dataURI decodes a base64 data: URI (an upload carried in the task).
func dataURI(i int, s string) ([]byte, error) {
	meta, payload, ok := strings.Cut(s[len("data:"):], ",")
	if !ok || !strings.HasSuffix(meta, ";base64") {
		return nil, taskError(http.StatusBadRequest, "invalid-task", i, "its data: URI is not base64")
	}
	b, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return nil, taskError(http.StatusBadRequest, "invalid-task", i, "its data: URI is not valid base64", err)
	}
	return b, nil
}
