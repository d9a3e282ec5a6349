package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// validManifest is a small manifest that passes Validate once checksums are set.
func validManifest() *Manifest {
	return &Manifest{
		Format: Format, Name: "test",
		Input: Input{MaxSide: 128, SizeDivisible: 32, Mean: [3]float32{0.485, 0.456, 0.406},
			Std: [3]float32{0.229, 0.224, 0.225}, Resize: "bilinear"},
		FPN: FPN{Channels: 8, Levels: []Level{
			{Name: "p3", Stride: 8, AnchorSizes: []float32{16}, RPN: true, RoI: true},
			{Name: "p4", Stride: 16, AnchorSizes: []float32{32}, RPN: true, RoI: true},
			{Name: "p5", Stride: 32, AnchorSizes: []float32{64}, RPN: true},
		}},
		Anchors:     Anchors{AspectRatios: []float32{0.5, 1, 2}},
		RPN:         RPN{PreNMSTopN: 100, PostNMSTopN: 20, NMSIoU: 0.7, MinSize: 0.001, BoxCoderWeights: [4]float32{1, 1, 1, 1}},
		RoIAlign:    RoIAlign{OutputSize: 7, SamplingRatio: 2, CanonicalScale: 224, CanonicalLevel: 4},
		BoxHead:     BoxHead{BoxCoderWeights: [4]float32{10, 10, 5, 5}},
		Embedding:   Embedding{Dim: 2, Temperature: 0.01, EnsembleLambda: 2.0 / 3},
		Postprocess: Postprocess{ScoreThreshold: 0.05, NMSIoU: 0.5, MaxDetections: 100},
		Text:        Text{Tokenizer: "clip-bpe", ContextLength: 16, Templates: []string{"a photo of a {}."}},
		Categories:  []Category{{Name: "cat", Split: "base", Synonyms: []string{"kitty"}}, {Name: "dog", Split: "novel"}},
	}
}

// testFS returns the files of a bundle whose manifest checksums them all.
func testFS(t *testing.T, m *Manifest, files map[string]string) fstest.MapFS {
	t.Helper()
	if m.SHA256 == nil {
		m.SHA256 = map[string]string{}
		for name, content := range files {
			sum := sha256.Sum256([]byte(content))
			m.SHA256[name] = hex.EncodeToString(sum[:])
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{ManifestFile: {Data: raw}}
	for name, content := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(content)}
	}
	return fsys
}

func npyString(t *testing.T, a *Array) string {
	t.Helper()
	var b strings.Builder
	if err := WriteNPY(&b, a); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func runtimeFiles(t *testing.T) map[string]string {
	return map[string]string{
		BackboneFile: "graph a", BoxHeadFile: "graph b", TextEncoderFile: "graph c",
		VocabFile: "{}", MergesFile: "#version: 0.2\n",
		BackgroundFile:         npyString(t, &Array{DType: Float32, Shape: []int{2}, F32: []float32{1, 0}}),
		CategoryEmbeddingsFile: npyString(t, &Array{DType: Float32, Shape: []int{2, 2}, F32: []float32{0, 1, 0.6, 0.8}}),
	}
}

func TestOpenFS(t *testing.T) {
	m := validManifest()
	b, err := OpenFS(testFS(t, m, runtimeFiles(t)), "test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.Digest, "sha256:") || len(b.Digest) != 71 {
		t.Errorf("digest %q", b.Digest)
	}
	bg, err := b.Background()
	if err != nil || len(bg) != 2 || bg[0] != 1 {
		t.Errorf("background %v, %v", bg, err)
	}
	ce, err := b.CategoryEmbeddings()
	if err != nil || len(ce) != 2 || ce[1][1] != 0.8 {
		t.Errorf("category embeddings %v, %v", ce, err)
	}
	if got := b.Manifest.BaseNames(); !got["cat"] || !got["kitty"] || got["dog"] {
		t.Errorf("base names %v", got)
	}
	if n := len(b.Manifest.RoILevels()); n != 2 {
		t.Errorf("%d roi levels, want 2", n)
	}
	cases, err := b.GoldenCases()
	if err != nil || len(cases) != 0 {
		t.Errorf("golden cases %v, %v", cases, err)
	}
}

func TestOpenFailures(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m *Manifest, files map[string]string, fsys fstest.MapFS)
		want   error
		text   string
	}{
		{"missing graph", func(m *Manifest, f map[string]string, fsys fstest.MapFS) { delete(fsys, BoxHeadFile) }, ErrMissing, "box_head.onnx"},
		{"missing manifest", func(m *Manifest, f map[string]string, fsys fstest.MapFS) { delete(fsys, ManifestFile) }, ErrMissing, "manifest.json"},
		{"truncated graph", func(m *Manifest, f map[string]string, fsys fstest.MapFS) {
			fsys[BackboneFile] = &fstest.MapFile{Data: []byte("graph")}
		}, ErrChecksum, "backbone.onnx"},
		{"bad manifest json", func(m *Manifest, f map[string]string, fsys fstest.MapFS) {
			fsys[ManifestFile] = &fstest.MapFile{Data: []byte(`{"format": `)}
		}, ErrManifest, ""},
		{"unknown manifest field", func(m *Manifest, f map[string]string, fsys fstest.MapFS) {
			fsys[ManifestFile] = &fstest.MapFile{Data: []byte(`{"format": "vild-bundle/1", "colour": 1}`)}
		}, ErrManifest, "colour"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := validManifest()
			files := runtimeFiles(t)
			fsys := testFS(t, m, files)
			tc.mutate(m, files, fsys)
			_, err := OpenFS(fsys, "test")
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.want, tc.text)
			}
		})
	}
}

func TestOpenDirectory(t *testing.T) {
	dir := t.TempDir()
	m := validManifest()
	for name, fsf := range testFS(t, m, runtimeFiles(t)) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, fsf.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, BackgroundFile), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrChecksum) {
		t.Errorf("replaced background: %v", err)
	}
}

func validImageEncoder() *ImageEncoder {
	return &ImageEncoder{File: ImageEncoderFile, InputSize: 32, Mean: [3]float32{0.485, 0.456, 0.406},
		Std: [3]float32{0.229, 0.224, 0.225}, CropScales: []float32{1, 1.5}, Crop: "square"}
}

func TestOpenImageEncoder(t *testing.T) {
	m := validManifest()
	m.ImageEncoder = validImageEncoder()
	m.ImageEncoder.Mirror = true
	files := runtimeFiles(t)
	files[ImageEncoderFile] = "graph d"
	b, err := OpenFS(testFS(t, m, files), "test")
	if err != nil {
		t.Fatal(err)
	}
	if e := b.Manifest.ImageEncoder; e == nil || e.InputSize != 32 || len(e.CropScales) != 2 || !e.Mirror {
		t.Fatalf("image encoder %+v", e)
	}
	if got, err := b.ReadFile(ImageEncoderFile); err != nil || string(got) != "graph d" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m *Manifest)
		text   string
	}{
		{"format", func(m *Manifest) { m.Format = "vild-bundle/2" }, "format"},
		{"stride order", func(m *Manifest) { m.FPN.Levels[1].Stride = 8 }, "stride"},
		{"stride not dividing", func(m *Manifest) { m.Input.SizeDivisible = 16 }, "size_divisible"},
		{"no rpn level", func(m *Manifest) {
			for i := range m.FPN.Levels {
				m.FPN.Levels[i].RPN = false
			}
		}, "rpn"},
		{"roi gap", func(m *Manifest) { m.FPN.Levels[1].RoI = false; m.FPN.Levels[2].RoI = true }, "consecutive"},
		{"anchor size", func(m *Manifest) { m.FPN.Levels[0].AnchorSizes = nil }, "anchor_sizes"},
		{"temperature", func(m *Manifest) { m.Embedding.Temperature = 0 }, "temperature"},
		{"image temperature", func(m *Manifest) { m.Embedding.ImageTemperature = -0.03 }, "image_temperature"},
		{"crops without an image encoder", func(m *Manifest) {
			m.Embedding.Crops = &Crops{Regions: 100, Temperature: 0.03, LambdaNovel: 0.5}
		}, "embedding.crops needs an image_encoder"},
		{"crop regions", func(m *Manifest) {
			m.Embedding.Crops = &Crops{Regions: 0, Temperature: 0.03, LambdaNovel: 0.5}
		}, "embedding.crops.regions 0"},
		{"crop temperature", func(m *Manifest) {
			m.Embedding.Crops = &Crops{Regions: 100, Temperature: float32(math.NaN()), LambdaNovel: 0.5}
		}, "embedding.crops.temperature"},
		{"crop lambda", func(m *Manifest) {
			m.Embedding.Crops = &Crops{Regions: 100, Temperature: 0.03, LambdaNovel: 1.5}
		}, "lambda_novel 1.5"},
		{"crop scales empty", func(m *Manifest) {
			m.Embedding.Crops = &Crops{Regions: 100, Temperature: 0.03, LambdaNovel: 0.5, Scales: []float32{}}
		}, "embedding.crops.scales: 0 scales"},
		{"crop scale", func(m *Manifest) {
			m.Embedding.Crops = &Crops{Regions: 100, Temperature: 0.03, LambdaNovel: 0.5, Scales: []float32{1.25, 8}}
		}, "embedding.crops.scales: 8 not in [0.5, 4]"},
		{"template", func(m *Manifest) { m.Text.Templates = []string{"no slot"} }, "templates"},
		{"split", func(m *Manifest) { m.Categories[0].Split = "rare" }, "split"},
		{"duplicate category", func(m *Manifest) { m.Categories[1].Name = "cat" }, "duplicate"},
		{"checksum missing", func(m *Manifest) { delete(m.SHA256, TextEncoderFile) }, "text_encoder.onnx"},
		{"checksum path", func(m *Manifest) { m.SHA256["../etc/passwd"] = strings.Repeat("0", 64) }, "bad file name"},
		{"checksum hex", func(m *Manifest) { m.SHA256[BackboneFile] = "xyz" }, "hex"},
		{"image encoder file", func(m *Manifest) { m.ImageEncoder = validImageEncoder(); m.ImageEncoder.File = "x.onnx" }, "image_encoder.file"},
		{"image encoder checksum", func(m *Manifest) { m.ImageEncoder = validImageEncoder() }, "no checksum for image_encoder.onnx"},
		{"image encoder size", func(m *Manifest) {
			m.ImageEncoder = validImageEncoder()
			m.ImageEncoder.InputSize = 0
			m.SHA256[ImageEncoderFile] = strings.Repeat("0", 64)
		}, "input_size"},
		{"image encoder std", func(m *Manifest) { m.ImageEncoder = validImageEncoder(); m.ImageEncoder.Std[1] = 0 }, "image_encoder.std[1]"},
		{"image encoder scales", func(m *Manifest) { m.ImageEncoder = validImageEncoder(); m.ImageEncoder.CropScales = nil }, "crop_scales"},
		{"image encoder crop", func(m *Manifest) { m.ImageEncoder = validImageEncoder(); m.ImageEncoder.Crop = "box" }, "image_encoder.crop"},
		{"image encoder shift", func(m *Manifest) { m.ImageEncoder = validImageEncoder(); m.ImageEncoder.Shift = "shift.npy" }, "image_encoder.shift"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := validManifest()
			testFS(t, m, runtimeFiles(t))
			if err := m.Validate(); err != nil {
				t.Fatalf("valid manifest: %v", err)
			}
			tc.mutate(m)
			err := m.Validate()
			if !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v, want ErrManifest mentioning %q", err, tc.text)
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	m := validManifest()
	m.SHA256 = map[string]string{}
	for _, name := range RuntimeFiles {
		m.SHA256[name] = strings.Repeat("ab", 32)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{"format": "vild-bundle/1"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error %v does not wrap ErrManifest", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed manifest fails validation: %v", err)
		}
		for _, l := range m.RPNLevels() {
			if m.AnchorsPerLocation(l) < 1 {
				t.Fatalf("level %q without anchors", l.Name)
			}
		}
	})
}

func TestCropViews(t *testing.T) {
	enc := &ImageEncoder{CropScales: []float32{1, 1.5}}
	if got := (&Crops{}).Views(enc); len(got) != 2 || got[0] != 1 || got[1] != 1.5 {
		t.Errorf("no scales of its own: %v, want the image encoder's [1 1.5]", got)
	}
	if got := (&Crops{Scales: []float32{1.25}}).Views(enc); len(got) != 1 || got[0] != 1.25 {
		t.Errorf("its own scales: %v, want [1.25]", got)
	}
	if got := (&Crops{}).Views(nil); got != nil {
		t.Errorf("no image encoder: %v, want none", got)
	}
}
