// Command colorserver serves vild's API and web page over the colour
// detector of handlers/handlerstest, for the browser test: its detections are
// known exactly (one box per coloured shape, labelled by colour), so the test
// can check what the page draws without the neural model.
//
// Two magic categories make a detection fail, so the test can see the page
// show a server error: "fail-internal" (the detector fails: 500 internal) and
// "fail-busy" (the queue is full: 503 queue-full with Retry-After).
//
// --key TOKEN makes the /v1 routes need that API key (scope detect), as
// vild serve --auth keys does, so the test can see the page ask for a key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vild/vild/admission"
	"github.com/vild/vild/api"
	"github.com/vild/vild/apikey"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "colorserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("colorserver", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	token := fs.String("key", "", "require this API key (vild_…, scope detect) on /v1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := handlers.DefaultConfig()
	var keys apikey.Store
	if *token != "" {
		mem := apikey.NewMemory()
		k := apikey.Key{Name: "e2e", Hash: apikey.Hash(*token), Scopes: []apikey.Scope{apikey.ScopeDetect}, Created: time.Now()}
		if err := mem.Create(ctx, k); err != nil {
			return err
		}
		keys = mem
	}
	h, err := handlers.New(handlers.Deps{
		Keys:     keys,
		Detector: failing{&handlerstest.ColorDetector{}}, Embedder: &handlerstest.ColorEmbedder{},
		Decoder: handlerstest.Decoder{MaxSide: cfg.MaxImageSide, MaxPixels: cfg.MaxImagePixels},
		Model: api.Model{ID: "colors@test", Name: "colors", EmbeddingDim: handlerstest.Dim,
			Defaults: detector.Options{ScoreThreshold: 0.3, NMSIoU: 0.5, MaxDetections: 100}},
		Config: cfg, Web: web.FS(),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	srv := &http.Server{Handler: h}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// failing is the colour detector, failing when a magic category is asked for.
type failing struct{ *handlerstest.ColorDetector }

// Score fails for "fail-internal" and "fail-busy", else scores.
func (f failing) Score(ctx context.Context, r *detector.Regions, vocab *detector.Vocabulary, opts detector.Options) (*detector.Result, error) {
	for _, c := range vocab.Classes {
		switch c.Label {
		case "fail-internal":
			return nil, errors.New("colorserver: failure asked for")
		case "fail-busy":
			return nil, admission.ErrQueueFull
		}
	}
	return f.ColorDetector.Score(ctx, r, vocab, opts)
}
