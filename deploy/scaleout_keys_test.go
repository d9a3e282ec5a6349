package deploy

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScaleOutKeys runs the compose file's setup with keys: three replicas
// with --auth keys on one Redis behind HAProxy, the first key made as
// docs/deploy.md says (vild keys create against the shared Redis). Every
// replica takes it, they share its rate limit, and a revocation reaches all
// of them within a second.
func TestScaleOutKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server, three vild processes and HAProxy")
	}
	model, _ := filepath.Abs("../testdata/tinybundle")
	c := startClusterWith(t, "--model", model, "--auth", "keys")
	keys := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(c.bin, append([]string{"keys"}, append(args, "--store", c.redis.URL())...)...).Output()
		if err != nil {
			t.Fatalf("vild keys %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}

	if code, _, _, _, err := send("GET", c.lb+"/v1/models", "", nil); err != nil || code != 401 {
		t.Fatalf("no key through HAProxy: %d %v", code, err)
	}
	admin := keys("create", "--name", "admin", "--scopes", "admin")
	for i, u := range c.urls {
		if code, _, _, body, err := send("GET", u+"/v1/models", "", nil, "Authorization", "Bearer "+admin); err != nil || code != 200 {
			t.Fatalf("replica %d with the key: %d %v %s", i+1, code, err, body)
		}
	}
	if code, _, _, body, err := send("PUT", c.lb+"/v1/vocabularies/kitchen", "application/json", []byte(`{"categories":["mug"]}`), "Authorization", "Bearer "+admin); err != nil || code != 201 {
		t.Fatalf("PUT through HAProxy: %d %v %s", code, err, body)
	}

	// One request per 10 s with a burst of 2, counted across replicas.
	slow := keys("create", "--name", "slow", "--scopes", "detect", "--rps", "0.1", "--burst", "2")
	var codes []int
	var retry string
	for _, u := range c.urls {
		code, ra, _, _, err := send("GET", u+"/v1/models", "", nil, "X-API-Key", slow)
		if err != nil {
			t.Fatal(err)
		}
		codes, retry = append(codes, code), ra
	}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 || retry == "" || retry == "0" {
		t.Fatalf("a burst of 2 across three replicas: %v, Retry-After %q", codes, retry)
	}
	t.Logf("rate 0.1/s, burst 2, one request to each replica: %v, Retry-After %s s", codes, retry)

	keys("revoke", "admin")
	start := time.Now()
	for i, u := range c.urls {
		for {
			code, _, _, _, err := send("GET", u+"/v1/models", "", nil, "Authorization", "Bearer "+admin)
			if err != nil {
				t.Fatal(err)
			}
			if code == 401 {
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("replica %d still takes the revoked key after a second (%d)", i+1, code)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("revoked: every replica answered 401 within %s", time.Since(start).Round(time.Millisecond))
	list := keys("list")
	if strings.Contains(list, "admin") || !strings.Contains(list, "slow") || strings.Contains(list, slow) {
		t.Fatalf("list after revoke:\n%s", list)
	}
}
