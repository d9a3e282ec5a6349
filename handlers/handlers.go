// Package handlers is vild's HTTP API: detection, vocabularies, image sessions,
// text embeddings, model info, health, the web page and the Swagger UI. Errors
// are RFC 9457 problem+json, mapped from sentinel errors in one place
// (problem.go); every limit is a field of Config.
//
//	@title			vild API
//	@version		1
//	@description	Open-vocabulary object detection after ViLD (Gu et al., ICLR 2022). POST an image with any list of category names; get boxes, labels and scores back. Errors are RFC 9457 problem+json.
//	@license.name	Apache-2.0
//	@BasePath		/
package handlers

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	httpSwagger "github.com/swaggo/http-swagger/v2"

	"github.com/vild/vild/detector"
	_ "github.com/vild/vild/openapi" // registers the generated spec for /docs
)

// Embedder turns category names into L2-normalised text embeddings
// (textbank.Bank satisfies it).
type Embedder interface {
	Embed(ctx context.Context, names []string) ([][]float32, error)
}

// TemplateEmbedder is implemented by embedders that can use a vocabulary's own
// prompt templates instead of the model's.
type TemplateEmbedder interface {
	EmbedTemplates(ctx context.Context, names, templates []string) ([][]float32, error)
}

// Decoder decodes an untrusted image: format allowlist by magic bytes,
// dimensions checked before decoding, first frame only, panics contained.
type Decoder interface {
	Decode(ctx context.Context, data []byte) (image.Image, error)
}

// DecoderFunc adapts a function to Decoder.
type DecoderFunc func(ctx context.Context, data []byte) (image.Image, error)

// Decode calls f.
func (f DecoderFunc) Decode(ctx context.Context, data []byte) (image.Image, error) {
	return f(ctx, data)
}

// Model describes the served model bundle.
type Model struct {
	ID             string   `json:"id" example:"pictogram-vild-small@3f2a9c1b"`
	Name           string   `json:"name" example:"pictogram-vild-small"`
	Digest         string   `json:"digest" example:"sha256:3f2a9c1b..."`
	EmbeddingDim   int      `json:"embedding_dim" example:"256"`
	Templates      []string `json:"templates"`
	BaseCategories []string `json:"base_categories"`
	// Categories is the bundle's default vocabulary, used when a request names none.
	Categories []string `json:"categories"`
	// Defaults are the model's post-processing defaults.
	Defaults detector.Options `json:"-"`
}

// Health holds liveness state the command flips: ready after a warm-up
// inference, draining once shutdown begins.
type Health struct {
	ready    atomic.Bool
	draining atomic.Bool
}

// SetReady marks the model loaded and warmed up.
func (h *Health) SetReady(v bool) { h.ready.Store(v) }

// SetDraining makes /readyz answer 503 and new detections be refused.
func (h *Health) SetDraining(v bool) { h.draining.Store(v) }

// Ready reports whether the server takes traffic.
func (h *Health) Ready() bool { return h.ready.Load() && !h.draining.Load() }

// Deps is everything the HTTP layer needs.
type Deps struct {
	Detector     detector.Detector
	Embedder     Embedder
	Decoder      Decoder
	DecodeErrors DecodeErrors
	// NameError is the embedder's error for a name it cannot encode (400).
	NameError    error
	Model        Model
	Vocabularies *VocabularyStore // nil: vocabulary routes answer 404
	Health       *Health
	Metrics      *Metrics // nil: metrics are not recorded
	Logger       *slog.Logger
	Config       Config
	// Web is the static site served at / (nil: none).
	Web fs.FS
}

type api struct {
	deps     Deps
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics
	queue    *admission
	sessions *lru[string, *session]
	vocabs   *lru[string, *detector.Vocabulary]
	base     map[string]bool
}

// New returns the HTTP handler of the API.
func New(deps Deps) (http.Handler, error) {
	if deps.Detector == nil || deps.Embedder == nil || deps.Decoder == nil {
		return nil, errors.New("handlers: Detector, Embedder and Decoder are required")
	}
	cfg := deps.Config.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Health == nil {
		deps.Health = &Health{}
		deps.Health.SetReady(true)
	}
	if deps.Metrics == nil {
		deps.Metrics = NewMetrics(nil)
	}
	h := &api{
		deps:     deps,
		cfg:      cfg,
		log:      deps.Logger,
		metrics:  deps.Metrics,
		sessions: newLRU[string, *session](cfg.MaxSessions, cfg.SessionTTL),
		vocabs:   newLRU[string, *detector.Vocabulary](cfg.VocabularyCacheSize, 0),
		base:     BaseNames(deps.Model.BaseCategories),
	}
	h.queue = newAdmission(cfg.Workers, cfg.QueueLength, cfg.MaxQueueWait, h.metrics)

	r := chi.NewRouter()
	r.Use(h.instrument, h.recoverer) // instrument outermost: a recovered panic's 500 is counted
	r.Get("/livez", h.livez)
	r.Get("/readyz", h.readyz)
	r.Route("/v1", func(r chi.Router) {
		r.Use(h.deadline)
		r.Post("/detect", h.handle(h.detect))
		r.Mount("/vocabularies", h.vocabularyRoutes())
		r.Mount("/images", h.imageRoutes())
		r.Post("/embeddings/text", h.handle(h.embedText))
		r.Get("/models", h.handle(h.listModels))
	})
	r.Get("/docs", http.RedirectHandler("/docs/index.html", http.StatusMovedPermanently).ServeHTTP)
	r.Get("/docs/*", httpSwagger.Handler(httpSwagger.URL("/docs/doc.json")))
	if deps.Web != nil {
		r.Handle("/*", http.FileServerFS(deps.Web))
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, errorf(http.StatusNotFound, "not-found", "no such route"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, errorf(http.StatusMethodNotAllowed, "method-not-allowed", "method not allowed on this route"))
	})
	return r, nil
}

// handle adapts an error-returning handler.
func (h *api) handle(fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.writeError(w, r, err)
		}
	}
}

// recoverer turns a handler panic into a 500 and keeps the process up.
func (h *api) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				h.writeError(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// deadline bounds every API request, queue time included.
func (h *api) deadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// livez godoc
//
//	@Summary	Liveness: the process is up
//	@Tags		health
//	@Produce	plain
//	@Success	200	{string}	string	"ok"
//	@Router		/livez [get]
func (h *api) livez(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz godoc
//
//	@Summary	Readiness: the model is loaded and a warm-up inference passed; 503 while loading or draining
//	@Tags		health
//	@Produce	plain
//	@Success	200	{string}	string	"ready"
//	@Failure	503	{object}	Problem
//	@Router		/readyz [get]
func (h *api) readyz(w http.ResponseWriter, r *http.Request) {
	hl := h.deps.Health
	if !hl.Ready() {
		msg := "the model is loading"
		if hl.draining.Load() {
			msg = "the server is shutting down"
		}
		writeProblem(w, r, &Error{Status: http.StatusServiceUnavailable, Slug: "not-ready", Msg: msg})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ready\n"))
}

// since returns milliseconds since t.
func since(t time.Time) float64 { return ms(time.Since(t)) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
