package web

import (
	"io/fs"
	"regexp"
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
	for _, ref := range []string{"style.css", "app.js", "samples/scene-000008.png", "samples/scene-000023.png", "samples/scene-000025.png"} {
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

// The page keeps to its Content-Security-Policy (script-src 'self',
// style-src 'self'): no inline script, style or event-handler attribute.
func TestPageHasNoInlineScriptOrStyle(t *testing.T) {
	page, err := fs.ReadFile(FS(), "index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := strings.ToLower(string(page))
	if strings.Count(html, "<script") != strings.Count(html, "<script src=") {
		t.Error("index.html has an inline <script>")
	}
	for _, bad := range []string{"<style", " style=", "javascript:"} {
		if strings.Contains(html, bad) {
			t.Errorf("index.html has %q", bad)
		}
	}
	if m := regexp.MustCompile(`\son[a-z]+\s*=`).FindString(html); m != "" {
		t.Errorf("index.html has an event-handler attribute %q", m)
	}
}
