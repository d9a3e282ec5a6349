package handlers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/detector"
)

// session is a registered image: its proposals and region embeddings, which
// do not depend on the vocabulary.
type session struct {
	regions *detector.Regions
	created time.Time
}

// ImageSession answers POST /v1/images and GET /v1/images/{id}.
type ImageSession struct {
	ID        string    `json:"id" example:"4f9c2a7e0b1d4c3a8e6f5d2c1b0a9f8e"`
	Image     ImageSize `json:"image"`
	Regions   int       `json:"regions" example:"300"`
	Model     string    `json:"model"`
	ExpiresAt time.Time `json:"expires_at"`
	TimingsMS *Timings  `json:"timings_ms,omitempty"`
}

var errSessionNotFound = &Error{Status: http.StatusNotFound, Slug: "image-not-found", Msg: "no image session with that id (it may have expired)"}

func (h *api) imageRoutes() chi.Router {
	r := chi.NewRouter()
	r.Post("/", h.handle(h.createImage))
	r.Get("/{id}", h.handle(h.getImage))
	r.Delete("/{id}", h.handle(h.deleteImage))
	r.Post("/{id}/detect", h.handle(h.detectImage))
	return r
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// createImage godoc
//
//	@Summary		Register an image for repeated detection
//	@Description	Runs the vocabulary-independent part of the detector once (backbone, proposals, region embeddings) and keeps the result in a bounded cache with expiry. The image comes as JSON base64, multipart (field image) or a raw image body.
//	@Tags			images
//	@Accept			json
//	@Accept			mpfd
//	@Accept			png
//	@Accept			jpeg
//	@Produce		json
//	@Param			request	body		ImageRequest	true	"the image"
//	@Success		201		{object}	ImageSession
//	@Failure		400		{object}	Problem
//	@Failure		413		{object}	Problem
//	@Failure		415		{object}	Problem
//	@Failure		422		{object}	Problem
//	@Failure		503		{object}	Problem
//	@Failure		504		{object}	Problem
//	@Router			/v1/images [post]
func (h *api) createImage(w http.ResponseWriter, r *http.Request) error {
	if h.deps.Health.draining.Load() {
		return errDraining
	}
	in, err := h.readImageInput(w, r, false)
	if err != nil {
		return err
	}
	start := time.Now()
	var regions *detector.Regions
	var tm Timings
	queued, err := h.queue.do(r.Context(), func(ctx context.Context) error {
		t := time.Now()
		img, err := h.decode(ctx, in.images[0])
		if err != nil {
			return err
		}
		tm.Decode = since(t)
		h.metrics.stage("decode", time.Since(t))
		regions, err = h.regions(ctx, img)
		return err
	})
	if err != nil {
		return err
	}
	tm.Queue = ms(queued)
	tm.addStages(regions.Timings)
	tm.Scoring = 0
	tm.Total = since(start)
	id := newSessionID()
	exp := h.sessions.put(id, &session{regions: regions, created: time.Now()})
	w.Header().Set("Location", "/v1/images/"+id)
	return writeJSON(w, http.StatusCreated, ImageSession{ID: id, Image: ImageSize{regions.Width, regions.Height},
		Regions: len(regions.Boxes), Model: h.deps.Model.ID, ExpiresAt: exp, TimingsMS: &tm})
}

// getImage godoc
//
//	@Summary	Describe a registered image
//	@Tags		images
//	@Produce	json
//	@Param		id	path		string	true	"image session id"
//	@Success	200	{object}	ImageSession
//	@Failure	404	{object}	Problem
//	@Router		/v1/images/{id} [get]
func (h *api) getImage(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "id")
	s, exp, ok := h.sessions.get(id)
	if !ok {
		return errSessionNotFound
	}
	return writeJSON(w, http.StatusOK, ImageSession{ID: id, Image: ImageSize{s.regions.Width, s.regions.Height},
		Regions: len(s.regions.Boxes), Model: h.deps.Model.ID, ExpiresAt: exp})
}

// deleteImage godoc
//
//	@Summary	Forget a registered image
//	@Tags		images
//	@Param		id	path	string	true	"image session id"
//	@Success	204	"deleted"
//	@Failure	404	{object}	Problem
//	@Router		/v1/images/{id} [delete]
func (h *api) deleteImage(w http.ResponseWriter, r *http.Request) error {
	if !h.sessions.remove(chi.URLParam(r, "id")) {
		return errSessionNotFound
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// detectImage godoc
//
//	@Summary		Re-score a registered image against a vocabulary
//	@Description	Scores the cached region embeddings against the vocabulary without running the backbone again: the timings show scoring only.
//	@Tags			images
//	@Accept			json
//	@Produce		json
//	@Param			id		path		string			true	"image session id"
//	@Param			options	body		DetectOptions	true	"vocabulary and options"
//	@Success		200		{object}	DetectResponse
//	@Failure		400		{object}	Problem
//	@Failure		404		{object}	Problem
//	@Failure		413		{object}	Problem
//	@Failure		415		{object}	Problem
//	@Failure		503		{object}	Problem
//	@Router			/v1/images/{id}/detect [post]
func (h *api) detectImage(w http.ResponseWriter, r *http.Request) error {
	s, _, ok := h.sessions.get(chi.URLParam(r, "id"))
	if !ok {
		return errSessionNotFound
	}
	var o DetectOptions
	if err := h.readJSON(w, r, &o); err != nil {
		return err
	}
	opts, err := h.detectorOptions(o)
	if err != nil {
		return err
	}
	vocab, err := h.resolveVocabulary(r.Context(), o)
	if err != nil {
		return err
	}
	start := time.Now()
	var res *detector.Result
	queued, err := h.queue.do(r.Context(), func(ctx context.Context) error {
		var err error
		res, err = h.score(ctx, s.regions, vocab, opts)
		return err
	})
	if err != nil {
		return err
	}
	tm := Timings{Queue: ms(queued), Scoring: ms(res.Timings.Scoring), Total: since(start)}
	return writeJSON(w, http.StatusOK, DetectResponse{Model: h.deps.Model.ID, VocabularyDigest: vocab.Digest,
		Image: &ImageSize{res.Width, res.Height}, Detections: nonNil(res.Detections), TimingsMS: &tm})
}
