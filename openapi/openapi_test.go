package openapi

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSpecUpToDate regenerates the spec with the pinned swag CLI and diffs it
// with the committed files, so the documentation cannot drift from the code.
func TestSpecUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the swag CLI")
	}
	out := t.TempDir()
	cmd := exec.Command("go", "run", "github.com/swaggo/swag/cmd/swag@"+SwagVersion, "init", "--quiet",
		"-g", "handlers.go", "-d", SwagDirs, "-o", out,
		"--packageName", "openapi", "--outputTypes", "go,json,yaml")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swag: %v\n%s", err, b)
	}
	for _, f := range []string{"docs.go", "swagger.json", "swagger.yaml"} {
		want, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("openapi/%s is stale: run `go generate ./openapi` and commit the result", f)
		}
	}
}

// TestSpecValid checks the document's shape: Swagger 2.0, every operation
// with responses, every $ref resolving to a definition.
func TestSpecValid(t *testing.T) {
	var spec struct {
		Swagger     string                               `json:"swagger"`
		Paths       map[string]map[string]map[string]any `json:"paths"`
		Definitions map[string]any                       `json:"definitions"`
	}
	if err := json.Unmarshal(JSON, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Swagger != "2.0" || len(spec.Paths) == 0 {
		t.Fatalf("swagger %q with %d paths", spec.Swagger, len(spec.Paths))
	}
	for p, ops := range spec.Paths {
		for m, op := range ops {
			if _, ok := op["responses"]; !ok {
				t.Errorf("%s %s has no responses", m, p)
			}
			if op["summary"] == nil {
				t.Errorf("%s %s has no summary", m, p)
			}
		}
	}
	var refs func(v any)
	refs = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if r, ok := x["$ref"].(string); ok {
				name := filepath.Base(r)
				if _, ok := spec.Definitions[name]; !ok {
					t.Errorf("dangling $ref %s", r)
				}
			}
			for _, y := range x {
				refs(y)
			}
		case []any:
			for _, y := range x {
				refs(y)
			}
		}
	}
	var all any
	json.Unmarshal(JSON, &all)
	refs(all)
}
