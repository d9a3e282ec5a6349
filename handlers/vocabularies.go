package handlers

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/api"
	"github.com/vild/vild/request"
	"github.com/vild/vild/vocabulary"
)

// vocabulariesResource is /v1/vocabularies.
type vocabulariesResource struct {
	p      *problems
	in     request.Reader
	vocabs *request.Vocabularies
}

// Routes mounts the resource. A store that set unreadable vocabularies aside
// (vocabulary.Quarantiner) has each one logged here, once, and counted in
// vild_vocabulary_files_quarantined_total.
func (v vocabulariesResource) Routes() chi.Router {
	if q, ok := v.vocabs.Store.(vocabulary.Quarantiner); ok {
		for _, u := range q.Quarantined() {
			v.p.log.Warn("stored vocabulary unavailable: its file was set aside",
				"vocabulary", u.Name, "reason", u.Reason, "file", u.File, "cause", u.Cause)
		}
		v.p.metrics.countQuarantined(func() int { return len(q.Quarantined()) })
	}
	r := chi.NewRouter()
	r.Get("/", v.p.handle(v.list))
	r.Get("/{name}", v.p.handle(v.get))
	r.Put("/{name}", v.p.handle(v.put))
	r.Delete("/{name}", v.p.handle(v.delete))
	return r
}

// storeAndName returns the store and the request's vocabulary name, checked.
func (v vocabulariesResource) storeAndName(r *http.Request) (vocabulary.Store, string, error) {
	if v.vocabs.Store == nil {
		return nil, "", request.ErrNoStore
	}
	name := chi.URLParam(r, "name")
	if err := vocabulary.CheckStoreName(name); err != nil {
		return nil, "", err
	}
	return v.vocabs.Store, name, nil
}

// list godoc
//
//	@Summary		List stored vocabularies
//	@Description	unavailable lists stored vocabularies whose files could not be loaded at start (they were set aside and are not served) until the name is written again.
//	@Tags			vocabularies
//	@Produce		json
//	@Success		200	{object}	api.VocabularyList
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router			/v1/vocabularies [get]
func (v vocabulariesResource) list(w http.ResponseWriter, r *http.Request) error {
	if v.vocabs.Store == nil {
		return request.ErrNoStore
	}
	list, err := v.vocabs.Store.List(r.Context())
	if err != nil {
		return err
	}
	out := api.VocabularyList{Vocabularies: list, Unavailable: []vocabulary.Unavailable{}}
	if q, ok := v.vocabs.Store.(vocabulary.Quarantiner); ok {
		stored := map[string]bool{}
		for _, s := range list {
			stored[s.Name] = true
		}
		for _, u := range q.Quarantined() {
			if !stored[u.Name] { // written again since: available
				out.Unavailable = append(out.Unavailable, u)
			}
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// get godoc
//
//	@Summary	Get a vocabulary
//	@Tags		vocabularies
//	@Produce	json
//	@Param		name			path		string	true	"vocabulary name"
//	@Param		If-None-Match	header		string	false	"ETag; 304 when it matches"
//	@Success	200				{object}	vocabulary.Entry
//	@Success	304				"not modified"
//	@Failure	400				{object}	api.Problem
//	@Failure	404				{object}	api.Problem
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router		/v1/vocabularies/{name} [get]
func (v vocabulariesResource) get(w http.ResponseWriter, r *http.Request) error {
	store, name, err := v.storeAndName(r)
	if err != nil {
		return err
	}
	e, err := store.Get(r.Context(), name)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", `"`+e.ETag+`"`)
	if inm := r.Header.Get("If-None-Match"); inm != "" && vocabulary.MatchETag(inm, e.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	return writeJSON(w, http.StatusOK, e)
}

// put godoc
//
//	@Summary		Create or replace a vocabulary
//	@Description	Names are validated and deduplicated and their text embeddings computed now, once; detection requests then name the vocabulary. Exemplar images are embedded now too: the vocabulary stores their embeddings, not the images.
//	@Tags			vocabularies
//	@Accept			json
//	@Produce		json
//	@Param			name		path		string				true	"vocabulary name: 1–64 of A–Z a–z 0–9 . _ -"
//	@Param			If-Match	header		string				false	"ETag the current version must have (* = any existing)"
//	@Param			vocabulary	body		api.VocabularyRequest	true	"categories, synonyms, negatives, thresholds, templates, exemplars"
//	@Success		200			{object}	vocabulary.Entry	"replaced"
//	@Success		201			{object}	vocabulary.Entry	"created"
//	@Failure		400			{object}	api.Problem
//	@Failure		412			{object}	api.Problem
//	@Failure		413			{object}	api.Problem
//	@Failure		415			{object}	api.Problem
//	@Failure		422			{object}	api.Problem
//	@Failure		503			{object}	api.Problem	"storage read-only (storage-read-only), or a shared store down (store-unavailable); see Retry-After"
//	@Failure		507			{object}	api.Problem	"storage full (insufficient-storage): nothing was written"
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router			/v1/vocabularies/{name} [put]
func (v vocabulariesResource) put(w http.ResponseWriter, r *http.Request) error {
	store, name, err := v.storeAndName(r)
	if err != nil {
		return err
	}
	var req api.VocabularyRequest
	if err := v.in.JSONImages(w, r, &req); err != nil {
		return err
	}
	spec, err := v.vocabs.StoredSpec(r.Context(), req)
	if err != nil {
		return err
	}
	vocab, err := v.vocabs.Builder.Build(r.Context(), spec)
	if err != nil {
		return err
	}
	e, created, err := store.Put(r.Context(), name, spec, vocab.Digest, r.Header.Get("If-Match"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", `"`+e.ETag+`"`)
	status := http.StatusOK
	if created {
		w.Header().Set("Location", "/v1/vocabularies/"+name)
		status = http.StatusCreated
	}
	return writeJSON(w, status, e)
}

// delete godoc
//
//	@Summary	Delete a vocabulary
//	@Tags		vocabularies
//	@Param		name		path	string	true	"vocabulary name"
//	@Param		If-Match	header	string	false	"ETag the current version must have"
//	@Success	204			"deleted"
//	@Failure	400			{object}	api.Problem
//	@Failure	404			{object}	api.Problem
//	@Failure	412			{object}	api.Problem
//	@Failure	503			{object}	api.Problem	"storage read-only (storage-read-only), or a shared store down (store-unavailable); see Retry-After"
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router		/v1/vocabularies/{name} [delete]
func (v vocabulariesResource) delete(w http.ResponseWriter, r *http.Request) error {
	store, name, err := v.storeAndName(r)
	if err != nil {
		return err
	}
	if err := store.Delete(r.Context(), name, r.Header.Get("If-Match")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
