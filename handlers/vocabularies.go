package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
)

// Vocabulary is a stored vocabulary resource.
type Vocabulary struct {
	Name string `json:"name" example:"kitchen"`
	VocabularySpec
	// ETag is the content digest of the canonical spec.
	ETag    string    `json:"etag" example:"sha256:9b1c..."`
	Updated time.Time `json:"updated"`
}

// VocabularySummary is one entry of the vocabulary list.
type VocabularySummary struct {
	Name       string    `json:"name" example:"kitchen"`
	ETag       string    `json:"etag"`
	Categories int       `json:"categories" example:"3"`
	Updated    time.Time `json:"updated"`
}

// VocabularyList answers GET /v1/vocabularies.
type VocabularyList struct {
	Vocabularies []VocabularySummary `json:"vocabularies"`
}

var vocabularyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

var (
	errVocabularyNotFound = &Error{Status: http.StatusNotFound, Slug: "vocabulary-not-found", Msg: "no vocabulary of that name"}
	errPrecondition       = &Error{Status: http.StatusPreconditionFailed, Slug: "precondition-failed", Msg: "If-Match does not match the vocabulary's ETag"}
	errVocabularyName     = badRequest("invalid-vocabulary-name", "a vocabulary name is 1–64 of A–Z a–z 0–9 . _ - and starts with a letter or digit", nil)
)

// VocabularyStore keeps vocabularies as one JSON file each in a directory,
// written atomically (temporary file + rename), loaded at start.
type VocabularyStore struct {
	dir   string
	mu    sync.RWMutex
	items map[string]*Vocabulary
}

// OpenVocabularyStore loads every vocabulary under dir, creating dir if needed.
func OpenVocabularyStore(dir string) (*VocabularyStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("handlers: vocabulary store: %w", err)
	}
	s := &VocabularyStore{dir: dir, items: map[string]*Vocabulary{}}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("handlers: vocabulary store: %w", err)
		}
		var v Vocabulary
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("handlers: vocabulary store: %s: %w", filepath.Base(f), err)
		}
		if v.Name+".json" != filepath.Base(f) || !vocabularyName.MatchString(v.Name) {
			return nil, fmt.Errorf("handlers: vocabulary store: %s holds vocabulary %q", filepath.Base(f), v.Name)
		}
		s.items[v.Name] = &v
	}
	return s, nil
}

// Get returns the named vocabulary.
func (s *VocabularyStore) Get(name string) (*Vocabulary, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.items[name]
	if !ok {
		return nil, errVocabularyNotFound
	}
	return v, nil
}

// List returns summaries sorted by name.
func (s *VocabularyStore) List() []VocabularySummary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]VocabularySummary, 0, len(s.items))
	for _, v := range s.items {
		out = append(out, VocabularySummary{Name: v.Name, ETag: v.ETag, Categories: len(v.Categories), Updated: v.Updated})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Put creates or replaces a vocabulary; ifMatch, when set, must equal the
// current ETag ("*": any existing one).
func (s *VocabularyStore) Put(name string, spec VocabularySpec, etag, ifMatch string) (*Vocabulary, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.items[name]
	if ifMatch != "" && !(exists && (ifMatch == "*" || etagMatch(ifMatch, old.ETag))) {
		return nil, false, errPrecondition
	}
	v := &Vocabulary{Name: name, VocabularySpec: spec, ETag: etag, Updated: time.Now().UTC()}
	if exists && old.ETag == etag {
		v.Updated = old.Updated
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, false, err
	}
	tmp, err := os.CreateTemp(s.dir, ".vocab-*")
	if err != nil {
		return nil, false, fmt.Errorf("handlers: vocabulary store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("handlers: vocabulary store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("handlers: vocabulary store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("handlers: vocabulary store: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, name+".json")); err != nil {
		return nil, false, fmt.Errorf("handlers: vocabulary store: %w", err)
	}
	s.items[name] = v
	return v, !exists, nil
}

// Delete removes a vocabulary; ifMatch as in Put.
func (s *VocabularyStore) Delete(name, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.items[name]
	if !exists {
		return errVocabularyNotFound
	}
	if ifMatch != "" && ifMatch != "*" && !etagMatch(ifMatch, old.ETag) {
		return errPrecondition
	}
	if err := os.Remove(filepath.Join(s.dir, name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("handlers: vocabulary store: %w", err)
	}
	delete(s.items, name)
	return nil
}

// etagMatch compares an If-Match / If-None-Match list with an ETag.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || strings.Trim(t, `"`) == etag {
			return true
		}
	}
	return false
}

func (h *api) vocabularyRoutes() chi.Router {
	r := chi.NewRouter()
	r.Get("/", h.handle(h.listVocabularies))
	r.Get("/{name}", h.handle(h.getVocabulary))
	r.Put("/{name}", h.handle(h.putVocabulary))
	r.Delete("/{name}", h.handle(h.deleteVocabulary))
	return r
}

func (h *api) store() (*VocabularyStore, error) {
	if h.deps.Vocabularies == nil {
		return nil, errorf(http.StatusNotFound, "vocabulary-not-found", "this server stores no vocabularies")
	}
	return h.deps.Vocabularies, nil
}

func vocabName(r *http.Request) (string, error) {
	name := chi.URLParam(r, "name")
	if !vocabularyName.MatchString(name) {
		return "", errVocabularyName
	}
	return name, nil
}

// listVocabularies godoc
//
//	@Summary	List stored vocabularies
//	@Tags		vocabularies
//	@Produce	json
//	@Success	200	{object}	VocabularyList
//	@Router		/v1/vocabularies [get]
func (h *api) listVocabularies(w http.ResponseWriter, r *http.Request) error {
	s, err := h.store()
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, VocabularyList{Vocabularies: s.List()})
}

// getVocabulary godoc
//
//	@Summary	Get a vocabulary
//	@Tags		vocabularies
//	@Produce	json
//	@Param		name			path		string	true	"vocabulary name"
//	@Param		If-None-Match	header		string	false	"ETag; 304 when it matches"
//	@Success	200				{object}	Vocabulary
//	@Success	304				"not modified"
//	@Failure	400				{object}	Problem
//	@Failure	404				{object}	Problem
//	@Router		/v1/vocabularies/{name} [get]
func (h *api) getVocabulary(w http.ResponseWriter, r *http.Request) error {
	s, err := h.store()
	if err != nil {
		return err
	}
	name, err := vocabName(r)
	if err != nil {
		return err
	}
	v, err := s.Get(name)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", `"`+v.ETag+`"`)
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, v.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	return writeJSON(w, http.StatusOK, v)
}

// putVocabulary godoc
//
//	@Summary		Create or replace a vocabulary
//	@Description	Names are validated and deduplicated and their text embeddings computed now, once; detection requests then name the vocabulary.
//	@Tags			vocabularies
//	@Accept			json
//	@Produce		json
//	@Param			name		path		string			true	"vocabulary name: 1–64 of A–Z a–z 0–9 . _ -"
//	@Param			If-Match	header		string			false	"ETag the current version must have (* = any existing)"
//	@Param			vocabulary	body		VocabularySpec	true	"categories, synonyms, negatives, thresholds, templates"
//	@Success		200			{object}	Vocabulary		"replaced"
//	@Success		201			{object}	Vocabulary		"created"
//	@Failure		400			{object}	Problem
//	@Failure		412			{object}	Problem
//	@Failure		413			{object}	Problem
//	@Failure		415			{object}	Problem
//	@Failure		422			{object}	Problem
//	@Router			/v1/vocabularies/{name} [put]
func (h *api) putVocabulary(w http.ResponseWriter, r *http.Request) error {
	s, err := h.store()
	if err != nil {
		return err
	}
	name, err := vocabName(r)
	if err != nil {
		return err
	}
	var spec VocabularySpec
	if err := h.readJSON(w, r, &spec); err != nil {
		return err
	}
	spec, err = h.normalize(spec, h.cfg.MaxVocabularyCategories)
	if err != nil {
		return err
	}
	vocab, err := h.embedVocabulary(r.Context(), spec)
	if err != nil {
		return err
	}
	v, created, err := s.Put(name, spec, vocab.Digest, r.Header.Get("If-Match"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", `"`+v.ETag+`"`)
	status := http.StatusOK
	if created {
		w.Header().Set("Location", "/v1/vocabularies/"+name)
		status = http.StatusCreated
	}
	return writeJSON(w, status, v)
}

// deleteVocabulary godoc
//
//	@Summary	Delete a vocabulary
//	@Tags		vocabularies
//	@Param		name		path	string	true	"vocabulary name"
//	@Param		If-Match	header	string	false	"ETag the current version must have"
//	@Success	204			"deleted"
//	@Failure	400			{object}	Problem
//	@Failure	404			{object}	Problem
//	@Failure	412			{object}	Problem
//	@Router		/v1/vocabularies/{name} [delete]
func (h *api) deleteVocabulary(w http.ResponseWriter, r *http.Request) error {
	s, err := h.store()
	if err != nil {
		return err
	}
	name, err := vocabName(r)
	if err != nil {
		return err
	}
	if err := s.Delete(name, r.Header.Get("If-Match")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// readJSON reads a small JSON body (no images) strictly.
func (h *api) readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if mt, _ := mediaType(r); mt != "application/json" {
		return errorf(http.StatusUnsupportedMediaType, "unsupported-content-type", "send Content-Type: application/json")
	}
	if err := capBody(w, r, h.cfg.MaxJSONBytes); err != nil {
		return err
	}
	return decodeJSON(r.Body, v)
}
