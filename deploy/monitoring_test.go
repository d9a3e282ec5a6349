package deploy

// The monitoring files (deploy/prometheus, deploy/grafana) against a real
// `vild serve` and a real Prometheus (Debian's), all on loopback:
// docs/operations.md.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vild/vild/internal/services"
)

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Record      string            `json:"record"`
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func ruleFiles(t testing.TB) map[string]ruleFile {
	t.Helper()
	paths, err := filepath.Glob("prometheus/*.rules.yml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no rule files in deploy/prometheus: %v", err)
	}
	out := map[string]ruleFile{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var f ruleFile
		if err := yaml.UnmarshalStrict(b, &f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[p] = f
	}
	return out
}

// dashboardExprs is every PromQL expression of the Grafana dashboard
// (panel targets, template variable queries, annotations).
func dashboardExprs(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("grafana/vild.json")
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/vild.json: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || (k == "query" && strings.Contains(s, "("))) {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d)
	return exprs
}

var (
	quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	// metricName matches the series names the files use: the server's
	// (vild_), the process and Go collectors', Prometheus's own up and
	// ALERTS, and recording rules (level:metric:operations).
	metricName = regexp.MustCompile(`\b(vild_[a-z_]+|process_[a-z_]+|go_[a-z_]+|up|ALERTS|vild:[a-z0-9_:]+)\b`)
)

// namesIn is the series names an expression reads (label values left out).
func namesIn(expr string) []string {
	return metricName.FindAllString(quoted.ReplaceAllString(expr, `""`), -1)
}

// TestMonitoringFiles checks the rule files and the dashboard by themselves:
// each alert has for, a severity, a summary, a description and a runbook_url
// whose anchor docs/operations.md has; each recording rule an expression
// reads is defined; the dashboard reads only defined recording rules.
func TestMonitoringFiles(t *testing.T) {
	ops, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(ops), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	recorded := map[string]bool{}
	var exprs []string
	alerts := 0
	for p, f := range ruleFiles(t) {
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				exprs = append(exprs, r.Expr)
				if r.Record != "" {
					recorded[r.Record] = true
					continue
				}
				alerts++
				if r.For == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("%s: alert %s lacks for, severity, summary or description", p, r.Alert)
				}
				ru := r.Annotations["runbook_url"]
				anchor, ok := strings.CutPrefix(ru, "docs/operations.md#")
				if !ok || !anchors[anchor] {
					t.Errorf("%s: alert %s's runbook_url %q is not an anchor of docs/operations.md", p, r.Alert, ru)
				}
			}
		}
	}
	if alerts < 6 {
		t.Errorf("%d alerts, want at least 6", alerts)
	}
	dash := dashboardExprs(t)
	if len(dash) < 10 {
		t.Errorf("the dashboard has %d expressions", len(dash))
	}
	for _, e := range append(exprs, dash...) {
		for _, n := range namesIn(e) {
			if strings.Contains(n, ":") && !recorded[n] {
				t.Errorf("%s is not a recording rule (in %q)", n, e)
			}
		}
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// monitored is one `vild serve` on loopback with its metrics listener.
type monitored struct {
	proc    *services.Process
	url     string // the API's base URL
	metrics string // the metrics listener's host:port
}

func startMonitored(t testing.TB, flags ...string) *monitored {
	t.Helper()
	lib := ortLibrary(t)
	model, _ := filepath.Abs("../testdata/tinybundle")
	port, mport := services.FreePort(t), services.FreePort(t)
	m := &monitored{url: "http://127.0.0.1:" + strconv.Itoa(port), metrics: "127.0.0.1:" + strconv.Itoa(mport)}
	args := append([]string{"serve", "--model", model,
		"--addr", "127.0.0.1:" + strconv.Itoa(port), "--metrics-addr", m.metrics,
		"--data-dir", t.TempDir(), "--log-level", "error"}, flags...)
	m.proc = services.StartEnv(t, []string{"VILD_ORT_LIB=" + lib}, buildVild(t), args...)
	waitReady(t, m.url+"/readyz", 30*time.Second, m.proc)
	return m
}

// exposed is the set of sample names of a /metrics page, and the page.
func exposed(t testing.TB, metricsAddr string) (map[string]bool, string) {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names, string(page)
}

// TestMetricsOfRulesAndDashboardExist starts a real `vild serve` on a real
// Redis, makes it serve a detection and meet a store error (Redis killed
// under a vocabulary write), and checks that every series the rule files and
// the dashboard read is on its /metrics page (up and ALERTS are
// Prometheus's own; recording rules are checked by TestMonitoringFiles).
func TestMetricsOfRulesAndDashboardExist(t *testing.T) {
	redis := services.StartRedis(t)
	m := startMonitored(t, "--store", redis.URL(), "--workers", "1")
	png := scenePNG(t)
	if code, _, _, body, err := send("POST", m.url+"/v1/detect?categories=cat,dog&score_threshold=0", "image/png", png); err != nil || code != 200 {
		t.Fatalf("detect: %d %v %s", code, err, body)
	}
	if code, _, _, body, err := send("PUT", m.url+"/v1/vocabularies/kitchen", "application/json", []byte(`{"categories":["mug","cat"]}`)); err != nil || code/100 != 2 {
		t.Fatalf("PUT vocabulary: %d %v %s", code, err, body)
	}
	redis.Kill()
	code, _, _, body, err := send("PUT", m.url+"/v1/vocabularies/garden", "application/json", []byte(`{"categories":["rake"]}`))
	if err != nil || code != 503 {
		t.Fatalf("PUT with Redis down: %d %v %s, want 503", code, err, body)
	}
	names, page := exposed(t, m.metrics)
	// The label values the rules select on.
	for _, want := range []string{`route="/readyz"`, `route="/v1/detect"`, `reason="store-unavailable"`, `stage="backbone"`, `store="vocabularies"`} {
		if !strings.Contains(page, want) {
			t.Errorf("no series with %s on /metrics", want)
		}
	}

	var exprs []string
	for _, f := range ruleFiles(t) {
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				exprs = append(exprs, r.Expr)
			}
		}
	}
	exprs = append(exprs, dashboardExprs(t)...)
	checked := map[string]bool{}
	for _, e := range exprs {
		for _, n := range namesIn(e) {
			if strings.Contains(n, ":") || n == "up" || n == "ALERTS" || checked[n] {
				continue
			}
			checked[n] = true
			if !names[n] {
				t.Errorf("%s (in %q) is not on vild's /metrics page", n, e)
			}
		}
	}
	list := slices.Sorted(func(yield func(string) bool) {
		for n := range checked {
			if !yield(n) {
				return
			}
		}
	})
	t.Logf("%d series names of the rules and the dashboard on /metrics: %s", len(list), strings.Join(list, ", "))
	for _, want := range []string{"vild_http_requests_total", "vild_stage_seconds_bucket", "vild_rejections_total",
		"vild_store_errors_total", "vild_store_seconds_bucket", "vild_queue_depth", "vild_inflight_inferences", "process_resident_memory_bytes"} {
		if !checked[want] {
			t.Errorf("neither the rules nor the dashboard read %s", want)
		}
	}
}

// prometheus is a Prometheus server started by a test.
type prometheus struct {
	*services.Prometheus
}

// startPrometheus runs Debian's prometheus on a free loopback port, with its
// storage in a temporary directory, scraping and evaluating every second,
// loading deploy/prometheus's rule files, and scraping target as job vild.
func startPrometheus(t testing.TB, target string) *prometheus {
	t.Helper()
	var rules []string
	for p := range ruleFiles(t) {
		abs, _ := filepath.Abs(p)
		rules = append(rules, strconv.Quote(abs))
	}
	slices.Sort(rules)
	return &prometheus{services.StartPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%s]
scrape_configs:
  - job_name: vild
    static_configs:
      - targets: [%q]
`, strings.Join(rules, ", "), target))}
}

// get decodes the data of a Prometheus HTTP API answer into v.
func (p *prometheus) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := http.Get(p.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("%s: %v %s %s", path, err, r.Status, r.Error)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// alertState is the state of the named alert in /api/v1/alerts: pending,
// firing, or "" when it is not active.
func (p *prometheus) alertState(t testing.TB, name string) string {
	t.Helper()
	var d struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	}
	p.get(t, "/api/v1/alerts", &d)
	state := ""
	for _, a := range d.Alerts {
		if a.Labels["alertname"] == name && (state == "" || a.State == "firing") {
			state = a.State
		}
	}
	return state
}

// TestQueueAlertFiresAndClears runs a real Prometheus with the shipped rules
// against a real `vild serve` with one worker and a queue of one, overloads
// it from 16 clients until VildQueueRejections fires (as Prometheus's
// HTTP API says), stops, and waits for the alert to clear.
func TestQueueAlertFiresAndClears(t *testing.T) {
	if testing.Short() {
		t.Skip("starts vild and Prometheus")
	}
	const alert = "VildQueueRejections"
	m := startMonitored(t, "--workers", "1", "--queue", "1", "--max-queue-wait", "20ms")
	prom := startPrometheus(t, m.metrics)

	// The target scraped and the rules loaded before the load starts.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var q struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		}
		prom.get(t, "/api/v1/query?query="+url.QueryEscape(`up{job="vild"}`), &q)
		var rules struct {
			Groups []struct {
				Rules []struct {
					Name string `json:"name"`
				} `json:"rules"`
			} `json:"groups"`
		}
		prom.get(t, "/api/v1/rules", &rules)
		loaded := 0
		for _, g := range rules.Groups {
			loaded += len(g.Rules)
		}
		if len(q.Result) == 1 && q.Result[0].Value[1] == "1" && loaded > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus does not scrape vild or has no rules: %+v, %d rules\n%s", q, loaded, prom.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if s := prom.alertState(t, alert); s != "" {
		t.Fatalf("%s is %s before any load", alert, s)
	}

	// Overload: 16 clients, each sending the next request 10 ms after the
	// last answer, until the alert fires (at most 40 s).
	png := scenePNG(t)
	var stop atomic.Bool
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				code, _, _, _, err := send("POST", m.url+"/v1/detect?categories=cat,dog", "image/png", png)
				mu.Lock()
				if err != nil {
					statuses[-1]++
				} else {
					statuses[code]++
				}
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	var pending, firing time.Duration
	for firing == 0 && time.Since(start) < 40*time.Second {
		switch prom.alertState(t, alert) {
		case "pending":
			if pending == 0 {
				pending = time.Since(start)
			}
		case "firing":
			firing = time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	stopped := time.Since(start)
	mu.Lock()
	total := 0
	for _, n := range statuses {
		total += n
	}
	t.Logf("overload: %d requests in %.1f s, statuses %v (-1: transport error)", total, stopped.Seconds(), statuses)
	mu.Unlock()
	if firing == 0 {
		t.Fatalf("%s did not fire within 40 s of overload (pending after %.1f s)", alert, pending.Seconds())
	}
	if statuses[503] == 0 || statuses[200] == 0 {
		t.Errorf("the overload should be answered with both 200 and 503: %v", statuses)
	}

	var cleared time.Duration
	for time.Since(start) < stopped+20*time.Second {
		if prom.alertState(t, alert) == "" {
			cleared = time.Since(start) - stopped
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cleared == 0 {
		t.Fatalf("%s still active 20 s after the overload stopped", alert)
	}
	t.Logf("%s: pending %.1f s and firing %.1f s after the overload began; inactive %.1f s after it stopped",
		alert, pending.Seconds(), firing.Seconds(), cleared.Seconds())
	// Every rule evaluated without an error on the real series.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	prom.get(t, "/api/v1/rules", &rules)
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Health != "ok" {
				t.Errorf("rule %s: health %q, %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	// No other alert of the shipped rules fired under the test's load.
	var d struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	}
	prom.get(t, "/api/v1/alerts", &d)
	for _, a := range d.Alerts {
		if a.State == "firing" {
			t.Errorf("%s is firing after the load: %v", a.Labels["alertname"], a.Labels)
		}
	}
}
