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
