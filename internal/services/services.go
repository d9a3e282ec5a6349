// Package services starts the real servers that tests need (redis-server,
// HAProxy, Prometheus) on free loopback ports, and stops them by their pid when the test
// ends. They come from Debian's packages (scripts/setup.d/10-debian.sh); a test
// is skipped when one is missing unless VILD_SERVICES_REQUIRED=1, as `make
// test` sets, which makes it fail instead.
package services

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Need returns the path of a program, skipping (or failing, when
// VILD_SERVICES_REQUIRED=1) the test when it is not installed.
func Need(t testing.TB, program string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(dir, program); fileExists(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed (bash scripts/setup.d/10-debian.sh installs it)", program)
	if os.Getenv("VILD_SERVICES_REQUIRED") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not accept connections within %s: %v", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Process is a server started by a test.
type Process struct {
	cmd *exec.Cmd
	out *SyncBuffer
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes (a process's
// output, a server's logger) and the test's reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs a program in the background; the test's cleanup kills it.
func Start(t testing.TB, path string, args ...string) *Process {
	t.Helper()
	return StartEnv(t, nil, path, args...)
}

// StartEnv is Start with extra environment variables (KEY=value).
func StartEnv(t testing.TB, env []string, path string, args ...string) *Process {
	t.Helper()
	p := &Process{cmd: exec.Command(path, args...), out: &SyncBuffer{}}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output is what the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Kill sends SIGKILL to the process (by its pid) and reaps it.
func (p *Process) Kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// Stop sends SIGTERM and waits up to within for the process to exit,
// returning its exit error.
func (p *Process) Stop(within time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		p.Kill()
		return fmt.Errorf("pid %d did not stop within %s", p.Pid(), within)
	}
}

// Redis is a redis-server on a loopback port with its data in a directory of
// the test's.
type Redis struct {
	*Process
	Addr string
	dir  string
	args []string
	path string
	t    testing.TB
}

// URL is the redis:// URL of database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// StartRedis starts redis-server with append-only persistence (so a restart
// keeps what was acknowledged) and extra configuration args
// ("--maxmemory", "64mb", …).
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	path := Need(t, "redis-server")
	port := FreePort(t)
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: t.TempDir(), path: path, t: t}
	r.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"}, extra...)
	r.start()
	return r
}

func (r *Redis) start() {
	r.Process = Start(r.t, r.path, r.args...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.Addr, 100*time.Millisecond)
		if err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 64)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s did not answer PING: %s", r.Addr, r.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart kills the server and starts it again on the same port and data.
func (r *Redis) Restart() {
	r.Kill()
	r.start()
}

// Prometheus is a prometheus server on a loopback port with its storage in a
// directory of the test's.
type Prometheus struct {
	*Process
	URL string // base URL of the web UI and HTTP API
}

// StartPrometheus writes cfg (prometheus.yml's text) to a directory of the
// test's and starts prometheus on it, waiting until /-/ready answers 200.
func StartPrometheus(t testing.TB, cfg string) *Prometheus {
	t.Helper()
	path := Need(t, "prometheus")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(FreePort(t))
	p := &Prometheus{URL: "http://127.0.0.1:" + port}
	p.Process = Start(t, path, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+port, "--log.level=warn")
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if p.cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("prometheus on %s not ready: %v\n%s", p.URL, err, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Send makes one HTTP request (hdr: header names and values, alternating)
// and returns the response, its body read whole and closed.
func Send(method, url, contentType string, body []byte, hdr ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}
