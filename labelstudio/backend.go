// Package labelstudio is vild's Label Studio ML backend: the /health,
// /setup and /predict routes Label Studio calls on a connected model
// (docs/labelstudio.md). A project's label config names the categories: the
// Label values of its RectangleLabels tags. Each task's image comes from a
// URL (fetched under urlfetch's allow-list and address checks), a Label
// Studio upload path (fetched from Label Studio with its token), or a data:
// URI; the boxes come back in Label Studio's percent coordinates. Detection
// runs on the server's own inference runner (admission queue, limits),
// vocabulary builder and decoder, as POST /v1/detect does.
package labelstudio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/inference"
	"github.com/vild/vild/request"
	"github.com/vild/vild/urlfetch"
	"github.com/vild/vild/vocabulary"
)

// Settings are what the command configures.
type Settings struct {
	// URL is Label Studio's address: relative upload paths
	// (/data/upload/…) are fetched from it, with Token. Nil: from the
	// hostname a project's /setup gave.
	URL *url.URL
	// Token is a Label Studio access token, sent as "Authorization: Token …"
	// to URL's host only.
	Token string
	// Fetcher fetches image URLs and uploads; its allow-list must hold URL's
	// host. Nil: only data: URIs are read.
	Fetcher *urlfetch.Fetcher
	// MaxTasks caps the tasks of one /predict (default 8).
	MaxTasks int
}

// DefaultMaxTasks is the default cap of tasks per /predict.
const DefaultMaxTasks = 8

// maxProjects caps the projects whose /setup hostname is remembered.
const maxProjects = 256

// Server is what the backend uses of the server: the same runner, vocabulary
// builder and option defaults as /v1/detect, and its problem writer.
type Server struct {
	Run    *inference.Runner
	Vocabs *request.Vocabularies
	Opts   *request.Options
	// Model is the bundle's id, reported as model_version.
	Model string
	// MaxBodyBytes caps a request body (data: URIs make /predict large).
	MaxBodyBytes int64
	// Draining tells whether shutdown has begun (nil: never).
	Draining func() bool
	// Fail answers an error as problem+json.
	Fail func(w http.ResponseWriter, r *http.Request, err error)
}

// Backend is the resource; New makes one.
type Backend struct {
	set Settings
	srv Server

	mu       sync.Mutex
	projects map[ProjectID]origin // from /setup, when Settings.URL is nil
	order    []ProjectID          // insertion order, oldest first
}

// origin is a Label Studio address with the token that goes with it.
type origin struct {
	base  *url.URL
	token string
}

// New returns the backend.
func New(set Settings, srv Server) *Backend {
	if set.MaxTasks <= 0 {
		set.MaxTasks = DefaultMaxTasks
	}
	return &Backend{set: set, srv: srv, projects: map[ProjectID]origin{}}
}

// Routes mounts the protocol's routes (under /labelstudio on the server).
func (b *Backend) Routes() chi.Router {
	r := chi.NewRouter()
	r.Get("/health", b.health)
	r.Post("/setup", b.handle(b.setup))
	r.Post("/predict", b.handle(b.predict))
	return r
}

func (b *Backend) handle(fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			b.srv.Fail(w, r, err)
		}
	}
}

// health godoc
//
//	@Summary	Label Studio ML backend: health
//	@Tags		labelstudio
//	@Produce	json
//	@Success	200	{object}	labelstudio.Health
//	@Security	ApiKey
//	@Failure	401	{object}	api.Problem	"no API key (with --auth keys): Label Studio sends it as the basic-auth password"
//	@Router		/labelstudio/health [get]
func (b *Backend) health(w http.ResponseWriter, r *http.Request) {
	_ = writeJSON(w, Health{Status: "UP", ModelClass: "vild", ModelVersion: b.srv.Model})
}

// setup godoc
//
//	@Summary		Label Studio ML backend: setup
//	@Description	Label Studio calls it when the model is connected: the label config is checked and the model version returned. Without --label-studio-url, the hostname and access_token are kept (for this project, in this process) to fetch relative upload paths.
//	@Tags			labelstudio
//	@Accept			json
//	@Produce		json
//	@Param			request	body		labelstudio.SetupRequest	true	"project, label config (schema), hostname, access token"
//	@Success		200		{object}	labelstudio.SetupResponse
//	@Failure		400		{object}	api.Problem	"invalid JSON or a label config without RectangleLabels on an Image"
//	@Security		ApiKey
//	@Failure		401	{object}	api.Problem	"no API key (with --auth keys)"
//	@Router			/labelstudio/setup [post]
func (b *Backend) setup(w http.ResponseWriter, r *http.Request) error {
	var req SetupRequest
	if err := b.decode(w, r, &req); err != nil {
		return err
	}
	if req.Schema != "" {
		if _, err := ParseConfig(req.Schema); err != nil {
			return configProblem(err)
		}
	}
	if b.set.URL == nil && req.Hostname != "" {
		u, err := url.Parse(req.Hostname)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return api.BadRequest("invalid-request", "hostname must be an http(s) URL", err)
		}
		b.remember(req.Project, origin{base: u, token: req.AccessToken})
	}
	return writeJSON(w, SetupResponse{ModelVersion: b.srv.Model})
}

// remember keeps a project's origin, forgetting the oldest past maxProjects.
func (b *Backend) remember(p ProjectID, o origin) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.projects[p]; !ok {
		b.order = append(b.order, p)
		if len(b.order) > maxProjects {
			delete(b.projects, b.order[0])
			b.order = b.order[1:]
		}
	}
	b.projects[p] = o
}

// origin is where a project's relative paths are fetched from.
func (b *Backend) origin(p ProjectID) (origin, bool) {
	if b.set.URL != nil {
		return origin{base: b.set.URL, token: b.set.Token}, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.projects[p]
	return o, ok
}

// predict godoc
//
//	@Summary		Label Studio ML backend: pre-annotate tasks
//	@Description	Each task's image (data.<field> of the label config's Image tag: an http(s) URL on the fetch allow-list, a Label Studio upload path, or a data: URI) is searched for the Label values of the RectangleLabels tags; boxes come back in percent of the image, one prediction per task.
//	@Tags			labelstudio
//	@Accept			json
//	@Produce		json
//	@Param			request	body		labelstudio.PredictRequest	true	"tasks, project, label config"
//	@Success		200		{object}	labelstudio.PredictResponse
//	@Failure		400		{object}	api.Problem	"invalid JSON, label config or task; corrupt image"
//	@Failure		413		{object}	api.Problem	"body too large"
//	@Failure		422		{object}	api.Problem	"too many tasks; an image URL the fetch policy refuses or over the size limit; image dimensions over the limits"
//	@Failure		502		{object}	api.Problem	"an image URL could not be fetched"
//	@Failure		503		{object}	api.Problem	"queue full or draining; see Retry-After"
//	@Failure		504		{object}	api.Problem	"request deadline or fetch time limit exceeded"
//	@Security		ApiKey
//	@Failure		401	{object}	api.Problem	"no API key (with --auth keys): Label Studio sends it as the basic-auth password"
//	@Failure		403	{object}	api.Problem	"the API key lacks the detect scope"
//	@Failure		429	{object}	api.Problem	"the API key's rate or concurrent inferences are used up"
//	@Router			/labelstudio/predict [post]
func (b *Backend) predict(w http.ResponseWriter, r *http.Request) error {
	if b.srv.Draining != nil && b.srv.Draining() {
		return &api.Error{Status: http.StatusServiceUnavailable, Slug: "draining", Msg: "the server is shutting down"}
	}
	ctx := r.Context()
	var req PredictRequest
	if err := b.decode(w, r, &req); err != nil {
		return err
	}
	if len(req.Tasks) == 0 || len(req.Tasks) > b.set.MaxTasks {
		return api.Errorf(http.StatusUnprocessableEntity, "too-many-tasks",
			"a predict request holds 1 to %d tasks", b.set.MaxTasks)
	}
	controls, err := ParseConfig(req.LabelConfig)
	if err != nil {
		return configProblem(err)
	}
	queries := make([]controlQuery, len(controls))
	for i, c := range controls {
		if queries[i], err = b.query(ctx, c); err != nil {
			return err
		}
	}
	resp := PredictResponse{Results: make([]Prediction, len(req.Tasks)), ModelVersion: b.srv.Model}
	for i, task := range req.Tasks {
		p, err := b.predictTask(ctx, i, task, req.Project, controls, queries)
		if err != nil {
			return err
		}
		resp.Results[i] = p
	}
	return writeJSON(w, resp)
}

// controlQuery is what one RectangleLabels tag asks of the detector.
type controlQuery struct {
	vocab    *detector.Vocabulary
	opts     detector.Options
	reported map[string]string // category (normalised) → the name results report
}

// query builds a control's vocabulary (cached by digest, as /v1/detect's) and options.
func (b *Backend) query(ctx context.Context, c Control) (controlQuery, error) {
	k := controlQuery{reported: map[string]string{}}
	o := api.DetectOptions{ScoreThreshold: c.ScoreThreshold}
	for _, l := range c.Labels {
		norm := vocabulary.NormName(l.Value)
		if _, dup := k.reported[norm]; dup {
			continue
		}
		k.reported[norm] = l.Reported()
		o.Categories = append(o.Categories, l.Value)
		for _, s := range l.PredictedValues {
			if vocabulary.NormName(s) == norm {
				continue
			}
			if o.Synonyms == nil {
				o.Synonyms = map[string][]string{}
			}
			o.Synonyms[l.Value] = append(o.Synonyms[l.Value], s)
		}
	}
	var err error
	if k.opts, err = b.srv.Opts.Resolve(o); err != nil {
		return k, err
	}
	k.vocab, err = b.srv.Vocabs.Resolve(ctx, o)
	return k, err
}

// predictTask runs every control on one task: one prediction.
func (b *Backend) predictTask(ctx context.Context, i int, task Task, project ProjectID, controls []Control, queries []controlQuery) (Prediction, error) {
	p := Prediction{Result: []Region{}, ModelVersion: b.srv.Model}
	images := map[string][]byte{} // data key → bytes, read once per task
	var sum float64
	for ci, c := range controls {
		data, ok := images[c.DataKey]
		if !ok {
			src, isString := task.Data[c.DataKey].(string)
			if !isString || src == "" {
				return p, api.BadRequest("invalid-task", fmt.Sprintf(
					"task at index %d has no image in the data field its label config's Image tag names", i), nil)
			}
			var err error
			if data, err = b.load(ctx, i, src, project); err != nil {
				return p, err
			}
			images[c.DataKey] = data
		}
		out, err := b.srv.Run.Detect(ctx, data, queries[ci].vocab, queries[ci].opts)
		if err != nil {
			return p, fmt.Errorf("labelstudio: task at index %d: %w", i, err)
		}
		W, H := float64(out.Result.Width), float64(out.Result.Height)
		for _, d := range out.Result.Detections {
			label, ok := queries[ci].reported[vocabulary.NormName(d.Label)]
			if !ok {
				label = d.Label
			}
			x1, y1, x2, y2 := float64(d.Box[0]), float64(d.Box[1]), float64(d.Box[2]), float64(d.Box[3])
			p.Result = append(p.Result, Region{
				ID: "r" + strconv.Itoa(len(p.Result)), FromName: c.Name, ToName: c.ToName, Type: "rectanglelabels",
				OriginalWidth: out.Result.Width, OriginalHeight: out.Result.Height,
				Value: RegionValue{X: 100 * x1 / W, Y: 100 * y1 / H, Width: 100 * (x2 - x1) / W, Height: 100 * (y2 - y1) / H,
					RectangleLabels: []string{label}},
				Score: float64(d.Score),
			})
			sum += float64(d.Score)
		}
	}
	if n := len(p.Result); n > 0 {
		p.Score = sum / float64(n)
	}
	return p, nil
}

// decode reads a JSON body within the byte cap; fields Label Studio adds
// that the backend does not use are ignored.
func (b *Backend) decode(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > b.srv.MaxBodyBytes {
		return &http.MaxBytesError{Limit: b.srv.MaxBodyBytes}
	}
	body := http.MaxBytesReader(w, r.Body, b.srv.MaxBodyBytes)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return api.BadRequest("invalid-json", "the request body is empty", err)
		}
		return api.BadRequest("invalid-json", "invalid JSON body, or a field of the wrong type", err)
	}
	return nil
}

// configProblem answers a label config this backend cannot serve.
func configProblem(err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return api.BadRequest("invalid-label-config", "label config: "+ce.Msg, err)
	}
	return err
}

func writeJSON(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("labelstudio: encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
	return nil
}
