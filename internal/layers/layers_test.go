// Package layers holds a test of the project's layering: the domain packages
// speak no HTTP, and only the command and the HTTP layer import handlers.
package layers

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/vild/vild/"

// domain are the packages that must not import net/http or the HTTP layer.
var domain = []string{"admission", "annotate", "apikey", "boxes", "bundle", "detector", "eval", "exemplar", "imageio", "inference", "mask",
	"models", "ort", "pipeline", "redisstore", "roialign", "rpn", "scoring", "session", "textbank", "tokenizer", "vocabulary"}

// httpLayer are the packages a domain package must not import.
var httpLayer = []string{"net/http", module + "handlers", module + "request", module + "api", module + "access", module + "observe",
	module + "labelstudio", module + "urlfetch"}

// imports returns the imports of the non-test Go files in dir.
func imports(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			out[p] = true
		}
	}
	return out
}

func TestDomainSpeaksNoHTTP(t *testing.T) {
	for _, pkg := range domain {
		dir := filepath.Join("..", "..", pkg)
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("domain package %s: %v", pkg, err)
		}
		imps := imports(t, dir)
		for _, bad := range httpLayer {
			if imps[bad] {
				t.Errorf("%s imports %s", pkg, bad)
			}
		}
	}
}

// The command line uses handlers only to serve: its domain work (vocabularies,
// drawing, decoding) goes through the domain packages.
func TestCommandUsesHandlersOnlyToServe(t *testing.T) {
	dir := filepath.Join("..", "..", "cmd", "vild")
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, use := range strings.Split(line, "handlers.")[1:] {
				name := use
				if i := strings.IndexFunc(use, func(r rune) bool { return !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z') }); i >= 0 {
					name = use[:i]
				}
				switch name {
				case "New", "Deps", "Config", "DefaultConfig", "Health", "NewMetrics", "Loading":
				default:
					t.Errorf("%s uses handlers.%s", filepath.Base(f), name)
				}
			}
		}
	}
}
