// Package deploy holds the deployment files (HAProxy, Kubernetes) and the
// scale test, which runs them for real on loopback: redis-server, three
// `vild serve` processes and HAProxy from deploy/haproxy/haproxy.cfg.
package deploy

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vild/vild/internal/services"
)

// cluster is redis-server, three replicas and HAProxy, all on loopback.
type cluster struct {
	redis    *services.Redis
	replicas []*services.Process
	urls     []string // the replicas' base URLs
	lb       string   // HAProxy's base URL
	stats    string   // HAProxy's CSV statistics URL
	bin      string   // the vild binary the replicas run
}

// buildVild builds the command once for the test.
func buildVild(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vild")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/vild")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func ortLibrary(t testing.TB) string {
	lib := os.Getenv("VILD_ORT_LIB")
	if lib == "" {
		lib, _ = filepath.Abs("../.cache/onnxruntime/libonnxruntime.so")
	}
	if _, err := os.Stat(lib); err != nil {
		if os.Getenv("VILD_SERVICES_REQUIRED") == "1" {
			t.Fatalf("ONNX Runtime library: %v", err)
		}
		t.Skipf("ONNX Runtime library: %v (make setup fetches it)", err)
	}
	return lib
}

// startCluster starts the cluster on the tiny fixture bundle (fast: the
// scale test is about state and routing, not the model).
func startCluster(t testing.TB) *cluster {
	t.Helper()
	model, _ := filepath.Abs("../testdata/tinybundle")
	return startClusterWith(t, "--model", model)
}

// startClusterWith starts redis-server, three replicas run with the extra
// serve flags, and HAProxy.
func startClusterWith(t testing.TB, serveFlags ...string) *cluster {
	t.Helper()
	haproxy := services.Need(t, "haproxy")
	lib := ortLibrary(t)
	c := &cluster{redis: services.StartRedis(t, "--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru")}
	bin := buildVild(t)
	c.bin = bin
	for range 3 {
		port := services.FreePort(t)
		args := append([]string{"serve",
			"--addr", "127.0.0.1:" + strconv.Itoa(port), "--metrics-addr", "",
			"--store", c.redis.URL(), "--data-dir", t.TempDir(), "--workers", "1", "--queue", "16",
			"--max-queue-wait", "5s", "--shutdown-timeout", "10s", "--log-level", "warn"}, serveFlags...)
		p := services.StartEnv(t, []string{"VILD_ORT_LIB=" + lib}, bin, args...)
		c.replicas = append(c.replicas, p)
		c.urls = append(c.urls, "http://127.0.0.1:"+strconv.Itoa(port))
	}
	for i, u := range c.urls {
		waitReady(t, u+"/readyz", 30*time.Second, c.replicas[i])
	}
	lbPort, statsPort := services.FreePort(t), services.FreePort(t)
	dir, _ := filepath.Abs("haproxy")
	hp := services.StartEnv(t, []string{
		"VILD_LB_ADDR=127.0.0.1:" + strconv.Itoa(lbPort), "VILD_STATS_ADDR=127.0.0.1:" + strconv.Itoa(statsPort),
		"VILD_REPLICA1=" + strings.TrimPrefix(c.urls[0], "http://"), "VILD_REPLICA2=" + strings.TrimPrefix(c.urls[1], "http://"),
		"VILD_REPLICA3=" + strings.TrimPrefix(c.urls[2], "http://"), "VILD_HAPROXY_DIR=" + dir,
	}, haproxy, "-db", "-f", filepath.Join(dir, "haproxy.cfg"))
	c.lb = "http://127.0.0.1:" + strconv.Itoa(lbPort)
	c.stats = "http://127.0.0.1:" + strconv.Itoa(statsPort) + "/stats;csv"
	services.WaitTCP(t, "127.0.0.1:"+strconv.Itoa(lbPort), 10*time.Second)
	// Every replica up in HAProxy's eyes before the checks begin.
	deadline := time.Now().Add(10 * time.Second)
	for c.upCount(t) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy does not see three replicas up: %s", hp.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

func waitReady(t testing.TB, url string, within time.Duration, p *services.Process) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %s: %s", url, within, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// status is each replica's status in HAProxy's statistics (UP, DOWN, …).
func (c *cluster) status(t testing.TB) map[string]string {
	resp, err := http.Get(c.stats)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	rows, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b, []byte("# ")))).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("stats: %v %s", err, b)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	out := map[string]string{}
	for _, r := range rows[1:] {
		if r[col["pxname"]] == "replicas" && strings.HasPrefix(r[col["svname"]], "replica") {
			out[r[col["svname"]]] = r[col["status"]]
		}
	}
	return out
}

func (c *cluster) upCount(t testing.TB) int {
	n := 0
	for _, s := range c.status(t) {
		if s == "UP" {
			n++
		}
	}
	return n
}

// send makes one request and returns its status, Retry-After, ETag and body.
func send(method, url, contentType string, body []byte, hdr ...string) (int, string, string, []byte, error) {
	resp, b, err := services.Send(method, url, contentType, body, hdr...)
	if err != nil {
		return 0, "", "", nil, err
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("ETag"), b, nil
}

func scenePNG(t testing.TB) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 96, 64))
	for y := range 64 {
		for x := range 96 {
			img.Set(x, y, color.RGBA{uint8(x * 2), uint8(y * 3), 128, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// load is a bounded load through the load balancer: total requests from
// clients goroutines; at(n) runs once, when n requests have finished.
type loadResult struct {
	statuses     map[int]int
	noRetryAfter int
	errors       []error
	elapsed      time.Duration
}

func runLoad(url string, body []byte, total, clients int, at int, hook func()) loadResult {
	var mu sync.Mutex
	res := loadResult{statuses: map[int]int{}}
	var next, done atomic.Int64
	var once sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				code, retry, _, _, err := send("POST", url, "image/png", body)
				mu.Lock()
				if err != nil {
					res.errors = append(res.errors, err)
				} else {
					res.statuses[code]++
					if code == 503 && retry == "" {
						res.noRetryAfter++
					}
				}
				mu.Unlock()
				if done.Add(1) == int64(at) && hook != nil {
					once.Do(func() { go hook() })
				}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

func (r loadResult) String() string {
	return fmt.Sprintf("statuses %v, 503 without Retry-After %d, transport errors %d, %.1f s", r.statuses, r.noRetryAfter, len(r.errors), r.elapsed.Seconds())
}

func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server, three vild processes and HAProxy")
	}
	c := startCluster(t)
	png := scenePNG(t)

	t.Run("vocabulary written through one replica is used through another", func(t *testing.T) {
		code, _, etag, body, err := send("PUT", c.urls[0]+"/v1/vocabularies/kitchen", "application/json", []byte(`{"categories":["mug","kettle","cat"]}`))
		if err != nil || code != 201 {
			t.Fatalf("PUT through replica 1: %d %v %s", code, err, body)
		}
		code, _, etag3, body, err := send("GET", c.urls[2]+"/v1/vocabularies/kitchen", "", nil)
		if err != nil || code != 200 || etag3 != etag {
			t.Fatalf("GET through replica 3: %d %q, want ETag %q: %v %s", code, etag3, etag, err, body)
		}
		code, _, _, body, err = send("POST", c.urls[2]+"/v1/detect?vocabulary=kitchen&score_threshold=0", "image/png", png)
		if err != nil || code != 200 || !strings.Contains(string(body), `"vocabulary_digest":"`+strings.Trim(etag, `"`)+`"`) {
			t.Fatalf("detect by name through replica 3: %d %v %s", code, err, body)
		}
		t.Logf("PUT through replica 1, ETag %s; replica 3 serves the same ETag and detects with it", etag)
	})

	t.Run("image registered through one replica is re-scored through another", func(t *testing.T) {
		code, _, _, body, err := send("POST", c.urls[1]+"/v1/images", "image/png", png)
		var s struct{ ID string }
		if err != nil || code != 201 || json.Unmarshal(body, &s) != nil {
			t.Fatalf("register through replica 2: %d %v %s", code, err, body)
		}
		code, _, _, body, err = send("POST", c.urls[0]+"/v1/images/"+s.ID+"/detect", "application/json", []byte(`{"categories":["cat","dog"]}`))
		if err != nil || code != 200 || !strings.Contains(string(body), `"detections"`) {
			t.Fatalf("re-score through replica 1: %d %v %s", code, err, body)
		}
	})

	t.Run("concurrent conditional PUTs from every replica: exactly one wins", func(t *testing.T) {
		for round := range 10 {
			_, _, etag, _, err := send("GET", c.urls[0]+"/v1/vocabularies/kitchen", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			codes := make([]int, 3)
			var wg sync.WaitGroup
			for i, u := range c.urls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					spec := fmt.Sprintf(`{"categories":["mug","kettle","cat","r%d-%d"]}`, round, i)
					codes[i], _, _, _, _ = send("PUT", u+"/v1/vocabularies/kitchen", "application/json", []byte(spec), "If-Match", etag)
				}()
			}
			wg.Wait()
			won := 0
			for _, code := range codes {
				switch code {
				case 200:
					won++
				case 412:
				default:
					t.Fatalf("round %d: statuses %v", round, codes)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: %d PUTs won (statuses %v), want exactly 1", round, won, codes)
			}
		}
		t.Log("10 rounds of three concurrent If-Match PUTs, one through each replica: one 200 and two 412 each")
	})

	_, _, etagBefore, _, _ := send("GET", c.lb+"/v1/vocabularies/kitchen", "", nil)

	t.Run("kill -9 of a replica under load", func(t *testing.T) {
		type times struct{ killed, down time.Time }
		out := make(chan times, 1)
		// Answers under 2 KiB (three detections) leave a replica in one write:
		// one that dies while it writes a longer answer cuts it short, and no
		// load balancer can retry an answer it has begun to pass on
		// (docs/deploy.md).
		res := runLoad(c.lb+"/v1/detect?vocabulary=kitchen&max_detections=3", png, 300, 8, 60, func() {
			killed := time.Now()
			c.replicas[1].Kill()
			for !strings.HasPrefix(c.status(t)["replica2"], "DOWN") && time.Since(killed) < 10*time.Second {
				time.Sleep(10 * time.Millisecond)
			}
			out <- times{killed, time.Now()}
		})
		t.Logf("300 requests from 8 clients through HAProxy, replica 2 killed after 60: %s", res)
		tm := <-out
		if !strings.HasPrefix(c.status(t)["replica2"], "DOWN") {
			t.Fatalf("HAProxy still has replica 2 %q 10 s after the kill", c.status(t)["replica2"])
		}
		killedAt, downAt := tm.killed, tm.down
		t.Logf("HAProxy took replica 2 out %.2f s after the kill", downAt.Sub(killedAt).Seconds())
		if len(res.errors) > 0 || res.statuses[200]+res.statuses[503] != 300 || res.noRetryAfter > 0 {
			t.Fatalf("want only 200 and 503 with Retry-After: %s; errors %v", res, res.errors)
		}
		code, _, etag, _, err := send("GET", c.lb+"/v1/vocabularies/kitchen", "", nil)
		if err != nil || code != 200 || etag != etagBefore {
			t.Fatalf("vocabulary after the kill: %d %q, want %q (%v)", code, etag, etagBefore, err)
		}
	})

	t.Run("SIGTERM of a replica under load drains with no failed request", func(t *testing.T) {
		var stopErr error
		stopped := make(chan struct{})
		res := runLoad(c.lb+"/v1/detect?categories=cat,mug&max_detections=3", png, 300, 8, 60, func() {
			stopErr = c.replicas[2].Stop(15 * time.Second)
			close(stopped)
		})
		<-stopped
		t.Logf("300 requests from 8 clients through HAProxy, replica 3 sent SIGTERM after 60: %s", res)
		if stopErr != nil {
			t.Fatalf("replica 3 did not exit cleanly: %v\n%s", stopErr, c.replicas[2].Output())
		}
		if len(res.errors) > 0 || res.statuses[200] != 300 {
			t.Fatalf("want 300 × 200: %s; errors %v", res, res.errors)
		}
	})
}

// BenchmarkReplicas measures detections per second on the embedded default
// model with 8 concurrent clients: straight to one replica, and through
// HAProxy to three, and straight to one replica with two workers, in the
// same run (docs/deploy.md). On one 2-core machine
// the three replicas share the same two cores, so this shows the cost and
// the (small) gain of replicas here, not what three machines would give.
func BenchmarkReplicas(b *testing.B) {
	c := startClusterWith(b)                                              // no --model: the embedded default bundle
	scene, err := os.ReadFile("../models/default/golden/exact/input.png") // a 384×192 pictogram scene
	if err != nil {
		b.Fatal(err)
	}
	// A fourth server outside HAProxy: one replica with two workers (each with
	// cores / workers = 1 intra-op thread), to tell replicas from concurrency.
	port := services.FreePort(b)
	two := services.StartEnv(b, []string{"VILD_ORT_LIB=" + ortLibrary(b)}, buildVild(b), "serve",
		"--addr", "127.0.0.1:"+strconv.Itoa(port), "--metrics-addr", "", "--store", c.redis.URL(),
		"--data-dir", b.TempDir(), "--workers", "2", "--queue", "16", "--max-queue-wait", "5s", "--log-level", "warn")
	twoURL := "http://127.0.0.1:" + strconv.Itoa(port)
	waitReady(b, twoURL+"/readyz", 30*time.Second, two)
	for _, target := range []struct{ name, url string }{{"one-replica", c.urls[0]},
		{"one-replica-2-workers", twoURL}, {"three-replicas-haproxy", c.lb}} {
		b.Run(target.name, func(b *testing.B) {
			var failed atomic.Int64
			b.SetParallelism(4) // 4 × GOMAXPROCS (2) = 8 clients
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					code, _, _, _, err := send("POST", target.url+"/v1/detect?categories=cat,dog,mug,kettle", "image/png", scene)
					if err != nil || code != 200 {
						failed.Add(1)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d requests failed", n, b.N)
			}
		})
	}
}
