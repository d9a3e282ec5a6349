package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/internal/testbundle"
	"github.com/vild/vild/ort"
)

// BenchmarkCropViews times the vocabulary-independent part of a detection
// (Pipeline.Regions, as BenchmarkDefaultBundle's "regions") on the default
// bundle with other views of each region for the teacher's crops
// (embedding.crops.scales and mirror, docs/bundle.md), each on a copy of
// its manifest in memory, against the bundle's own views and against no
// crops, in the same run (docs/decisions/0031, "Later: other views of a
// region"):
//
//	go test -run '^$' -bench BenchmarkCropViews -benchtime 10x -count 5 ./pipeline
func BenchmarkCropViews(b *testing.B) {
	bun, err := bundle.Open(filepath.Join(testbundle.Root(b), "models", "default"))
	if err != nil {
		b.Skipf("no default bundle: %v", err)
	}
	if bun.Manifest.Embedding.Crops == nil {
		b.Skip("the default bundle has no embedding.crops")
	}
	img := defaultScene(b, bun)
	ctx := context.Background()
	views := []struct {
		name   string
		scales []float32
		mirror bool
		off    bool
	}{
		{name: "bundle"}, // its own views: 1.25x and mirrored since decision 0033
		{name: "1x+1.5x", scales: []float32{1, 1.5}}, // the image encoder's, the bundle's before
		{name: "1.25x", scales: []float32{1.25}},
		{name: "no-crops", off: true},
	}
	for _, threads := range []int{1, runtime.GOMAXPROCS(0)} {
		for _, v := range views {
			m := *bun.Manifest
			c := *m.Embedding.Crops
			if v.scales != nil {
				c.Scales, c.Mirror = v.scales, v.mirror
			}
			m.Embedding.Crops = &c
			variant := *bun
			variant.Manifest = &m
			p, err := Open(&variant, testbundle.Runtime(b, ort.Config{IntraOpThreads: threads}), Config{Workers: 1, NoCrops: v.off})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("intra-op=%d/views=%s", threads, v.name), benchRegions(ctx, p, img))
			p.Close()
		}
	}
}
