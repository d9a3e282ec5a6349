package urlfetch

import (
	"context"
	"net"
	"net/netip"
)

// withNetwork replaces the resolver and the dialler of f: a fake DNS and a
// way to reach the test's servers (on 127.0.0.1) under public addresses.
// The policy checks run before either, as in production.
func withNetwork(f *Fetcher, names map[string][]netip.Addr, route map[string]string) {
	f.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := names[host]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	f.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := route[addr]; ok {
			addr = to
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}
