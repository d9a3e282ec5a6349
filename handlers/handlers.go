// Package handlers is vild's HTTP API: detection, vocabularies, image sessions,
// text embeddings, model info, health, the web page and the Swagger UI. Each
// resource is a small type with Routes() that holds only what it uses; the
// domain lives in other packages (vocabulary, session, admission, detector).
// Errors are RFC 9457 problem+json, mapped from the domain's sentinel errors
// in one place (problem.go); every limit is a field of Config.
//
//	@title			vild API
//	@version		1
//	@description	Open-vocabulary object detection after ViLD (Gu et al., ICLR 2022). POST an image with any list of category names; get boxes, labels and scores back. Errors are RFC 9457 problem+json.
//	@license.name	Apache-2.0
//	@BasePath		/
//
//	@securityDefinitions.apikey	ApiKey
//	@in							header
//	@name						Authorization
//	@description				Bearer vild_…: a key made with vild keys create (X-API-Key: vild_… also works). Needed on the /v1 routes when the server runs with --auth keys.
package handlers

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	httpSwagger "github.com/swaggo/http-swagger/v2"

	"github.com/vild/vild/access"
	"github.com/vild/vild/admission"
	"github.com/vild/vild/api"
	"github.com/vild/vild/apikey"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/inference"
	"github.com/vild/vild/labelstudio"
	"github.com/vild/vild/openapi" // registers the generated spec for /docs
	"github.com/vild/vild/request"
	"github.com/vild/vild/session"
	"github.com/vild/vild/vocabulary"
)

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

// Draining reports whether shutdown has begun.
func (h *Health) Draining() bool { return h.draining.Load() }

// Deps is everything the HTTP layer needs.
type Deps struct {
	Detector detector.Detector
	Embedder vocabulary.Embedder
	Decoder  inference.Decoder // imageio.Decoder
	// NameError is the embedder's error for a name it cannot encode (400).
	NameError    error
	Model        api.Model
	Vocabularies vocabulary.Store // nil: vocabulary routes answer 404
	// StoreCheck, when set, tells whether a shared store answers; /readyz is
	// 503 while it does not.
	StoreCheck func(ctx context.Context) error
	Sessions   session.Store // nil: in memory, bounded by Config.MaxSessions and SessionTTL
	Health     *Health
	Metrics    *Metrics // nil: metrics are not recorded
	Logger     *slog.Logger
	Config     Config
	// Web is the static site served at / (nil: none).
	Web fs.FS
	// Keys, when set, makes the /v1 and /labelstudio routes require an API key with the
	// route's scope (access.Routes); nil: they are open.
	Keys apikey.Store
	// Limiter holds each key to its limits (nil: apikey.Local, this process
	// only); Config's Key* fields are the defaults.
	Limiter apikey.Limiter
	// CORSOrigins are the origins allowed to call the API from a browser
	// ("*": any); none: no CORS headers.
	CORSOrigins []string
	// LabelStudio, when set, serves Label Studio's ML backend protocol under /labelstudio.
	LabelStudio *labelstudio.Settings
	// Middleware wraps every route, outermost (observe.Options.Middleware).
	Middleware []func(http.Handler) http.Handler
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
	if deps.Sessions == nil {
		deps.Sessions = session.NewMemory(cfg.MaxSessions, cfg.SessionTTL)
	}
	p := &problems{cfg: cfg, log: deps.Logger, metrics: deps.Metrics, nameError: deps.NameError}
	in := request.Reader{Limits: request.Limits{MaxBodyBytes: cfg.MaxBodyBytes, MaxJSONImageBytes: cfg.MaxJSONImageBytes,
		MaxJSONBytes: cfg.MaxJSONBytes, MaxParts: cfg.MaxParts, MaxPartHeaderBytes: cfg.MaxPartHeaderBytes, MaxBatch: cfg.MaxBatch}}
	m := deps.Metrics
	run := &inference.Runner{
		Detector: deps.Detector, Decoder: deps.Decoder, Observe: m.stage, // queue wait included
		Queue: admission.New(cfg.Workers, cfg.QueueLength, cfg.MaxQueueWait, admission.Gauges{Waiting: m.queueDepth, Running: m.inflight}),
	}
	vocabs := &request.Vocabularies{Builder: vocabulary.NewBuilder(deps.Embedder, deps.Model.BaseCategories, cfg.VocabularyCacheSize),
		Store: deps.Vocabularies, Defaults: deps.Model.Categories,
		MaxNames: cfg.MaxCategories, MaxStoredNames: cfg.MaxVocabularyCategories, MaxNameLength: cfg.MaxCategoryLength, Decoder: deps.Decoder}
	if w, ok := deps.Vocabularies.(vocabulary.Watcher); ok {
		// A vocabulary changed by any replica: its old embeddings leave memory.
		w.Watch(func(_, oldETag string) { vocabs.Builder.Forget(oldETag) })
	}
	opts := &request.Options{Defaults: deps.Model.Defaults, Caps: request.Caps{MaxDetections: cfg.MaxDetections,
		MaxRunnersUp: cfg.MaxRunnersUp, MaxLabelsPerBox: cfg.MaxLabelsPerBox, Masks: deps.Model.Masks, StableScores: deps.Model.Defaults.Scores == detector.ScoresStable}}

	r := chi.NewRouter()
	// instrument outermost: a recovered panic's 500 is counted; CORS
	// preflights are answered before the key check.
	r.Use(deps.Middleware...)
	r.Use(m.instrument, p.recoverer, access.SecurityHeaders, access.CORS(deps.CORSOrigins))
	health := healthResource{health: deps.Health, storeCheck: deps.StoreCheck}
	r.Get("/livez", health.livez)
	r.Get("/readyz", health.readyz)
	guard := func(next http.Handler) http.Handler { return next }
	if deps.Keys != nil {
		if deps.Limiter == nil {
			deps.Limiter = apikey.NewLocal()
		}
		guard = (&access.Guard{Auth: apikey.Authenticator{Store: deps.Keys}, Limiter: deps.Limiter,
			Defaults: cfg.keyLimits(), Route: access.Finder(r), Fail: p.write}).Middleware
	}
	r.Route("/v1", func(r chi.Router) {
		r.Use(deadline(cfg), guard)
		r.Mount("/detect", detectResource{p: p, in: in, run: run, vocabs: vocabs, opts: opts,
			health: deps.Health, model: deps.Model.ID, log: deps.Logger, metrics: m}.Routes())
		r.Mount("/vocabularies", vocabulariesResource{p: p, in: in, vocabs: vocabs}.Routes())
		r.Mount("/images", imagesResource{p: p, in: in, run: run, vocabs: vocabs, opts: opts,
			sessions: deps.Sessions, health: deps.Health, model: deps.Model.ID}.Routes())
		r.Mount("/embeddings", embeddingsResource{p: p, in: in, embedder: deps.Embedder, model: deps.Model, cfg: cfg}.Routes())
		r.Mount("/models", modelsResource{p: p, model: deps.Model}.Routes())
	})
	if deps.LabelStudio != nil {
		r.With(deadline(cfg), guard).Mount("/labelstudio", labelstudio.New(*deps.LabelStudio, labelstudio.Server{Run: run, Vocabs: vocabs,
			Opts: opts, Model: deps.Model.ID, MaxBodyBytes: cfg.MaxJSONImageBytes, Draining: deps.Health.Draining, Fail: p.write}).Routes())
	}
	r.Get("/docs", http.RedirectHandler("/docs/index.html", http.StatusMovedPermanently).ServeHTTP)
	r.Get("/docs/openapi3.json", openapi.ServeV3)
	r.Get("/docs/*", httpSwagger.Handler(httpSwagger.URL("/docs/doc.json")))
	if deps.Web != nil {
		r.Handle("/*", http.FileServerFS(deps.Web))
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		p.write(w, r, api.Errorf(http.StatusNotFound, "not-found", "no such route"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		p.write(w, r, api.Errorf(http.StatusMethodNotAllowed, "method-not-allowed", "method not allowed on this route"))
	})
	return r, nil
}

// Loading answers while the model loads: alive, not ready, every other route
// a 503 not-ready problem with Retry-After.
func Loading() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", healthResource{}.livez)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "5")
		writeProblem(w, r, errNotReady)
	})
	return mux
}

// deadline bounds every API request, queue time included.
func deadline(cfg Config) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), cfg.RequestTimeout)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// healthResource answers the probes.
type healthResource struct {
	health     *Health
	storeCheck func(ctx context.Context) error
}

// storeCheckTimeout bounds the shared store's answer to a readiness probe.
const storeCheckTimeout = time.Second

var errNotReady = &api.Error{Status: http.StatusServiceUnavailable, Slug: "not-ready", Msg: "the model is loading"}

// livez godoc
//
//	@Summary	Liveness: the process is up
//	@Tags		health
//	@Produce	plain
//	@Success	200	{string}	string	"ok"
//	@Router		/livez [get]
func (healthResource) livez(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz godoc
//
//	@Summary	Readiness: the model is loaded, a warm-up inference passed and the shared store (if any) answers; 503 while loading, draining or while the shared store does not
//	@Tags		health
//	@Produce	plain
//	@Success	200	{string}	string	"ready"
//	@Failure	503	{object}	api.Problem
//	@Router		/readyz [get]
func (h healthResource) readyz(w http.ResponseWriter, r *http.Request) {
	if !h.health.Ready() {
		e := errNotReady
		if h.health.Draining() {
			e = &api.Error{Status: http.StatusServiceUnavailable, Slug: "not-ready", Msg: "the server is shutting down"}
		}
		writeProblem(w, r, e)
		return
	}
	if h.storeCheck != nil {
		ctx, cancel := context.WithTimeout(r.Context(), storeCheckTimeout)
		defer cancel()
		if err := h.storeCheck(ctx); err != nil {
			writeProblem(w, r, &api.Error{Status: http.StatusServiceUnavailable, Slug: "not-ready",
				Msg: "the shared store is unavailable"})
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ready\n"))
}

// route is a resource's handler: it returns an error instead of writing one.
type route func(w http.ResponseWriter, r *http.Request) error
