package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vild/vild/apikey"
	"github.com/vild/vild/handlers/handlerstest"
	"github.com/vild/vild/internal/services"
)

// keys runs vild keys with args (and the environment given), returning
// stdout and stderr.
func keys(t *testing.T, getenv func(string) string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := keysCommand(context.Background(), args, getenv, &out, &errOut)
	return out.String(), errOut.String(), err
}

var tokenLine = regexp.MustCompile(`^vild_[A-Za-z0-9_-]{43}\n$`)

// vild keys create, list and revoke on the data directory's keys file: the
// token printed once, alone on its line; only its hash on disk, mode 0600;
// list shows no hash or token.
func TestKeysCommands(t *testing.T) {
	dir := t.TempDir()
	out, note, err := keys(t, env(), "create", "--name", "ci", "--scopes", "detect,vocabularies:write", "--rps", "5", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !tokenLine.MatchString(out) {
		t.Fatalf("stdout %q is not one token line", out)
	}
	token := strings.TrimSpace(out)
	if !strings.Contains(note, `key "ci" made`) || strings.Contains(note, token) {
		t.Fatalf("stderr %q", note)
	}
	path := filepath.Join(dir, apikey.FileName)
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keys file mode %v %v", st.Mode(), err)
	}
	disk, _ := os.ReadFile(path)
	if strings.Contains(string(disk), token) || strings.Contains(string(disk), token[len(apikey.TokenPrefix):]) || !strings.Contains(string(disk), apikey.Hash(token)) {
		t.Fatalf("the keys file must hold the hash only:\n%s", disk)
	}
	// Flags from the environment, the name of the flags' place free.
	if _, _, err := keys(t, env("VILD_DATA_DIR", dir), "create", "--scopes", "admin", "--name", "ops", "--max-concurrent", "0"); err != nil {
		t.Fatal(err)
	}
	list, _, err := keys(t, env(), "list", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") ||
		!regexp.MustCompile(`^ci\s+detect,vocabularies:write\s+\d{4}-\d\d-\d\dT\S+Z\s+rps=5 burst=default max-concurrent=default$`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^ops\s+admin\s+\S+\s+rps=default burst=default max-concurrent=unlimited$`).MatchString(lines[2]) {
		t.Fatalf("list:\n%s", list)
	}
	if strings.Contains(list, apikey.Hash(token)) || strings.Contains(list, "vild_") {
		t.Fatalf("list shows a hash or token:\n%s", list)
	}
	for _, bad := range [][]string{
		{"create", "--name", "ci", "--scopes", "detect"},   // the name is taken
		{"create", "--name", "x", "--scopes", "root"},      // no such scope
		{"create", "--name", "x"},                          // no scope
		{"create", "--name", "../x", "--scopes", "detect"}, // bad name
		{"create", "--name", "x", "--scopes", "detect", "--rps", "-1"},
		{"revoke"}, {"revoke", "nobody"}, {"rename", "ci"}, {},
	} {
		if _, _, err := keys(t, env(), append(bad, "--data-dir", dir)...); err == nil {
			t.Errorf("vild keys %v accepted", bad)
		}
	}
	if _, _, err := keys(t, env(), "revoke", "ci", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	list, _, _ = keys(t, env(), "list", "--data-dir", dir)
	if strings.Contains(list, "ci ") || !strings.Contains(list, "ops") {
		t.Fatalf("after revoke:\n%s", list)
	}
	// Through run, as the binary does.
	if err := run(context.Background(), []string{"keys", "list", "--data-dir", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
}

func TestKeysCommandsRedis(t *testing.T) {
	r := services.StartRedis(t)
	e := env("VILD_STORE", r.URL())
	out, _, err := keys(t, e, "create", "--name", "shared", "--scopes", "detect")
	if err != nil || !tokenLine.MatchString(out) {
		t.Fatalf("%q %v", out, err)
	}
	list, _, err := keys(t, env(), "list", "--store", r.URL())
	if err != nil || !strings.Contains(list, "shared") || strings.Contains(list, apikey.Hash(strings.TrimSpace(out))) {
		t.Fatalf("list %q %v", list, err)
	}
	if _, _, err := keys(t, e, "revoke", "shared"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := keys(t, e, "revoke", "shared"); err == nil {
		t.Fatal("second revoke accepted")
	}
}

// vild serve --auth keys end to end, with the keys file and with Redis: keys
// made and revoked with vild keys while the server runs; the log holds no
// token.
func TestServeWithKeys(t *testing.T) {
	for _, store := range []string{"file", "redis"} {
		t.Run(store, func(t *testing.T) {
			cfg := testServeConfig(t)
			cfg.Auth = "keys"
			e := env("VILD_DATA_DIR", cfg.Model.DataDir)
			if store == "redis" {
				cfg.Store = services.StartRedis(t).URL()
				e = env("VILD_STORE", cfg.Store)
			}
			var log services.SyncBuffer
			srv := startServeLog(t, cfg, func(context.Context, modelConfig) (*model, error) {
				return colorModel(&handlerstest.ColorDetector{}), nil
			}, slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})))
			base := "http://" + srv.addr
			waitStatus(t, base+"/readyz", 200, 10*time.Second)
			if !strings.Contains(log.String(), "no API keys yet") {
				t.Fatalf("no warning of no keys:\n%s", log.String())
			}

			if resp, _ := do(t, "POST", base+"/v1/detect?categories=red", "image/png", scenePNG(t)); resp.StatusCode != 401 ||
				resp.Header.Get("WWW-Authenticate") != `Bearer realm="vild"` {
				t.Fatalf("no key: %d %v", resp.StatusCode, resp.Header)
			}
			out, _, err := keys(t, e, "create", "--name", "app", "--scopes", "detect")
			if err != nil {
				t.Fatal(err)
			}
			token := strings.TrimSpace(out)
			resp, body := do(t, "POST", base+"/v1/detect?categories=red", "image/png", scenePNG(t), "Authorization", "Bearer "+token)
			if resp.StatusCode != 200 {
				t.Fatalf("a key made while the server runs: %d %s", resp.StatusCode, body)
			}
			if resp, _ := do(t, "PUT", base+"/v1/vocabularies/k", "application/json", []byte(`{"categories":["red"]}`), "X-API-Key", token); resp.StatusCode != 403 {
				t.Fatalf("detect key PUT: %d", resp.StatusCode)
			}
			for _, open := range []string{"/livez", "/readyz", "/", "/docs/index.html"} {
				if get(t, base+open) != 200 {
					t.Fatalf("%s without a key", open)
				}
			}
			if _, _, err := keys(t, e, "revoke", "app"); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for {
				resp, _ := do(t, "GET", base+"/v1/models", "", nil, "Authorization", "Bearer "+token)
				if resp.StatusCode == 401 {
					break
				}
				if time.Since(start) > time.Second {
					t.Fatalf("revoked key still answers %d after a second", resp.StatusCode)
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("%s: the revoked key answered 401 after %s", store, time.Since(start).Round(time.Millisecond))
			srv.cancel()
			if err := <-srv.done; err != nil {
				t.Fatal(err)
			}
			if l := log.String(); strings.Contains(l, token) || strings.Contains(l, token[len(apikey.TokenPrefix):]) || strings.Contains(l, "Bearer") {
				t.Fatalf("the server log holds the token:\n%s", l)
			}
		})
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vild test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// --tls-cert and --tls-key: the API answers HTTPS (TLS 1.2 or later) and
// refuses plain HTTP; a key pair that does not load stops the start.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	cfg, err := parseServeConfig([]string{"--addr", "127.0.0.1:0", "--metrics-addr", "", "--data-dir", dir,
		"--tls-cert", certFile, "--tls-key", keyFile}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, cfg, func(context.Context, modelConfig) (*model, error) {
		return colorModel(&handlerstest.ColorDetector{}), nil
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("https://" + srv.addr + "/readyz")
		if err == nil && resp.StatusCode == 200 {
			if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
				t.Fatalf("TLS state %+v", resp.TLS)
			}
			resp.Body.Close()
			break
		}
		if resp != nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("https never ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := client.Post("https://"+srv.addr+"/v1/detect?categories=red", "image/png", bytes.NewReader(scenePNG(t)))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("detect over TLS: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp, err := http.Get("http://" + srv.addr + "/livez"); err == nil {
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on the TLS listener")
		}
		resp.Body.Close()
	}
	old := &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: old}}).Get("https://" + srv.addr + "/livez"); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
	srv.cancel()
	if err := <-srv.done; err != nil {
		t.Fatal(err)
	}

	bad := cfg
	bad.TLSKey = certFile
	err = serve(context.Background(), bad, slog.New(slog.DiscardHandler), func(context.Context, modelConfig) (*model, error) {
		t.Fatal("loaded the model with a bad key pair")
		return nil, nil
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("bad key pair: %v", err)
	}
}
