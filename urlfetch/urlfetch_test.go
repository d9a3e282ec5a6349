package urlfetch

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// publicAddr stands for an address on the internet (TEST-NET-3, in no
// refused range); the tests route it to a server on 127.0.0.1.
var publicAddr = netip.MustParseAddr("203.0.113.7")

// counted is a test server on 127.0.0.1 that counts the requests it gets.
type counted struct {
	*httptest.Server
	hits atomic.Int32
}

func serve(t *testing.T, h http.HandlerFunc) *counted {
	t.Helper()
	c := &counted{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *counted) port() string {
	_, p, _ := net.SplitHostPort(c.Listener.Addr().String())
	return p
}

func newFetcher(t *testing.T, o Options) *Fetcher {
	t.Helper()
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRefusedRanges(t *testing.T) {
	refusedAddrs := []string{
		"127.0.0.1", "127.8.9.10", "::1", // loopback
		"169.254.169.254", "169.254.0.1", "fe80::1", "fe80::1%eth0", // link-local, the cloud metadata address
		"10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1", "fd00::1", "fc00::1", // private, ULA
		"100.64.0.1", "100.127.255.254", // CGNAT
		"0.0.0.0", "::", "0.1.2.3", // unspecified, this network
		"224.0.0.1", "239.255.255.250", "ff02::1", "255.255.255.255", "240.0.0.1", // multicast, reserved
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:192.168.0.1", // IPv4-mapped
		"::127.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1", // IPv4-compatible, NAT64, 6to4
	}
	for _, s := range refusedAddrs {
		if RefusedRange(netip.MustParseAddr(s)) == "" {
			t.Errorf("%s is not refused", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "203.0.113.7", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"} {
		if r := RefusedRange(netip.MustParseAddr(s)); r != "" {
			t.Errorf("%s is refused as %s", s, r)
		}
	}
}

// Addresses in refused ranges are refused before any connection, whatever
// the allow-list says about hosts; the server named is never reached.
func TestRefusesRangesAtDialTime(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("secret")) })
	f := newFetcher(t, Options{AllowHosts: []string{"*"}})
	for _, u := range []string{
		srv.URL + "/",                                                   // 127.0.0.1:port
		"http://localhost:" + srv.port() + "/",                          // resolves to loopback
		"http://[::1]:" + srv.port() + "/",                              // IPv6 loopback
		"http://[::ffff:127.0.0.1]:" + srv.port() + "/",                 // IPv4-mapped loopback
		"http://169.254.169.254/latest/meta-data/",                      // cloud metadata
		"http://[fe80::1]/",                                             // IPv6 link-local
		"http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.0.1/", // RFC 1918
		"http://[fd12:3456::1]/", // ULA
		"http://100.64.0.1/",     // CGNAT
		"http://0.0.0.0:" + srv.port() + "/", "http://[::]:" + srv.port() + "/",
		"http://224.0.0.1/", "http://[ff02::1]/",
	} {
		_, err := f.Fetch(context.Background(), u+"?sig=s3cr3t", nil)
		if !errors.Is(err, ErrRefused) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: got %v, want ErrRefused without the query", u, err)
		}
	}
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("the loopback server was reached %d times", n)
	}
}

func TestRefusesByURL(t *testing.T) {
	f := newFetcher(t, Options{AllowHosts: []string{"images.example.com", "*.cdn.example.net"}})
	for _, u := range []string{
		"file:///etc/passwd", "gopher://images.example.com/", "ftp://images.example.com/a.png", "s3://bucket/a.png",
		"http://other.example.com/a.png",                   // not on the list
		"http://cdn.example.net/a.png",                     // *.cdn.example.net is subdomains only
		"http://evilcdn.example.net/a.png",                 // suffix without the dot
		"http://images.example.com.evil.org/",              // list entry as a prefix
		"http://user:pw@images.example.com/",               // credentials in the URL
		"/data/upload/1/a.png", "images.example.com/a.png", // relative: no scheme or host
		"http://%zz/",
	} {
		_, err := f.Fetch(context.Background(), u, nil)
		if !errors.Is(err, ErrRefused) {
			t.Errorf("%s: got %v, want ErrRefused", u, err)
		}
	}
	for _, u := range []string{"http://images.example.com/a", "https://IMAGES.example.com./a", "http://a.cdn.example.net:8443/a", "http://x.y.cdn.example.net/a"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if err := f.Check(req.URL); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if newFetcher(t, Options{}).Check(mustURL(t, "http://images.example.com/").URL) == nil {
		t.Error("an empty allow-list allowed a host")
	}
}

func mustURL(t *testing.T, s string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewRejectsBadPatterns(t *testing.T) {
	for _, p := range []string{"", "*.", "http://x.org", "x.org/path", "a*.org", "user@x.org", "x.org:80"} {
		if _, err := New(Options{AllowHosts: []string{p}}); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
	for _, p := range []string{"*", "x.org", "*.x.org", "10.0.0.5", "::1"} {
		if _, err := New(Options{AllowHosts: []string{p}}); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
}

// A name on the allow-list that resolves to loopback is refused: the
// address is checked, not the name (DNS rebinding gets nowhere).
func TestHostResolvingToLoopbackRefused(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("secret")) })
	f := newFetcher(t, Options{AllowHosts: []string{"*.example.test"}})
	withNetwork(f, map[string][]netip.Addr{
		"rebind.example.test": {netip.MustParseAddr("127.0.0.1")},
		"meta.example.test":   {netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("::ffff:10.0.0.1")},
	}, nil)
	for _, u := range []string{"http://rebind.example.test:" + srv.port() + "/", "http://meta.example.test/"} {
		if _, err := f.Fetch(context.Background(), u, nil); !errors.Is(err, ErrRefused) {
			t.Errorf("%s: got %v, want ErrRefused", u, err)
		}
	}
	if srv.hits.Load() != 0 {
		t.Fatal("the loopback server was reached")
	}
}

// publicServer is a server that the fetcher reaches as images.example.test
// at a public address.
func publicServer(t *testing.T, f *Fetcher, h http.HandlerFunc, names map[string][]netip.Addr) (*counted, string) {
	srv := serve(t, h)
	if names == nil {
		names = map[string][]netip.Addr{}
	}
	names["images.example.test"] = []netip.Addr{publicAddr}
	withNetwork(f, names, map[string]string{net.JoinHostPort(publicAddr.String(), srv.port()): srv.Listener.Addr().String()})
	return srv, "http://images.example.test:" + srv.port()
}

func TestFetchAllowedHost(t *testing.T) {
	f := newFetcher(t, Options{AllowHosts: []string{"images.example.test"}})
	var auth string
	_, base := publicServer(t, f, func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		_, _ = w.Write([]byte("\x89PNG picture"))
	}, nil)
	b, err := f.Fetch(context.Background(), base+"/a.png", http.Header{"Authorization": {"Token abc"}})
	if err != nil || string(b) != "\x89PNG picture" || auth != "Token abc" {
		t.Fatalf("got %q, %v (auth %q)", b, err, auth)
	}
}

// Every redirect is checked again: a host off the list, a loopback or
// link-local address (named or literal), and more hops than the cap.
func TestRedirectsCheckedAgain(t *testing.T) {
	inside := serve(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("secret")) })
	f := newFetcher(t, Options{AllowHosts: []string{"images.example.test", "127.0.0.1", "localhost", "internal.example.test"}, MaxRedirects: 2})
	var to atomic.Value
	_, base := publicServer(t, f, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to":
			http.Redirect(w, r, to.Load().(string), http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			_, _ = w.Write([]byte("ok"))
		}
	}, map[string][]netip.Addr{"internal.example.test": {netip.MustParseAddr("169.254.169.254")}, "localhost": {netip.MustParseAddr("127.0.0.1")}})
	for _, target := range []string{
		inside.URL + "/secret",                           // loopback literal, host on the list
		"http://localhost:" + inside.port() + "/secret",  // loopback by name
		"http://internal.example.test/latest/meta-data/", // a listed name that resolves to link-local
		"http://elsewhere.example.org/a.png",             // host off the list
		"file:///etc/passwd",                             // scheme
	} {
		to.Store(target)
		_, err := f.Fetch(context.Background(), base+"/to?X-Amz-Signature=s3cr3t", nil)
		if !errors.Is(err, ErrRefused) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("redirect to %s: got %v, want ErrRefused without the query", target, err)
		}
	}
	if inside.hits.Load() != 0 {
		t.Fatal("a redirect reached the loopback server")
	}
	if _, err := f.Fetch(context.Background(), base+"/loop", nil); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "redirects") {
		t.Errorf("redirect loop: %v", err)
	}
	to.Store(base + "/fine")
	if b, err := f.Fetch(context.Background(), base+"/to", nil); err != nil || string(b) != "ok" {
		t.Errorf("allowed redirect: %q %v", b, err)
	}
}

// An allowed CIDR lets a refused range through, on a real dial.
func TestAllowedCIDR(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	f := newFetcher(t, Options{AllowHosts: []string{"127.0.0.1"}, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if b, err := f.Fetch(context.Background(), srv.URL+"/", nil); err != nil || string(b) != "ok" {
		t.Fatalf("got %q, %v", b, err)
	}
	g := newFetcher(t, Options{AllowHosts: []string{"127.0.0.1"}, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if _, err := g.Fetch(context.Background(), srv.URL+"/", nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("another CIDR let loopback through: %v", err)
	}
}

// The socket-level check refuses what the resolver step might have missed.
func TestControlChecksTheSocketAddress(t *testing.T) {
	f := newFetcher(t, Options{AllowHosts: []string{"*"}})
	for _, a := range []string{"127.0.0.1:80", "[::1]:443", "[::ffff:10.0.0.1]:80", "169.254.169.254:80", "[fe80::1%eth0]:80"} {
		if err := f.control("tcp", a, nil); !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v", a, err)
		}
	}
	if err := f.control("tcp", "203.0.113.7:80", nil); err != nil {
		t.Errorf("public address: %v", err)
	}
}

func TestSizeLimit(t *testing.T) {
	f := newFetcher(t, Options{AllowHosts: []string{"images.example.test"}, MaxBytes: 1000})
	_, base := publicServer(t, f, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no Content-Length
		}
		n := 1000
		if r.URL.Path != "/fits" {
			n = 1001
		}
		_, _ = w.Write([]byte(strings.Repeat("x", n)))
	}, nil)
	for _, p := range []string{"/declared", "/chunked"} {
		if _, err := f.Fetch(context.Background(), base+p, nil); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: got %v, want ErrTooLarge", p, err)
		}
	}
	if b, err := f.Fetch(context.Background(), base+"/fits", nil); err != nil || len(b) != 1000 {
		t.Errorf("1000 bytes: %d %v", len(b), err)
	}
}

func TestTimeLimitAndStatus(t *testing.T) {
	f := newFetcher(t, Options{AllowHosts: []string{"images.example.test"}, Timeout: 200 * time.Millisecond})
	_, base := publicServer(t, f, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}, nil)
	start := time.Now()
	_, err := f.Fetch(context.Background(), base+"/slow", nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second || strings.Contains(err.Error(), "/slow") {
		t.Errorf("slow server: %v after %s", err, time.Since(start))
	}
	var se *StatusError
	if _, err := f.Fetch(context.Background(), base+"/missing", nil); !errors.As(err, &se) || se.Code != 404 {
		t.Errorf("404: %v", err)
	}
}
