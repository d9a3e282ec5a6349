package handlers

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/api"
	"github.com/vild/vild/inference"
	"github.com/vild/vild/observe"
	"github.com/vild/vild/request"
	"github.com/vild/vild/session"
)

// imagesResource is /v1/images: registered images re-scored without the backbone.
type imagesResource struct {
	p        *problems
	in       request.Reader
	run      *inference.Runner
	vocabs   *request.Vocabularies
	opts     *request.Options
	sessions session.Store
	health   *Health
	model    string
}

// Routes mounts the resource.
func (im imagesResource) Routes() chi.Router {
	r := chi.NewRouter()
	r.Post("/", im.p.handle(im.create))
	r.Get("/{id}", im.p.handle(im.get))
	r.Delete("/{id}", im.p.handle(im.delete))
	r.Post("/{id}/detect", im.p.handle(im.detect))
	return r
}

// create godoc
//
//	@Summary		Register an image for repeated detection
//	@Description	Runs the vocabulary-independent part of the detector once (backbone, proposals, region embeddings) and keeps the result in a bounded cache with expiry. The image comes as JSON base64, multipart (field image) or a raw image body.
//	@Tags			images
//	@Accept			json
//	@Accept			mpfd
//	@Accept			png
//	@Accept			jpeg
//	@Produce		json
//	@Param			request	body		api.ImageRequest	true	"the image"
//	@Success		201		{object}	api.ImageSession
//	@Failure		400		{object}	api.Problem
//	@Failure		413		{object}	api.Problem
//	@Failure		415		{object}	api.Problem
//	@Failure		422		{object}	api.Problem
//	@Failure		503		{object}	api.Problem
//	@Failure		504		{object}	api.Problem
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router			/v1/images [post]
func (im imagesResource) create(w http.ResponseWriter, r *http.Request) error {
	if im.health.Draining() {
		return errDraining
	}
	in, err := im.in.Image(w, r, false)
	if err != nil {
		return err
	}
	regions, tm, err := im.run.Register(r.Context(), in.Images[0])
	if err != nil {
		return err
	}
	id, exp, err := im.sessions.Create(r.Context(), regions)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/images/"+id)
	return writeJSON(w, http.StatusCreated, api.ImageSession{ID: id, Image: api.ImageSize{Width: regions.Width, Height: regions.Height},
		Regions: len(regions.Boxes), Model: im.model, ExpiresAt: exp, TimingsMS: apiTimings(tm)})
}

// get godoc
//
//	@Summary	Describe a registered image
//	@Tags		images
//	@Produce	json
//	@Param		id	path		string	true	"image session id"
//	@Success	200	{object}	api.ImageSession
//	@Failure	404	{object}	api.Problem
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router		/v1/images/{id} [get]
func (im imagesResource) get(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "id")
	regions, exp, err := im.sessions.Get(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.ImageSession{ID: id, Image: api.ImageSize{Width: regions.Width, Height: regions.Height},
		Regions: len(regions.Boxes), Model: im.model, ExpiresAt: exp})
}

// delete godoc
//
//	@Summary	Forget a registered image
//	@Tags		images
//	@Param		id	path	string	true	"image session id"
//	@Success	204	"deleted"
//	@Failure	404	{object}	api.Problem
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router		/v1/images/{id} [delete]
func (im imagesResource) delete(w http.ResponseWriter, r *http.Request) error {
	if err := im.sessions.Delete(r.Context(), chi.URLParam(r, "id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// detect godoc
//
//	@Summary		Re-score a registered image against a vocabulary
//	@Description	Scores the cached region embeddings against the vocabulary without running the backbone again: the timings show scoring only. With masks = rle or polygon the session's kept FPN features give each detection its instance mask, again without the backbone.
//	@Tags			images
//	@Accept			json
//	@Produce		json
//	@Param			id		path		string				true	"image session id"
//	@Param			options	body		api.DetectOptions	true	"vocabulary and options"
//	@Success		200		{object}	api.DetectResponse
//	@Failure		400		{object}	api.Problem
//	@Failure		404		{object}	api.Problem
//	@Failure		413		{object}	api.Problem
//	@Failure		415		{object}	api.Problem
//	@Failure		422		{object}	api.Problem	"masks-unsupported: masks asked of a model without a mask head"
//	@Failure		503		{object}	api.Problem
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key, or one that is not valid (with --auth keys); see WWW-Authenticate"
//	@Failure	403	{object}	api.Problem	"the API key lacks this route's scope"
//	@Failure	429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up; see Retry-After"
//	@Router			/v1/images/{id}/detect [post]
func (im imagesResource) detect(w http.ResponseWriter, r *http.Request) error {
	regions, _, err := im.sessions.Get(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	var o api.DetectOptions
	if err := im.in.JSON(w, r, &o); err != nil {
		return err
	}
	opts, err := im.opts.Resolve(o)
	if err != nil {
		return err
	}
	vocab, err := im.vocabs.Resolve(r.Context(), o)
	if err != nil {
		return err
	}
	observe.Vocabulary(r.Context(), vocab.Digest)
	res, tm, err := im.run.Rescore(r.Context(), regions, vocab, opts)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.DetectResponse{Model: im.model, VocabularyDigest: vocab.Digest,
		Image: &api.ImageSize{Width: res.Width, Height: res.Height}, Detections: nonNil(res.Detections), TimingsMS: apiTimings(tm)})
}
