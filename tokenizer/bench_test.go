package tokenizer

import (
	"bytes"
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

var benchPrompts = []string{
	"a photo of a hot pepper.", "there is a poodle in the scene.", "an emoji of a red umbrella.",
	"a close-up photo of the kettle.", "a cartoon mug.", "a rendering of a steaming bowl.",
}

// BenchmarkEncode: prompt-sized texts, warm piece cache (the textbank's case).
func BenchmarkEncode(b *testing.B) {
	tok := trained(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tok.EncodeContext(benchPrompts[i%len(benchPrompts)], DefaultContext)
	}
}

// BenchmarkEncodeUncached: every word new to the cache, so BPE runs each time.
func BenchmarkEncodeUncached(b *testing.B) {
	tok := trained(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tok.EncodeContext(fmt.Sprintf("a photo of a blorptastic%d zingerwhack%d.", i, i), DefaultContext)
	}
}

// BenchmarkEncodeCLIPShaped: the 49,408-token vocabulary.
func BenchmarkEncodeCLIPShaped(b *testing.B) {
	vocabJSON, mergesTxt, _ := clipShapedFiles(b)
	tok, err := Load(bytes.NewReader(vocabJSON), bytes.NewReader(mergesTxt))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tok.EncodeContext(benchPrompts[i%len(benchPrompts)], DefaultContext)
	}
}

// BenchmarkEncodeMaxInput: the worst case per call, MaxInputBytes of mixed text.
func BenchmarkEncodeMaxInput(b *testing.B) {
	tok := trained(b)
	text := strings.Repeat("café &amp; 東京 supercalifragilistic 1234 😀 ", MaxInputBytes/40)
	for _, mode := range []string{"Encode", "EncodeContext"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(int64(min(len(text), MaxInputBytes)))
			for b.Loop() {
				if mode == "Encode" {
					tok.Encode(text)
				} else {
					tok.EncodeContext(text, DefaultContext)
				}
			}
		})
	}
}

// BenchmarkBPE: the heap-based merge against CLIP's rescanning loop (the
// baseline, measured in the same run) on one long piece.
func BenchmarkBPE(b *testing.B) {
	tok := trained(b)
	for _, n := range []int{16, 256, 4096} {
		// letters in a fixed pseudo-random order: a long word that is no
		// repetition of a short one
		rng := rand.New(rand.NewSource(int64(n)))
		letters := make([]byte, n)
		for i := range letters {
			letters[i] = "etaoinshrdlucmfwypvbgkqjxz"[min(rng.Intn(26), rng.Intn(26))]
		}
		piece := string(letters)
		b.Run(fmt.Sprintf("heap/%dB", n), func(b *testing.B) {
			for b.Loop() {
				tok.bpe(piece, nil)
			}
		})
		b.Run(fmt.Sprintf("clip-loop/%dB", n), func(b *testing.B) {
			for b.Loop() {
				tok.bpeReference(piece)
			}
		})
	}
}

func BenchmarkLoad(b *testing.B) {
	vocabJSON, mergesTxt, _ := clipShapedFiles(b)
	b.Run("clip-shaped", func(b *testing.B) {
		for b.Loop() {
			if _, err := Load(bytes.NewReader(vocabJSON), bytes.NewReader(mergesTxt)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
