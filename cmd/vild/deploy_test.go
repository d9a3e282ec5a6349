package main

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// dockerfileEnv is the ENV of the Dockerfile's final stage.
func dockerfileEnv(t *testing.T) map[string]string {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	text = text[strings.LastIndex(text, "\nFROM "):]
	out := map[string]string{}
	joined := strings.ReplaceAll(text, "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		if !strings.HasPrefix(line, "ENV ") {
			continue
		}
		for _, kv := range regexp.MustCompile(`(\w+)=(\S+)`).FindAllStringSubmatch(line, -1) {
			out[kv[1]] = kv[2]
		}
	}
	if len(out) == 0 {
		t.Fatal("no ENV in the Dockerfile's last stage")
	}
	return out
}

// The shipped configurations (the image's environment, the compose file's
// replicas on it, the Kubernetes pods on it) pass serve's start-up checks,
// and would not without VILD_AUTH=keys: they listen beyond loopback.
func TestShippedConfigurationsStart(t *testing.T) {
	image := dockerfileEnv(t)
	configs := map[string]map[string]string{"Dockerfile": image}

	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `json:"environment"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	configs["docker-compose.yml vild1"] = merge(image, compose.Services["vild1"].Environment)

	b, err = os.ReadFile("../../deploy/kubernetes/vild.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		var d struct {
			Kind string `json:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct {
								Name  string `json:"name"`
								Value string `json:"value"`
							} `json:"env"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatal(err)
		}
		if d.Kind != "Deployment" {
			continue
		}
		pod := map[string]string{}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Value != "" {
				pod[e.Name] = e.Value
			}
		}
		configs["kubernetes Deployment"] = merge(image, pod)
	}
	if len(configs) != 3 {
		t.Fatalf("configurations found: %d", len(configs))
	}
	for name, e := range configs {
		getenv := func(k string) string { return e[k] }
		c, err := parseServeConfig(nil, getenv, io.Discard)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if c.Auth != "keys" || loopback(c.Addr) {
			t.Errorf("%s: auth %q on %s", name, c.Auth, c.Addr)
		}
		without := merge(e, map[string]string{"VILD_AUTH": ""})
		if _, err := parseServeConfig(nil, func(k string) string { return without[k] }, io.Discard); err == nil {
			t.Errorf("%s without VILD_AUTH=keys would start with no auth on %s", name, c.Addr)
		}
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
