package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vild/vild/handlers"
	"github.com/vild/vild/labelstudio"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/redisstore"
	"github.com/vild/vild/textbank"
	"github.com/vild/vild/urlfetch"
)

// modelConfig selects and loads the model.
type modelConfig struct {
	ModelDir       string // empty: the embedded default bundle
	ORTLib         string // ONNX Runtime library; empty: ort.DefaultLibraryPath()
	IntraOpThreads int
	// NoCrops leaves the teacher's crops out of the ensemble of a bundle
	// that asks for them (embedding.crops): faster, ViLD's two heads only.
	NoCrops bool
	DataDir string // on-disk caches and vocabularies
	// Embeddings, when set, is the text-embedding cache instead of the bbolt
	// file in DataDir (set by serve from --store, not a flag).
	Embeddings textbank.Store
}

// serveConfig is everything `vild serve` is told, validated.
type serveConfig struct {
	Addr        string
	MetricsAddr string // empty: no metrics listener
	// Store is where state lives: file://DIR (files, bbolt and memory; the
	// default, DIR = --data-dir) or redis:// / rediss:// (shared by replicas).
	Store string
	Model modelConfig
	API   handlers.Config

	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	ShutdownTimeout   time.Duration
	LogLevel          string

	// Auth is "none" (the /v1 routes are open) or "keys" (they need an API
	// key: vild keys create). No auth on an address other than loopback
	// needs InsecureNoAuth.
	Auth           string
	InsecureNoAuth bool
	// TLSCert and TLSKey are PEM files; both set: the API listener speaks TLS.
	TLSCert, TLSKey string
	// CORSOrigins may call the API from a browser; none: no CORS headers.
	CORSOrigins []string
	// AccessLogSample is the fraction of 2xx requests given an access-log
	// line (0..1); other statuses always get one.
	AccessLogSample float64
	// OTLPEndpoint, when set, is where traces are exported (OTLP/HTTP).
	OTLPEndpoint string
	// LabelStudio configures the Label Studio ML backend (/labelstudio).
	LabelStudio labelStudioConfig
}

// labelStudioConfig is the Label Studio ML backend's configuration and the
// policy of the image URLs it fetches (docs/labelstudio.md).
type labelStudioConfig struct {
	// URL is Label Studio's address (uploads are fetched from it); empty:
	// the hostname each project's /setup gives.
	URL   string
	Token string // Label Studio access token, sent to URL only
	// MaxTasks caps the tasks of one /predict.
	MaxTasks int
	// Fetch is the URL policy: hosts (URL's is added), CIDRs let through
	// the refused ranges, size and time limits, redirects.
	Fetch urlfetch.Options
}

// settings are the backend's settings with the fetcher built; URL's host
// joins the allow-list.
func (c labelStudioConfig) settings() (*labelstudio.Settings, error) {
	s := &labelstudio.Settings{Token: c.Token, MaxTasks: c.MaxTasks}
	opts := c.Fetch
	opts.AllowHosts = append([]string(nil), c.Fetch.AllowHosts...)
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
			return nil, fmt.Errorf("--label-studio-url %q: want an http(s) URL without credentials", c.URL)
		}
		s.URL = u
		opts.AllowHosts = append(opts.AllowHosts, u.Hostname())
	}
	f, err := urlfetch.New(opts)
	if err != nil {
		return nil, err
	}
	s.Fetcher = f
	return s, nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// parseCIDRs reads CIDRs; a bare address is a prefix of its full length.
func parseCIDRs(items []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range items {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--fetch-allow-cidrs: %q is not a CIDR (10.0.0.0/8) or an address", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// envSource reads defaults from the environment, collecting parse errors.
type envSource struct {
	get  func(string) string
	errs []error
}

func (e *envSource) str(key, def string) string {
	if v := e.get(key); v != "" {
		return v
	}
	return def
}

func (e *envSource) int(key string, def int) int {
	if v := e.get(key); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not an integer", key, v))
			return def
		}
		return n
	}
	return def
}

func (e *envSource) float(key string, def float64) float64 {
	if v := e.get(key); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not a number", key, v))
			return def
		}
		return f
	}
	return def
}

func (e *envSource) bool(key string, def bool) bool {
	if v := e.get(key); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not true or false", key, v))
			return def
		}
		return b
	}
	return def
}

func (e *envSource) dur(key string, def time.Duration) time.Duration {
	if v := e.get(key); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s=%q: not a duration", key, v))
			return def
		}
		return d
	}
	return def
}

func defaultDataDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "vild")
	}
	return ".vild"
}

// parseServeConfig reads flags over environment variables over defaults.
func parseServeConfig(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	env := &envSource{get: getenv}
	d := handlers.DefaultConfig()
	var c serveConfig
	fs := flag.NewFlagSet("vild serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Addr, "addr", env.str("VILD_ADDR", "127.0.0.1:8080"), "API listen address `HOST:PORT` (VILD_ADDR)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", env.str("VILD_METRICS_ADDR", "127.0.0.1:9090"), "listen address of /metrics and /debug/pprof; empty disables (VILD_METRICS_ADDR)")
	addModelFlags(fs, env, &c.Model)
	fs.StringVar(&c.Store, "store", env.str("VILD_STORE", ""), "where vocabularies, image sessions and the embedding cache live: `URL` file://DIR (default: file:// + --data-dir) or redis://[user:password@]host:port/db, rediss:// for TLS; the password may come from "+redisstore.PasswordEnv+" (VILD_STORE)")
	fs.IntVar(&c.API.Workers, "workers", env.int("VILD_WORKERS", 1), "concurrent inferences (VILD_WORKERS)")
	fs.IntVar(&c.API.QueueLength, "queue", env.int("VILD_QUEUE", 0), "requests waiting for a worker; more get 503 (VILD_QUEUE; 0 = 4 × workers)")
	fs.DurationVar(&c.API.MaxQueueWait, "max-queue-wait", env.dur("VILD_MAX_QUEUE_WAIT", d.MaxQueueWait), "longest wait for a worker before a 503 (VILD_MAX_QUEUE_WAIT)")
	fs.DurationVar(&c.API.RequestTimeout, "request-timeout", env.dur("VILD_REQUEST_TIMEOUT", d.RequestTimeout), "deadline of an API request, queue time included (VILD_REQUEST_TIMEOUT)")
	var maxBody, maxJSONImage, maxJSON int
	fs.IntVar(&maxBody, "max-body-bytes", env.int("VILD_MAX_BODY_BYTES", int(d.MaxBodyBytes)), "cap of raw and multipart image bodies (VILD_MAX_BODY_BYTES)")
	fs.IntVar(&maxJSONImage, "max-json-image-bytes", env.int("VILD_MAX_JSON_IMAGE_BYTES", int(d.MaxJSONImageBytes)), "cap of JSON bodies carrying base64 images (VILD_MAX_JSON_IMAGE_BYTES)")
	fs.IntVar(&maxJSON, "max-json-bytes", env.int("VILD_MAX_JSON_BYTES", int(d.MaxJSONBytes)), "cap of other JSON bodies (VILD_MAX_JSON_BYTES)")
	fs.IntVar(&c.API.MaxParts, "max-parts", env.int("VILD_MAX_PARTS", d.MaxParts), "parts of a multipart body (VILD_MAX_PARTS)")
	fs.IntVar(&c.API.MaxPartHeaderBytes, "max-part-header-bytes", env.int("VILD_MAX_PART_HEADER_BYTES", d.MaxPartHeaderBytes), "header bytes of one multipart part (VILD_MAX_PART_HEADER_BYTES)")
	fs.IntVar(&c.API.MaxCategories, "max-categories", env.int("VILD_MAX_CATEGORIES", d.MaxCategories), "names per request (VILD_MAX_CATEGORIES)")
	fs.IntVar(&c.API.MaxVocabularyCategories, "max-vocabulary-categories", env.int("VILD_MAX_VOCABULARY_CATEGORIES", d.MaxVocabularyCategories), "names per stored vocabulary (VILD_MAX_VOCABULARY_CATEGORIES)")
	fs.IntVar(&c.API.MaxCategoryLength, "max-category-length", env.int("VILD_MAX_CATEGORY_LENGTH", d.MaxCategoryLength), "characters per name (VILD_MAX_CATEGORY_LENGTH)")
	fs.IntVar(&c.API.MaxBatch, "max-batch", env.int("VILD_MAX_BATCH", d.MaxBatch), "images per JSON request (VILD_MAX_BATCH)")
	fs.IntVar(&c.API.MaxImageSide, "max-image-side", env.int("VILD_MAX_IMAGE_SIDE", d.MaxImageSide), "largest image width or height (VILD_MAX_IMAGE_SIDE)")
	fs.IntVar(&c.API.MaxImagePixels, "max-image-pixels", env.int("VILD_MAX_IMAGE_PIXELS", d.MaxImagePixels), "largest width × height (VILD_MAX_IMAGE_PIXELS)")
	fs.IntVar(&c.API.MaxDetections, "max-detections", env.int("VILD_MAX_DETECTIONS", d.MaxDetections), "detections per image, at most (VILD_MAX_DETECTIONS)")
	fs.IntVar(&c.API.MaxSessions, "max-sessions", env.int("VILD_MAX_SESSIONS", d.MaxSessions), "image sessions kept (VILD_MAX_SESSIONS)")
	fs.DurationVar(&c.API.SessionTTL, "session-ttl", env.dur("VILD_SESSION_TTL", d.SessionTTL), "image session lifetime (VILD_SESSION_TTL)")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", env.dur("VILD_READ_HEADER_TIMEOUT", 5*time.Second), "longest time to read a request's headers (VILD_READ_HEADER_TIMEOUT)")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", env.dur("VILD_READ_TIMEOUT", 30*time.Second), "longest time to read a whole request, body included (VILD_READ_TIMEOUT)")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", env.dur("VILD_WRITE_TIMEOUT", 35*time.Second), "longest time to write an answer; must exceed --request-timeout (VILD_WRITE_TIMEOUT)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", env.dur("VILD_IDLE_TIMEOUT", 65*time.Second), "how long an idle keep-alive connection stays open (VILD_IDLE_TIMEOUT)")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", env.int("VILD_MAX_HEADER_BYTES", 1<<20), "largest request header block, in bytes (VILD_MAX_HEADER_BYTES)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", env.dur("VILD_SHUTDOWN_TIMEOUT", 25*time.Second), "how long SIGTERM waits for in-flight requests (VILD_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&c.LogLevel, "log-level", env.str("VILD_LOG_LEVEL", "info"), "debug, info, warn or error (VILD_LOG_LEVEL)")
	fs.StringVar(&c.Auth, "auth", env.str("VILD_AUTH", "none"), "none, or keys: the /v1 routes need an API key made with vild keys create (VILD_AUTH)")
	fs.BoolVar(&c.InsecureNoAuth, "insecure-no-auth", env.bool("VILD_INSECURE_NO_AUTH", false), "serve with --auth none on an address other than loopback (VILD_INSECURE_NO_AUTH)")
	fs.Float64Var(&c.API.KeyRPS, "key-rps", env.float("VILD_KEY_RPS", d.KeyRPS), "requests per second of an API key that sets none (VILD_KEY_RPS; 0 = unlimited)")
	fs.IntVar(&c.API.KeyBurst, "key-burst", env.int("VILD_KEY_BURST", d.KeyBurst), "burst of an API key that sets none (VILD_KEY_BURST; 0 = the rate rounded up)")
	fs.IntVar(&c.API.KeyMaxConcurrent, "key-max-concurrent", env.int("VILD_KEY_MAX_CONCURRENT", d.KeyMaxConcurrent), "concurrent inferences of an API key that sets none (VILD_KEY_MAX_CONCURRENT; 0 = unlimited)")
	fs.StringVar(&c.TLSCert, "tls-cert", env.str("VILD_TLS_CERT", ""), "certificate chain `FILE` (PEM); with --tls-key the API listener speaks TLS (VILD_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env.str("VILD_TLS_KEY", ""), "private key `FILE` (PEM) of --tls-cert (VILD_TLS_KEY)")
	cors := fs.String("cors-origins", env.str("VILD_CORS_ORIGINS", ""), "comma-separated origins (https://app.example) that may call the API from a browser; empty: none (VILD_CORS_ORIGINS)")
	fs.Float64Var(&c.AccessLogSample, "access-log-sample", env.float("VILD_ACCESS_LOG_SAMPLE", 1), "fraction (0..1) of 2xx requests given an access-log line; other statuses always are (VILD_ACCESS_LOG_SAMPLE)")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", env.str("VILD_OTLP_ENDPOINT", ""), "`URL` (http://collector:4318) to export traces to over OTLP/HTTP; empty: no tracing (VILD_OTLP_ENDPOINT)")
	ls := &c.LabelStudio
	fs.StringVar(&ls.URL, "label-studio-url", env.str("VILD_LABEL_STUDIO_URL", ""), "Label Studio's `URL` (http://label-studio:8080): task images given as upload paths are fetched from it; empty: from the hostname of each project's /setup (VILD_LABEL_STUDIO_URL)")
	// The token's default is not the environment's: -h would print it.
	fs.StringVar(&ls.Token, "label-studio-token", "", "Label Studio access token sent to --label-studio-url with upload fetches; prefer the environment (VILD_LABEL_STUDIO_TOKEN)")
	fs.IntVar(&ls.MaxTasks, "label-studio-max-tasks", env.int("VILD_LABEL_STUDIO_MAX_TASKS", labelstudio.DefaultMaxTasks), "tasks per Label Studio /predict request (VILD_LABEL_STUDIO_MAX_TASKS)")
	allowHosts := fs.String("fetch-allow-hosts", env.str("VILD_FETCH_ALLOW_HOSTS", ""), "comma-separated hosts task image URLs may name: host, *.domain or * (any); --label-studio-url's host is added; empty: none (VILD_FETCH_ALLOW_HOSTS)")
	allowCIDRs := fs.String("fetch-allow-cidrs", env.str("VILD_FETCH_ALLOW_CIDRS", ""), "comma-separated CIDRs image fetches may reach although loopback, link-local, private or reserved (10.0.0.0/8 for a Label Studio on the private network) (VILD_FETCH_ALLOW_CIDRS)")
	var fetchMax int
	fs.IntVar(&fetchMax, "fetch-max-bytes", env.int("VILD_FETCH_MAX_BYTES", 0), "largest image fetched from a URL, in bytes (VILD_FETCH_MAX_BYTES; 0 = --max-body-bytes)")
	fs.DurationVar(&ls.Fetch.Timeout, "fetch-timeout", env.dur("VILD_FETCH_TIMEOUT", 5*time.Second), "longest time to fetch one image URL, redirects included (VILD_FETCH_TIMEOUT)")
	fs.IntVar(&ls.Fetch.MaxRedirects, "fetch-max-redirects", env.int("VILD_FETCH_MAX_REDIRECTS", urlfetch.DefaultMaxRedirects), "redirects followed per image URL, each checked like the URL (VILD_FETCH_MAX_REDIRECTS)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if ls.Token == "" {
		ls.Token = getenv("VILD_LABEL_STUDIO_TOKEN")
	}
	c.CORSOrigins = splitList(*cors)
	ls.Fetch.AllowHosts = splitList(*allowHosts)
	ls.Fetch.MaxBytes = int64(fetchMax)
	if fs.NArg() > 0 {
		return c, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	c.API.MaxBodyBytes, c.API.MaxJSONImageBytes, c.API.MaxJSONBytes = int64(maxBody), int64(maxJSONImage), int64(maxJSON)
	if c.Model.IntraOpThreads == 0 {
		c.Model.IntraOpThreads = max(1, runtime.GOMAXPROCS(0)/max(1, c.API.Workers))
	}
	errs := env.errs
	var err error
	if c.Store, c.Model.DataDir, err = resolveStore(c.Store, c.Model.DataDir); err != nil {
		errs = append(errs, err)
	}
	if c.Addr == "" {
		errs = append(errs, errors.New("--addr must not be empty"))
	}
	if !(c.AccessLogSample >= 0 && c.AccessLogSample <= 1) {
		errs = append(errs, fmt.Errorf("--access-log-sample %v: want 0..1", c.AccessLogSample))
	}
	if c.OTLPEndpoint != "" {
		if u, err := url.Parse(c.OTLPEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--otlp-endpoint %q: want an http(s) URL", c.OTLPEndpoint))
		}
	}
	switch c.Auth {
	case "keys":
	case "none":
		if c.Addr != "" && !loopback(c.Addr) && !c.InsecureNoAuth {
			errs = append(errs, fmt.Errorf("--addr %s is not a loopback address and --auth is none: anyone who reaches the port could use and change everything. Serve with --auth keys (make a key with vild keys create), or give --insecure-no-auth to serve without keys anyway", c.Addr))
		}
	default:
		errs = append(errs, fmt.Errorf("--auth %q: use none or keys", c.Auth))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together: give both or neither"))
	}
	if c.API.KeyRPS < 0 || c.API.KeyBurst < 0 || c.API.KeyMaxConcurrent < 0 {
		errs = append(errs, errors.New("--key-rps, --key-burst and --key-max-concurrent must not be negative (0 = unlimited)"))
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"read-header-timeout", c.ReadHeaderTimeout}, {"read-timeout", c.ReadTimeout}, {"write-timeout", c.WriteTimeout},
		{"idle-timeout", c.IdleTimeout}, {"shutdown-timeout", c.ShutdownTimeout}} {
		if t.d <= 0 {
			errs = append(errs, fmt.Errorf("--%s must be positive", t.name))
		}
	}
	if c.WriteTimeout <= c.API.RequestTimeout {
		errs = append(errs, fmt.Errorf("--write-timeout (%s) must exceed --request-timeout (%s) so deadline errors reach the client", c.WriteTimeout, c.API.RequestTimeout))
	}
	if c.MaxHeaderBytes <= 0 {
		errs = append(errs, errors.New("--max-header-bytes must be positive"))
	}
	if c.API.Workers <= 0 || c.API.QueueLength < 0 {
		errs = append(errs, errors.New("--workers must be positive and --queue not negative"))
	}
	var cidrErr error
	if ls.Fetch.AllowCIDRs, cidrErr = parseCIDRs(splitList(*allowCIDRs)); cidrErr != nil {
		errs = append(errs, cidrErr)
	}
	if ls.Fetch.MaxBytes == 0 {
		ls.Fetch.MaxBytes = c.API.MaxBodyBytes
	}
	if ls.MaxTasks <= 0 || ls.Fetch.MaxBytes < 0 || ls.Fetch.Timeout <= 0 || ls.Fetch.MaxRedirects < 0 {
		errs = append(errs, errors.New("--label-studio-max-tasks and --fetch-timeout must be positive, --fetch-max-bytes and --fetch-max-redirects not negative"))
	}
	if ls.Fetch.MaxRedirects == 0 {
		ls.Fetch.MaxRedirects = -1 // urlfetch: none
	}
	if _, err := ls.settings(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("serve: %w", err)
	}
	return c, nil
}

// resolveStore reads --store: "" is file:// + dataDir; file://DIR sets the
// data directory; redis:// and rediss:// are kept as they are.
func resolveStore(store, dataDir string) (string, string, error) {
	switch u, err := url.Parse(store); {
	case store == "":
		return "file://" + dataDir, dataDir, nil
	case err != nil:
		return store, dataDir, errors.New("--store: not a URL")
	case u.Scheme == "file":
		if u.Host+u.Path == "" {
			return store, dataDir, errors.New("--store file://DIR needs a directory")
		}
		return store, u.Host + u.Path, nil
	case u.Scheme == "redis" || u.Scheme == "rediss":
		return store, dataDir, nil
	default:
		return store, dataDir, fmt.Errorf("--store: scheme %q: use file://, redis:// or rediss://", u.Scheme)
	}
}

// loopback reports whether addr (HOST:PORT) listens on loopback only:
// 127.0.0.0/8, ::1 or localhost. An empty host is every address.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// addModelFlags adds the flags that choose and load the model.
func addModelFlags(fs *flag.FlagSet, env *envSource, m *modelConfig) {
	fs.StringVar(&m.ModelDir, "model", env.str("VILD_MODEL", ""), "model bundle `DIR`; empty: the embedded default (VILD_MODEL)")
	fs.StringVar(&m.ORTLib, "ort-lib", env.str(ort.LibraryEnv, ""), "ONNX Runtime shared library `PATH` (VILD_ORT_LIB; default "+ort.DefaultLibraryRel+")")
	fs.IntVar(&m.IntraOpThreads, "intra-op-threads", env.int("VILD_INTRA_OP_THREADS", 0), "ONNX Runtime threads per inference (VILD_INTRA_OP_THREADS; 0 = cores / workers)")
	fs.BoolVar(&m.NoCrops, "no-crops", env.bool("VILD_NO_CROPS", false), "leave the teacher's view of the best regions' crops out of the ensemble (VILD_NO_CROPS): faster, less accurate on novel categories (docs/api.md \"Heads\")")
	fs.StringVar(&m.DataDir, "data-dir", env.str("VILD_DATA_DIR", defaultDataDir()), "vocabularies and the text-embedding cache (VILD_DATA_DIR)")
}
