package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/vild/vild/internal/services"
)

// typed are the kinds the manifests may hold, decoded strictly into the
// Kubernetes API's own Go types: an unknown or misspelt field, a wrong type or
// a wrong apiVersion fails, as the API server's schema check would.
var typed = map[string]func() any{
	"v1/Service":                             func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                    func() any { return &appsv1.StatefulSet{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
}

// manifests decodes every document of the files kustomization.yaml lists.
func manifests(t *testing.T) map[string]any {
	t.Helper()
	var kust struct {
		Resources []string `json:"resources"`
	}
	b, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &kust); err != nil || len(kust.Resources) == 0 {
		t.Fatalf("kustomization.yaml: %v, resources %v", err, kust.Resources)
	}
	out := map[string]any{}
	for _, f := range kust.Resources {
		b, err := os.ReadFile(filepath.Join("kubernetes", f))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			newObj, ok := typed[head.APIVersion+"/"+head.Kind]
			if !ok {
				t.Fatalf("%s #%d: unexpected kind %s/%s", f, i, head.APIVersion, head.Kind)
			}
			obj := newObj()
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			if err := dec.Decode(obj); err != nil {
				t.Fatalf("%s #%d (%s %s): %v", f, i, head.Kind, head.Metadata.Name, err)
			}
			out[head.Kind+"/"+head.Metadata.Name] = obj
		}
	}
	return out
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestKubernetesManifests checks the manifests offline: strict decoding into
// the API's types, then what vild needs of them.
func TestKubernetesManifests(t *testing.T) {
	m := manifests(t)
	dep, ok := m["Deployment/vild"].(*appsv1.Deployment)
	if !ok {
		t.Fatal("no Deployment vild")
	}
	pod := dep.Spec.Template
	if !equalLabels(dep.Spec.Selector.MatchLabels, pod.Labels) {
		t.Fatalf("Deployment selector %v does not select its pods %v", dep.Spec.Selector.MatchLabels, pod.Labels)
	}
	c := pod.Spec.Containers[0]
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Fatal("readiness probe is not GET /readyz")
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/livez" {
		t.Fatal("liveness probe is not GET /livez")
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		t.Fatal("no preStop: the endpoint would be removed while requests still arrive")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Fatal("CPU request and memory limit are needed for the autoscaler and the scheduler")
	}
	if !strings.HasPrefix(env(c, "VILD_STORE"), "redis://") {
		t.Fatalf("VILD_STORE = %q: replicas must share a Redis", env(c, "VILD_STORE"))
	}
	if env(c, "VILD_AUTH") != "keys" {
		t.Fatalf("VILD_AUTH = %q: the pods listen beyond loopback, so the API needs keys", env(c, "VILD_AUTH"))
	}
	drain, err := time.ParseDuration(env(c, "VILD_SHUTDOWN_TIMEOUT"))
	if err != nil {
		t.Fatal(err)
	}
	preStop := 0 * time.Second
	if cmd := c.Lifecycle.PreStop.Exec; cmd != nil && len(cmd.Command) == 2 && cmd.Command[0] == "sleep" {
		d, err := time.ParseDuration(cmd.Command[1] + "s")
		if err != nil {
			t.Fatal(err)
		}
		preStop = d
	}
	if grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= preStop+drain {
		t.Fatalf("terminationGracePeriodSeconds %s must exceed preStop %s + drain %s", grace, preStop, drain)
	}
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
	}
	svc := m["Service/vild"].(*corev1.Service)
	if !equalLabels(svc.Spec.Selector, pod.Labels) {
		t.Fatal("Service vild does not select the pods")
	}
	for _, p := range svc.Spec.Ports {
		if !ports[p.TargetPort.StrVal] {
			t.Fatalf("Service port %s targets %q, not a container port", p.Name, p.TargetPort.StrVal)
		}
	}
	hpa := m["HorizontalPodAutoscaler/vild"].(*autoscalingv2.HorizontalPodAutoscaler)
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != dep.Name || *hpa.Spec.MinReplicas < 2 {
		t.Fatalf("HPA target %+v, min %d", hpa.Spec.ScaleTargetRef, *hpa.Spec.MinReplicas)
	}
	pdb := m["PodDisruptionBudget/vild"].(*policyv1.PodDisruptionBudget)
	if !equalLabels(pdb.Spec.Selector.MatchLabels, pod.Labels) || pdb.Spec.MinAvailable.IntValue() >= int(*hpa.Spec.MinReplicas) {
		t.Fatal("the PodDisruptionBudget must select the pods and allow one disruption at the minimum size")
	}
	sts := m["StatefulSet/vild-redis"].(*appsv1.StatefulSet)
	if len(sts.Spec.VolumeClaimTemplates) == 0 || !slices.Contains(sts.Spec.Template.Spec.Containers[0].Args, "--appendonly") {
		t.Fatal("Redis needs a volume claim and append-only persistence")
	}
	rsvc := m["Service/vild-redis"].(*corev1.Service)
	if !strings.Contains(env(c, "VILD_STORE"), rsvc.Name+":6379") {
		t.Fatalf("VILD_STORE %q does not name the Redis Service %s", env(c, "VILD_STORE"), rsvc.Name)
	}
}

func equalLabels(a, b map[string]string) bool {
	if len(a) == 0 {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestComposeFile checks docker-compose.yml offline: Redis with persistence,
// three replicas on it, and HAProxy given every variable its configuration
// uses, whose configuration `haproxy -c` accepts with the compose values.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string            `json:"image"`
			Command     []string          `json:"command"`
			Environment map[string]string `json:"environment"`
			Volumes     []string          `json:"volumes"`
			Healthcheck map[string]any    `json:"healthcheck"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	redis, ok := compose.Services["redis"]
	if !ok || !slices.Contains(redis.Command, "--appendonly") {
		t.Fatal("no redis service with append-only persistence")
	}
	for _, name := range []string{"vild1", "vild2", "vild3"} {
		s, ok := compose.Services[name]
		if !ok || s.Environment["VILD_STORE"] != "redis://redis:6379/0" || s.Environment["VILD_AUTH"] != "keys" || s.Healthcheck == nil {
			t.Fatalf("%s: %+v", name, s)
		}
	}
	hp, ok := compose.Services["haproxy"]
	if !ok || !slices.Contains(hp.Volumes, "./deploy/haproxy:/usr/local/etc/haproxy:ro") {
		t.Fatal("no haproxy service with deploy/haproxy mounted")
	}
	cfg, err := os.ReadFile("haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, m := range regexp.MustCompile(`\$\{(VILD_[A-Z0-9_]+)\}`).FindAllStringSubmatch(string(cfg), -1) {
		if _, ok := hp.Environment[m[1]]; !ok {
			t.Errorf("haproxy.cfg uses ${%s}, which the compose file does not set", m[1])
		}
		vars = append(vars, m[1])
	}
	// The compose values, with the replicas' names as loopback addresses
	// (haproxy -c resolves them) and the mounted directory as this one.
	path := services.Need(t, "haproxy")
	dir, _ := filepath.Abs("haproxy")
	cmd := exec.Command(path, "-c", "-f", filepath.Join(dir, "haproxy.cfg"))
	cmd.Env = os.Environ()
	for _, v := range vars {
		val := hp.Environment[v]
		switch {
		case v == "VILD_HAPROXY_DIR":
			val = dir
		case strings.HasPrefix(v, "VILD_REPLICA"):
			val = "127.0.0.1:" + strings.Split(val, ":")[1]
		case strings.HasPrefix(val, ":"):
			val = "127.0.0.1" + val
		}
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%s", v, val))
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}
