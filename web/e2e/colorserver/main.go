// Command colorserver serves vild's API and web page over the colour
// detector of handlers/handlerstest, for the browser test: its detections are
// known exactly (one box per coloured shape, labelled by colour), so the test
// can check what the page draws without the neural model.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/vild/vild/api"
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := handlers.DefaultConfig()
	h, err := handlers.New(handlers.Deps{
		Detector: &handlerstest.ColorDetector{}, Embedder: &handlerstest.ColorEmbedder{},
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
