// Package urlfetch fetches images that clients name by URL, without letting
// those URLs reach into the server's own network (SSRF). A URL is fetched
// only when its scheme is http or https and its host is on an allow-list;
// every address a connection is made to is checked when it is dialled (so a
// name that resolves to another address later, DNS rebinding, is checked
// again), and loopback, link-local (169.254.169.254 included), private,
// CGNAT, unspecified, multicast and reserved addresses are refused unless an
// allowed CIDR covers them. Redirects are checked like the first URL, up to
// a cap; the body is read up to a byte limit, the whole fetch within a time
// limit. What the bytes are is left to the image decoder.
package urlfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is a URL or address the policy refuses: a scheme other than
// http(s), a host off the allow-list, an address in a refused range, or too
// many redirects.
var ErrRefused = errors.New("urlfetch: refused")

// ErrTooLarge is a body over the byte limit.
var ErrTooLarge = errors.New("urlfetch: body over the size limit")

// StatusError is an answer other than 2xx.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return fmt.Sprintf("urlfetch: the server answered %d", e.Code) }

// Options configure a Fetcher. Zero limits take the defaults below.
type Options struct {
	// AllowHosts are the hosts URLs may name: an exact host name or IP
	// ("images.example.com", "203.0.113.7"), "*.example.com" for any
	// subdomain of example.com (not example.com itself), or "*" for any
	// host. None: no URL is fetched.
	AllowHosts []string
	// AllowCIDRs are addresses allowed although they fall in a refused
	// range (a Label Studio on the private network: 10.0.0.0/8).
	AllowCIDRs []netip.Prefix
	// MaxBytes caps a body (default 20 MiB).
	MaxBytes int64
	// Timeout bounds a whole fetch, redirects and body included (default 10 s).
	Timeout time.Duration
	// MaxRedirects caps the redirects followed (default 3; negative: none).
	MaxRedirects int
}

// Defaults of Options.
const (
	DefaultMaxBytes     = 20 << 20
	DefaultTimeout      = 10 * time.Second
	DefaultMaxRedirects = 3
)

// Fetcher fetches URLs under one policy; safe for concurrent use.
type Fetcher struct {
	opts   Options
	client *http.Client
	// lookup resolves a host name; dial connects to an address already
	// checked. Tests replace them (export_test.go).
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
}

// New returns a Fetcher; it rejects malformed allow-list entries.
func New(o Options) (*Fetcher, error) {
	for _, h := range o.AllowHosts {
		if err := checkPattern(h); err != nil {
			return nil, err
		}
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxRedirects == 0 {
		o.MaxRedirects = DefaultMaxRedirects
	}
	f := &Fetcher{opts: o}
	f.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	d := &net.Dialer{Timeout: o.Timeout, Control: f.control}
	f.dial = d.DialContext
	tr := &http.Transport{
		Proxy:                 nil, // never a proxy from the environment: the check must see the real peer
		DialContext:           f.dialChecked,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   o.Timeout,
		ResponseHeaderTimeout: o.Timeout,
	}
	f.client = &http.Client{Transport: tr, CheckRedirect: f.checkRedirect}
	return f, nil
}

// checkPattern validates one allow-list entry: *, *.domain, a host name
// or an IP address.
func checkPattern(p string) error {
	if p == "*" {
		return nil
	}
	if _, err := netip.ParseAddr(p); err == nil {
		return nil
	}
	h := strings.TrimPrefix(p, "*.")
	if h == "" || strings.ContainsAny(h, "*/:@ []?#") {
		return fmt.Errorf("urlfetch: allowed host %q: want a host name, an IP address, *.domain or *", p)
	}
	return nil
}

// Check tells whether a URL may be fetched by its scheme and host (its
// addresses are checked when dialled): nil, or an error wrapping ErrRefused.
func (f *Fetcher) Check(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: only http and https URLs are fetched", ErrRefused)
	}
	if u.User != nil {
		return fmt.Errorf("%w: URLs with credentials are not fetched", ErrRefused)
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return fmt.Errorf("%w: the URL has no host", ErrRefused)
	}
	if !f.hostAllowed(host) {
		return fmt.Errorf("%w: host %s is not on the allow-list", ErrRefused, host)
	}
	return nil
}

func (f *Fetcher) hostAllowed(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	for _, p := range f.opts.AllowHosts {
		p = strings.TrimSuffix(strings.ToLower(p), ".")
		switch {
		case p == "*":
			return true
		case strings.HasPrefix(p, "*."):
			if strings.HasSuffix(host, p[1:]) {
				return true
			}
		default:
			if a, err := netip.ParseAddr(p); err == nil {
				p = a.Unmap().String()
			}
			if host == p {
				return true
			}
		}
	}
	return false
}

// Fetch GETs rawURL with header added and returns the body: at most
// MaxBytes, within Timeout. Errors wrap ErrRefused, ErrTooLarge, a
// *StatusError, or the network's error; they never hold the URL's path or
// query (a presigned URL's signature), so they may be logged.
func (f *Fetcher) Fetch(ctx context.Context, rawURL string, header http.Header) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL", ErrRefused)
	}
	if err := f.Check(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("urlfetch: %s: %w", ue.Op, ue.Err) // without the URL: it may carry a signature
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &StatusError{Code: resp.StatusCode}
	}
	if resp.ContentLength > f.opts.MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, resp.ContentLength, f.opts.MaxBytes)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, f.opts.MaxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > f.opts.MaxBytes {
		return nil, fmt.Errorf("%w: the limit is %d bytes", ErrTooLarge, f.opts.MaxBytes)
	}
	return b, nil
}

// checkRedirect applies the URL policy to every hop, up to the cap.
func (f *Fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > max(f.opts.MaxRedirects, 0) {
		return fmt.Errorf("%w: more than %d redirects", ErrRefused, max(f.opts.MaxRedirects, 0))
	}
	return f.Check(req.URL)
}

// dialChecked resolves the host itself and dials only addresses the policy
// allows, so the address checked is the address connected to.
func (f *Fetcher) dialChecked(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = f.lookup(ctx, host); err != nil {
		return nil, err
	}
	refused := fmt.Errorf("%w: %s has no address outside the refused ranges", ErrRefused, host)
	var lastErr error = refused
	for _, a := range addrs {
		if err := f.checkAddr(a); err != nil {
			continue
		}
		c, err := f.dial(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// control checks the address a socket is about to connect to: the last
// word, whatever resolved it.
func (f *Fetcher) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: address %q", ErrRefused, address)
	}
	return f.checkAddr(ap.Addr())
}

// checkAddr refuses an address in a refused range no allowed CIDR covers.
func (f *Fetcher) checkAddr(a netip.Addr) error {
	a = a.WithZone("").Unmap()
	for _, p := range f.opts.AllowCIDRs {
		if p.Contains(a) {
			return nil
		}
	}
	if r := RefusedRange(a); r != "" {
		return fmt.Errorf("%w: a %s address", ErrRefused, r)
	}
	return nil
}

// refused are the ranges no URL may reach unless allowed, with their names.
var refused = []struct {
	prefix netip.Prefix
	name   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // 255.255.255.255 included
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "NAT64"},
	{netip.MustParsePrefix("2001::/32"), "Teredo"},
	{netip.MustParsePrefix("2002::/16"), "6to4"},
	{netip.MustParsePrefix("fc00::/7"), "unique local (private)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// RefusedRange names the refused range a holds ("" when none); IPv4-mapped
// IPv6 addresses are judged as the IPv4 address they carry.
func RefusedRange(a netip.Addr) string {
	a = a.WithZone("").Unmap()
	for _, r := range refused {
		if r.prefix.Contains(a) {
			return r.name
		}
	}
	return ""
}
