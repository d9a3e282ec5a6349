package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vild/vild/api"
	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/ort"
)

func TestRunVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "vild ") {
		t.Fatalf("version output %q", out.String())
	}
}

func TestRunUnknownCommand(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}} {
		if err := run(context.Background(), args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "usage: vild <calibration|detect|eval|exemplars-eval|keys|serve|version>") {
			t.Fatalf("%v: %v", args, err)
		}
	}
}

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestServeConfig(t *testing.T) {
	c, err := parseServeConfig([]string{"--workers", "2", "--model", "/m"}, env("VILD_ADDR", ":9000", "VILD_WORKERS", "7", "VILD_REQUEST_TIMEOUT", "3s", "VILD_INSECURE_NO_AUTH", "true"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":9000" || !c.InsecureNoAuth || c.Auth != "none" || c.API.Workers != 2 || c.Model.ModelDir != "/m" || c.API.RequestTimeout != 3*time.Second {
		t.Fatalf("flags over env over defaults: %+v", c)
	}
	if c.ReadHeaderTimeout != 5*time.Second || c.ReadTimeout != 30*time.Second || c.WriteTimeout != 35*time.Second ||
		c.IdleTimeout != 65*time.Second || c.MaxHeaderBytes != 1<<20 || c.ShutdownTimeout != 25*time.Second ||
		c.API.MaxBodyBytes != 20<<20 || c.MetricsAddr != "127.0.0.1:9090" {
		t.Fatalf("defaults: %+v", c)
	}
	if c.AccessLogSample != 1 || c.OTLPEndpoint != "" {
		t.Fatalf("observability defaults: sample %v, endpoint %q", c.AccessLogSample, c.OTLPEndpoint)
	}
	o, err := parseServeConfig([]string{"--access-log-sample", "0.25"}, env("VILD_ACCESS_LOG_SAMPLE", "0.5", "VILD_OTLP_ENDPOINT", "http://otel:4318"), io.Discard)
	if err != nil || o.AccessLogSample != 0.25 || o.OTLPEndpoint != "http://otel:4318" {
		t.Fatalf("observability flags over env: %v %+v", err, o)
	}
	// The flag defaults are handlers.DefaultConfig (the numbers docs/api.md lists);
	// the few limits without a flag stay zero and take it inside handlers.New.
	d, err := parseServeConfig(nil, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := handlers.DefaultConfig()
	want.QueueLength, want.MaxRunnersUp, want.MaxLabelsPerBox, want.RetryAfterSeconds, want.VocabularyCacheSize = 0, 0, 0, 0, 0
	if d.API != want {
		t.Fatalf("flag defaults %+v\nwant %+v", d.API, want)
	}
	for _, bad := range []struct {
		args []string
		env  func(string) string
	}{
		{[]string{"--workers", "0"}, env()},
		{nil, env("VILD_WORKERS", "many")},
		{[]string{"--read-header-timeout", "0s"}, env()},
		{[]string{"--request-timeout", "40s"}, env()},
		{[]string{"extra"}, env()},
		{[]string{"--nope"}, env()},
		{[]string{"--auth", "password"}, env()},
		{[]string{"--tls-cert", "c.pem"}, env()},
		{nil, env("VILD_TLS_KEY", "k.pem")},
		{[]string{"--key-rps", "-1"}, env()},
		{nil, env("VILD_KEY_RPS", "fast")},
		{nil, env("VILD_INSECURE_NO_AUTH", "maybe")},
		{[]string{"--access-log-sample", "1.5"}, env()},
		{nil, env("VILD_ACCESS_LOG_SAMPLE", "-0.1")},
		{[]string{"--otlp-endpoint", "collector:4318"}, env()},
	} {
		if _, err := parseServeConfig(bad.args, bad.env, io.Discard); err == nil {
			t.Errorf("%v accepted", bad.args)
		}
	}
	// Every bad setting is reported at once, the environment's too.
	_, err = parseServeConfig([]string{"--workers", "0", "--read-header-timeout", "0s"}, env("VILD_QUEUE", "x"), io.Discard)
	for _, want := range []string{"--workers", "--read-header-timeout", "VILD_QUEUE"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestDetectConfig(t *testing.T) {
	c, err := parseDetectConfig([]string{"a.png", "--categories", "dog, red umbrella", "b.jpg", "--head", "text"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Images, "|") != "a.png|b.jpg" || strings.Join(c.Categories, "|") != "dog|red umbrella" || c.Head != "text" {
		t.Fatalf("%+v", c)
	}
	if _, err := parseDetectConfig([]string{"a.png", "b.png", "--out", "x.png"}, env(), io.Discard); err == nil {
		t.Fatal("--out with two images accepted")
	}
	if _, err := parseDetectConfig([]string{"--categories", "a"}, env(), io.Discard); err == nil {
		t.Fatal("no image accepted")
	}
}

// colorModel is the colour detector dressed as a loaded model.
func colorModel(det *handlerstest.ColorDetector) *model {
	return &model{
		Detector: det, Embedder: &handlerstest.ColorEmbedder{},
		Info: api.Model{ID: "colors@0", Name: "colors", EmbeddingDim: handlerstest.Dim,
			Defaults: detector.Options{ScoreThreshold: 0.3, NMSIoU: 0.5, MaxDetections: 100}},
		Warmup: func(ctx context.Context) error { return nil },
		Close:  func() error { return nil },
	}
}

func testServeConfig(t *testing.T) serveConfig {
	c, err := parseServeConfig([]string{"--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type running struct {
	addr, metrics string
	done          chan error
	cancel        context.CancelFunc
}

func startServe(t *testing.T, cfg serveConfig, load loader) *running {
	t.Helper()
	return startServeLog(t, cfg, load, slog.New(slog.DiscardHandler))
}

// startServeLog is startServe logging to log.
func startServeLog(t *testing.T, cfg serveConfig, load loader, log *slog.Logger) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan error, 1), cancel: cancel}
	addrs := make(chan [2]string, 1)
	go func() {
		r.done <- serve(ctx, cfg, log, load, func(a, m string) { addrs <- [2]string{a, m} })
	}()
	select {
	case a := <-addrs:
		r.addr, r.metrics = a[0], a[1]
	case err := <-r.done:
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() { cancel() })
	return r
}

func scenePNG(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 120, 80))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(10, 10, 50, 50), image.NewUniform(color.RGBA{255, 0, 0, 255}), image.Point{}, draw.Src)
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

func get(t *testing.T, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// While the model loads the server is live but not ready; then ready, with
// metrics on the separate listener.
func TestServeLoadingThenReady(t *testing.T) {
	release := make(chan struct{})
	r := startServe(t, testServeConfig(t), func(ctx context.Context, _ modelConfig) (*model, error) {
		<-release
		return colorModel(&handlerstest.ColorDetector{}), nil
	})
	base := "http://" + r.addr
	if get(t, base+"/livez") != 200 || get(t, base+"/readyz") != 503 {
		t.Fatal("while loading: want live 200, ready 503")
	}
	close(release)
	for i := 0; get(t, base+"/readyz") != 200; i++ {
		if i > 500 {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Post(base+"/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t)))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("detect: %v %v", resp, err)
	}
	resp.Body.Close()
	if get(t, base+"/metrics") != 404 {
		t.Fatal("metrics on the API listener")
	}
	mresp, err := http.Get("http://" + r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(body), `vild_http_requests_total{code="200",method="POST",route="/v1/detect"} 1`) {
		t.Fatalf("metrics:\n%s", body)
	}
	if get(t, base+"/") != 200 || get(t, base+"/docs/index.html") != 200 {
		t.Fatal("web page or docs missing")
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
}

func TestServeModelLoadFailure(t *testing.T) {
	ctx := context.Background()
	err := serve(ctx, testServeConfig(t), slog.New(slog.DiscardHandler), func(context.Context, modelConfig) (*model, error) {
		return nil, errors.New("bundle: file missing: backbone.onnx")
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "load model: bundle: file missing: backbone.onnx") {
		t.Fatalf("err %v", err)
	}
	m := colorModel(&handlerstest.ColorDetector{})
	m.Warmup = func(context.Context) error { return errors.New("bad output shape") }
	err = serve(ctx, testServeConfig(t), slog.New(slog.DiscardHandler), func(context.Context, modelConfig) (*model, error) { return m, nil }, nil)
	if err == nil || !strings.Contains(err.Error(), "warm-up failed") {
		t.Fatalf("err %v", err)
	}
}

// Six slow requests in flight and a shutdown: all six are answered, new
// connections are refused and serve returns nil.
func TestServeGracefulDrain(t *testing.T) {
	det := &handlerstest.ColorDetector{Gate: make(chan struct{}), Started: make(chan struct{}, 6)}
	cfg := testServeConfig(t)
	cfg.API.Workers, cfg.API.QueueLength = 6, 6
	r := startServe(t, cfg, func(context.Context, modelConfig) (*model, error) { return colorModel(det), nil })
	base := "http://" + r.addr
	for get(t, base+"/readyz") != 200 {
		time.Sleep(10 * time.Millisecond)
	}
	var wg sync.WaitGroup
	codes := make(chan int, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(base+"/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t)))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for i := 0; i < 6; i++ {
		<-det.Started
	}
	r.cancel() // SIGTERM
	for {      // the listener closes: new connections are refused
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(5 * time.Millisecond)
	}
	close(det.Gate)
	wg.Wait()
	close(codes)
	n := 0
	for c := range codes {
		if c != 200 {
			t.Errorf("in-flight request got %d", c)
		}
		n++
	}
	if n != 6 {
		t.Fatalf("%d of 6 answered", n)
	}
	if err := <-r.done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
}

// A client that sends its headers one byte at a time is cut off at the
// read-header timeout.
func TestServeSlowlorisClosed(t *testing.T) {
	cfg := testServeConfig(t)
	cfg.ReadHeaderTimeout = 200 * time.Millisecond
	r := startServe(t, cfg, func(context.Context, modelConfig) (*model, error) {
		return colorModel(&handlerstest.ColorDetector{}), nil
	})
	conns := make([]net.Conn, 20)
	for i := range conns {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: "))
		conns[i] = c
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// The server answers 408 or just closes; either way the read ends
		// well before our 10 s deadline and the connection is gone.
		_, err := bufio.NewReader(c).ReadString(0)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("slow connection still open after 10 s")
		}
	}
}

// The real model end to end over the fixture bundle, when the ONNX Runtime
// library is available (make setup fetches it; the cgo build loads it).
func TestServeRealModel(t *testing.T) {
	lib := ort.DefaultLibraryPath()
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("ONNX Runtime library not at %s", lib)
	}
	cfg := testServeConfig(t)
	cfg.Model.ModelDir = filepath.Join("..", "..", "testdata", "tinybundle")
	cfg.Model.ORTLib = lib
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if m, err := loadModel(ctx, cfg.Model); errors.Is(err, ort.ErrDisabled) {
		t.Skip("built without cgo")
	} else if err != nil {
		t.Fatal(err)
	} else {
		m.Close()
	}
	r := startServe(t, cfg, loadModel)
	base := "http://" + r.addr
	for i := 0; get(t, base+"/readyz") != 200; i++ {
		if i > 3000 {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Post(base+"/v1/detect?categories=dog,cat&score_threshold=0", "image/png", bytes.NewReader(scenePNG(t)))
	if err != nil {
		t.Fatal(err)
	}
	var out api.DetectResponse
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != 200 || out.Image == nil || out.Image.Width != 120 || !strings.HasPrefix(out.Model, "") || out.TimingsMS.Backbone <= 0 {
		t.Fatalf("detect: %d %+v", resp.StatusCode, out)
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
}

// With no auth the server listens on loopback only, unless told
// --insecure-no-auth; with --auth keys it listens anywhere.
func TestServeRefusesNoAuthBeyondLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8080", "127.1.2.3:80", "[::1]:8080", "localhost:8080", "LOCALHOST:1"} {
		if _, err := parseServeConfig([]string{"--addr", addr}, env(), io.Discard); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "[::]:8080", "10.0.0.5:8080", "vild.example:8080", "[::ffff:10.0.0.1]:80"} {
		_, err := parseServeConfig([]string{"--addr", addr}, env(), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "not a loopback address") || !strings.Contains(err.Error(), "--insecure-no-auth") {
			t.Errorf("%s with no auth: %v", addr, err)
		}
		if _, err := parseServeConfig([]string{"--addr", addr, "--insecure-no-auth"}, env(), io.Discard); err != nil {
			t.Errorf("%s --insecure-no-auth: %v", addr, err)
		}
		if _, err := parseServeConfig([]string{"--addr", addr}, env("VILD_AUTH", "keys"), io.Discard); err != nil {
			t.Errorf("%s --auth keys: %v", addr, err)
		}
	}
	// The refusal is at start: serve never listens.
	cfg := testServeConfig(t)
	_, err := parseServeConfig([]string{"--addr", "0.0.0.0:0", "--data-dir", cfg.Model.DataDir}, env(), io.Discard)
	if err == nil {
		t.Fatal("0.0.0.0 with no auth accepted")
	}
	if err := run(context.Background(), []string{"serve", "--addr", "0.0.0.0:0", "--metrics-addr", ""}, io.Discard); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("vild serve --addr 0.0.0.0:0: %v", err)
	}
}
