package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vild/vild/handlers"
	"github.com/vild/vild/observe"
	"github.com/vild/vild/web"
)

func runServe(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseServeConfig(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("serve: --log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log) // libraries that log without a logger given (textbank) log the same way
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	return serve(ctx, cfg, log, loadModel, func(addr, metricsAddr string) {
		fmt.Fprintf(stdout, "vild: listening on %s://%s (web page at /, API docs at /docs)\n", scheme, addr)
		if metricsAddr != "" {
			fmt.Fprintf(stdout, "vild: metrics on http://%s/metrics\n", metricsAddr)
		}
	})
}

// newHTTPServer applies the configured timeouts and header cap.
func newHTTPServer(cfg serveConfig, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// swapHandler serves a loading placeholder until the API is ready.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// serve listens at once (live, not ready), loads the model, warms it up, turns
// ready and serves until ctx ends; then it drains: readiness 503, listeners
// closed, in-flight requests finished within the shutdown timeout.
func serve(ctx context.Context, cfg serveConfig, log *slog.Logger, load loader, listening func(addr, metricsAddr string)) error {
	var tlsConfig *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("serve: --tls-cert, --tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := handlers.NewMetrics(reg)
	health := &handlers.Health{}

	if cfg.OTLPEndpoint != "" {
		stop, err := observe.ExportTraces(ctx, cfg.OTLPEndpoint)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := stop(sctx); err != nil {
				log.Warn("flushing traces", "cause", err)
			}
		}()
	}
	obs := observe.Options{Log: log, Sample: cfg.AccessLogSample}
	swap := &swapHandler{}
	swap.set(obs.Middleware(handlers.Loading()))
	srv := newHTTPServer(cfg, swap, log)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()

	var msrv *http.Server
	metricsAddr := ""
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			srv.Close()
			return fmt.Errorf("serve: metrics: %w", err)
		}
		if !loopback(cfg.MetricsAddr) {
			log.Warn("the metrics listener has no API keys and no TLS: keep its port internal", "metrics_addr", cfg.MetricsAddr)
		}
		metricsAddr = mln.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		msrv = newHTTPServer(cfg, mux, log)
		msrv.WriteTimeout = 0 // CPU profiles take as long as asked
		go func() { errc <- msrv.Serve(mln) }()
	}
	shutdown := func() error {
		health.SetDraining(true)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		err := srv.Shutdown(sctx)
		if msrv != nil {
			err = errors.Join(err, msrv.Shutdown(sctx))
		}
		return err
	}
	if listening != nil {
		listening(ln.Addr().String(), metricsAddr)
	}

	start := time.Now()
	st, err := openStores(ctx, cfg, reg)
	if err != nil {
		shutdown()
		return fmt.Errorf("serve: %w", err)
	}
	defer func() {
		if err := st.close(); err != nil {
			log.Error("closing the store", "cause", err)
		}
	}()
	switch {
	case cfg.Auth == "keys":
		if keys, err := st.keys.List(ctx); err == nil && len(keys) == 0 {
			log.Warn("no API keys yet: every /v1 request answers 401 until one is made with vild keys create")
		}
	case !loopback(cfg.Addr):
		log.Warn("the API needs no key on an address other than loopback (--insecure-no-auth)", "addr", cfg.Addr)
	}
	cfg.Model.Embeddings = st.embeddings
	m, err := load(ctx, cfg.Model)
	if err != nil {
		shutdown()
		return fmt.Errorf("serve: load model: %w", err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			log.Error("closing the model", "cause", err)
		}
	}()
	ls, err := cfg.LabelStudio.settings()
	if err != nil {
		shutdown()
		return fmt.Errorf("serve: %w", err)
	}
	log.Debug("Label Studio backend at /labelstudio", "label_studio_url", cfg.LabelStudio.URL,
		"fetch_allow_hosts", cfg.LabelStudio.Fetch.AllowHosts, "fetch_allow_cidrs", cfg.LabelStudio.Fetch.AllowCIDRs)
	api, err := handlers.New(handlers.Deps{
		Detector: m.Detector, Embedder: m.Embedder,
		Decoder: imageDecoder(cfg.API), NameError: m.NameError,
		Model: m.Info, Vocabularies: st.vocabularies, Sessions: st.sessions, StoreCheck: st.check,
		Health: health, Metrics: metrics, Logger: log,
		Config: cfg.API, Web: web.FS(),
		Keys: st.keys, Limiter: st.limiter, CORSOrigins: cfg.CORSOrigins, LabelStudio: ls,
		Middleware: []func(http.Handler) http.Handler{observe.Options{Log: log, Sample: cfg.AccessLogSample, Model: m.Info.ID}.Middleware},
	})
	if err != nil {
		shutdown()
		return fmt.Errorf("serve: %w", err)
	}
	swap.set(api)
	if err := m.Warmup(ctx); err != nil {
		shutdown()
		return fmt.Errorf("serve: model warm-up failed: %w", err)
	}
	health.SetReady(true)
	log.Info("ready", "model", m.Info.ID, "addr", ln.Addr().String(), "load_seconds", time.Since(start).Seconds())

	select {
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTimeout)
	case err := <-errc:
		shutdown()
		return fmt.Errorf("serve: %w", err)
	}
	if err := shutdown(); err != nil {
		return fmt.Errorf("serve: drain: %w", err)
	}
	log.Info("stopped")
	return nil
}
