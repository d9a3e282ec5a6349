package openapi

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/vild/vild/openapi/internal/convert"
)

// TestV3UpToDate converts the committed Swagger 2.0 spec again and diffs the
// result with the committed openapi3.json.
func TestV3UpToDate(t *testing.T) {
	want, err := convert.ToV3(JSON)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(JSONV3, want) {
		t.Error("openapi/openapi3.json is stale: run `go generate ./openapi` and commit the result")
	}
}

// TestV3Valid loads openapi3.json as OpenAPI 3, validates it, and checks that
// it describes what the 2.0 spec does: the same paths, methods, response
// codes, parameters and schemas.
func TestV3Valid(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(JSONV3)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("not valid OpenAPI 3: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	var v2 struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				In   string `json:"in"`
				Name string `json:"name"`
			} `json:"parameters"`
			Responses map[string]any `json:"responses"`
		} `json:"paths"`
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(JSON, &v2); err != nil {
		t.Fatal(err)
	}
	paths3 := slices.Sorted(maps.Keys(doc.Paths.Map()))
	if paths2 := slices.Sorted(maps.Keys(v2.Paths)); !slices.Equal(paths3, paths2) || len(paths2) == 0 {
		t.Fatalf("paths: 3.0 %v, 2.0 %v", paths3, paths2)
	}
	for p, ops2 := range v2.Paths {
		ops3 := doc.Paths.Value(p).Operations()
		for m, op2 := range ops2 {
			op3 := ops3[strings.ToUpper(m)]
			if op3 == nil {
				t.Errorf("%s %s: missing from 3.0", m, p)
				continue
			}
			codes3 := slices.Sorted(maps.Keys(op3.Responses.Map()))
			if codes2 := slices.Sorted(maps.Keys(op2.Responses)); !slices.Equal(codes3, codes2) {
				t.Errorf("%s %s: responses 3.0 %v, 2.0 %v", m, p, codes3, codes2)
			}
			for _, par := range op2.Parameters {
				if par.In == "body" {
					if op3.RequestBody == nil || len(op3.RequestBody.Value.Content) == 0 {
						t.Errorf("%s %s: the body %s has no requestBody", m, p, par.Name)
					}
				} else if op3.Parameters.GetByInAndName(par.In, par.Name) == nil {
					t.Errorf("%s %s: parameter %s in %s missing", m, p, par.Name, par.In)
				}
			}
		}
		if len(ops3) != len(ops2) {
			t.Errorf("%s: %d operations in 3.0, %d in 2.0", p, len(ops3), len(ops2))
		}
	}
	schemas3 := slices.Sorted(maps.Keys(doc.Components.Schemas))
	if defs2 := slices.Sorted(maps.Keys(v2.Definitions)); !slices.Equal(schemas3, defs2) {
		t.Errorf("schemas 3.0 %v, definitions 2.0 %v", schemas3, defs2)
	}
	if doc.Components.SecuritySchemes["ApiKey"] == nil {
		t.Error("the ApiKey security scheme is missing")
	}
}

func TestServeV3(t *testing.T) {
	rec := httptest.NewRecorder()
	ServeV3(rec, httptest.NewRequest(http.MethodGet, "/docs/openapi3.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" || !bytes.Equal(rec.Body.Bytes(), JSONV3) {
		t.Fatalf("%d %s, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
	}
}
