package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/models"
)

// GET /v1/models lists the embedded bundle's categories as objects with their
// split and synonyms; the names vocabularies are built with are what they
// were: every category for the default vocabulary, and the base categories
// with their synonyms for marking classes base.
func TestModelInfoCategories(t *testing.T) {
	b, err := models.Default()
	if err != nil {
		t.Fatal(err)
	}
	info := modelInfo(b, detector.Options{})
	m := b.Manifest
	if len(info.CategoryList) != len(m.Categories) || len(info.Categories) != len(m.Categories) {
		t.Fatalf("%d categories listed, %d default names; the manifest has %d", len(info.CategoryList), len(info.Categories), len(m.Categories))
	}
	var base []string // as the server computed them before categories were objects
	synonyms := 0
	for i, c := range m.Categories {
		got := info.CategoryList[i]
		if got.Name != c.Name || got.Split != c.Split || !slices.Equal(got.Synonyms, c.Synonyms) || info.Categories[i] != c.Name {
			t.Fatalf("category %d: %+v, manifest %+v", i, got, c)
		}
		if c.Split == "base" {
			base = append(base, c.Name)
			base = append(base, c.Synonyms...)
		}
		synonyms += len(c.Synonyms)
	}
	if !slices.Equal(info.BaseCategories, base) {
		t.Fatal("the base names changed")
	}
	if synonyms == 0 || len(base) == 0 {
		t.Fatal("the embedded bundle has no synonyms or no base categories: the test proves nothing")
	}
	out, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	var wire struct {
		Categories []struct {
			Name     string   `json:"name"`
			Split    string   `json:"split"`
			Synonyms []string `json:"synonyms"`
		} `json:"categories"`
	}
	if err := json.Unmarshal(out, &wire); err != nil {
		t.Fatal(err)
	}
	if len(wire.Categories) != len(m.Categories) || wire.Categories[0].Name != m.Categories[0].Name || wire.Categories[0].Split == "" {
		t.Fatalf("categories on the wire: %.200s", out)
	}
	if strings.Contains(string(out), "base_categories") {
		t.Fatal("base_categories is still on the wire")
	}
}

// GET /v1/models lists synonyms that name the object: the embedded bundle's
// synonyms were curated (docs/data.md, "Synonyms"), so descriptive emoji tags
// such as "curious" for raccoon or "strong" for lion are not among them, and
// neither are they base names; genuine synonyms are.
func TestModelInfoSynonymsNameTheObject(t *testing.T) {
	b, err := models.Default()
	if err != nil {
		t.Fatal(err)
	}
	info := modelInfo(b, detector.Options{})
	synonyms := map[string][]string{}
	for _, c := range info.CategoryList {
		synonyms[c.Name] = c.Synonyms
	}
	for name, tags := range map[string][]string{"raccoon": {"curious", "sly"}, "lion": {"alpha", "order", "strong"}} {
		if _, ok := synonyms[name]; !ok {
			t.Fatalf("no category %q", name)
		}
		for _, tag := range tags {
			if slices.Contains(synonyms[name], tag) || slices.Contains(info.BaseCategories, tag) {
				t.Errorf("%q is still a synonym of %s: %v", tag, name, synonyms[name])
			}
		}
	}
	for name, syn := range map[string]string{"cat": "kitten", "rabbit": "bunny", "doughnut": "donut", "lion": "lion face"} {
		if !slices.Contains(synonyms[name], syn) {
			t.Errorf("%s lost its synonym %q: %v", name, syn, synonyms[name])
		}
	}
}
