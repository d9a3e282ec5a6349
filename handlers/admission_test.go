package handlers

import (
	"bytes"
	"context"
	"image"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/handlers/handlerstest"
)

// Ten requests on one worker with a queue of two: three are admitted (one
// running, two waiting) and seven fail fast with 503 and Retry-After.
func TestQueueFullFailsFast(t *testing.T) {
	det := &handlerstest.ColorDetector{Gate: make(chan struct{})}
	e := newEnv(t, func(d *Deps) {
		d.Detector = det
		d.Config.Workers, d.Config.QueueLength = 1, 2
		d.Config.MaxQueueWait = time.Minute
		d.Config.RequestTimeout = time.Minute
	})
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	png := scenePNG(t)
	type answer struct {
		code       int
		retryAfter string
	}
	answers := make(chan answer, 10)
	for i := 0; i < 10; i++ {
		go func() {
			resp, err := http.Post(srv.URL+"/v1/detect?categories=red", "image/png", bytes.NewReader(png))
			if err != nil {
				t.Error(err)
				answers <- answer{}
				return
			}
			resp.Body.Close()
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After")}
		}()
	}
	var got []answer
	for len(got) < 7 { // the rejections come while the worker is held
		got = append(got, <-answers)
	}
	close(det.Gate) // release the worker
	for len(got) < 10 {
		got = append(got, <-answers)
	}
	n200, n503 := 0, 0
	for _, a := range got {
		switch {
		case a.code == 200:
			n200++
		case a.code == 503 && a.retryAfter == "1":
			n503++
		default:
			t.Errorf("answer %+v", a)
		}
	}
	if n200 != 3 || n503 != 7 {
		t.Fatalf("%d × 200 and %d × 503, want 3 and 7", n200, n503)
	}
	if c := testutil.ToFloat64(e.deps.Metrics.rejections.WithLabelValues("queue-full")); c != 7 {
		t.Fatalf("queue-full counter %v, want 7", c)
	}
	if c := testutil.ToFloat64(e.deps.Metrics.requests.WithLabelValues("/v1/detect", "POST", "503")); c != 7 {
		t.Fatalf("503 counter %v, want 7", c)
	}
}

func TestQueueWaitAndDeadline(t *testing.T) {
	det := &handlerstest.ColorDetector{Gate: make(chan struct{}), Started: make(chan struct{}, 1)}
	e := newEnv(t, func(d *Deps) {
		d.Detector = det
		d.Config.Workers, d.Config.QueueLength = 1, 1
		d.Config.MaxQueueWait = 20 * time.Millisecond
		d.Config.RequestTimeout = 300 * time.Millisecond
	})
	png := scenePNG(t)
	var wg sync.WaitGroup
	wg.Add(1)
	var first *httptest.ResponseRecorder
	go func() {
		defer wg.Done()
		first = e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(png))
	}()
	<-det.Started // the worker is held
	wantProblem(t, e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(png)), 503, "queue-timeout")
	wg.Wait() // the gate never opens: the request deadline ends the first
	wantProblem(t, first, 504, "timeout")
	// The worker is free again.
	close(det.Gate)
	if rec := e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(png)); rec.Code != 200 {
		t.Fatalf("after the deadline: %d %s", rec.Code, rec.Body)
	}
}

// The request deadline counts the time spent queued: a request that waits for
// a worker longer than the deadline gets 504 and never reaches the detector.
func TestDeadlineIncludesQueueTime(t *testing.T) {
	det := &stubbornDetector{ColorDetector: &handlerstest.ColorDetector{}, release: make(chan struct{}), started: make(chan struct{}, 1)}
	e := newEnv(t, func(d *Deps) {
		d.Detector = det
		d.Config.Workers, d.Config.QueueLength = 1, 1
		d.Config.MaxQueueWait = time.Hour // only the deadline can end the wait
		d.Config.RequestTimeout = 200 * time.Millisecond
	})
	png := scenePNG(t)
	holder := make(chan *httptest.ResponseRecorder)
	go func() { holder <- e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(png)) }()
	<-det.started // the only worker is held until released
	wantProblem(t, e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(png)), 504, "timeout")
	if n := det.RegionsCalls.Load(); n != 0 {
		t.Fatalf("the queued request reached the detector (%d calls)", n)
	}
	close(det.release)
	<-holder // its own deadline has passed too; whether the detector noticed in time does not matter here
}

// stubbornDetector holds the worker in Regions until released, whatever the
// context says.
type stubbornDetector struct {
	*handlerstest.ColorDetector
	release, started chan struct{}
}

func (d *stubbornDetector) Regions(ctx context.Context, img image.Image) (*detector.Regions, error) {
	d.started <- struct{}{}
	<-d.release
	return d.ColorDetector.Regions(ctx, img)
}

func TestClientGoneFreesWorker(t *testing.T) {
	det := &handlerstest.ColorDetector{Gate: make(chan struct{}), Started: make(chan struct{}, 1)}
	e := newEnv(t, func(d *Deps) { d.Detector = det; d.Config.Workers, d.Config.QueueLength = 1, 1 })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		req := httptest.NewRequest("POST", "/v1/detect?categories=red", bytes.NewReader(scenePNG(t))).WithContext(ctx)
		req.Header.Set("Content-Type", "image/png")
		done <- newRecorder(e, req).Code
	}()
	<-det.Started
	cancel()
	if code := <-done; code != 499 {
		t.Fatalf("canceled request: %d, want 499", code)
	}
	close(det.Gate)
	if rec := e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t))); rec.Code != 200 {
		t.Fatalf("after cancel: %d", rec.Code)
	}
}

func TestHealthAndDraining(t *testing.T) {
	health := &Health{}
	e := newEnv(t, func(d *Deps) { d.Health = health })
	if rec := e.do(t, "GET", "/livez", "", nil); rec.Code != 200 {
		t.Fatalf("livez %d", rec.Code)
	}
	wantProblem(t, e.do(t, "GET", "/readyz", "", nil), 503, "not-ready")
	health.SetReady(true)
	if rec := e.do(t, "GET", "/readyz", "", nil); rec.Code != 200 {
		t.Fatalf("readyz %d", rec.Code)
	}
	health.SetDraining(true)
	wantProblem(t, e.do(t, "GET", "/readyz", "", nil), 503, "not-ready")
	rec := e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t)))
	wantProblem(t, rec, 503, "draining")
	if rec.Header().Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
}

func TestMetricsExposed(t *testing.T) {
	e := newEnv(t, nil)
	e.do(t, "POST", "/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t)))
	e.do(t, "POST", "/v1/detect", "text/plain", strings.NewReader("x"))
	if c := testutil.ToFloat64(e.deps.Metrics.requests.WithLabelValues("/v1/detect", "POST", "200")); c != 1 {
		t.Fatalf("200 counter %v", c)
	}
	if c := testutil.ToFloat64(e.deps.Metrics.rejections.WithLabelValues("unsupported-content-type")); c != 1 {
		t.Fatalf("rejection counter %v", c)
	}
	n, err := testutil.GatherAndCount(e.reg, "vild_stage_seconds")
	if err != nil || n < 3 { // queue, decode, backbone, scoring
		t.Fatalf("stage histograms %d %v", n, err)
	}
}
