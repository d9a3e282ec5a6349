package web

import (
	"io/fs"
	"strings"
	"testing"
)

// The page is self-contained: every asset it names is embedded and nothing
// comes from another origin.
func TestPageSelfContained(t *testing.T) {
	page, err := fs.ReadFile(FS(), "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"style.css", "app.js", "samples/shapes.png", "samples/garden.png", "samples/night.png"} {
		if !strings.Contains(string(page), ref) {
			t.Errorf("index.html does not use %s", ref)
		}
		if _, err := fs.Stat(FS(), ref); err != nil {
			t.Errorf("%s not embedded: %v", ref, err)
		}
	}
	for _, f := range []string{"index.html", "app.js", "style.css"} {
		b, _ := fs.ReadFile(FS(), f)
		if strings.Contains(string(b), "http://") || strings.Contains(string(b), "https://") || strings.Contains(string(b), "//cdn") {
			t.Errorf("%s refers to another origin", f)
		}
	}
}
