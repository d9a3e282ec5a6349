package tokenizer

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// FuzzEncode: any input encodes without panicking; ids are in range;
// EncodeContext always returns contextLen ids with the start token first, the
// end token at eot, zeros after it unless truncated, and the same ids as
// Encode; pieces equal RE2's with CLIP's pattern; every piece's BPE equals
// CLIP's loop. Seeded from the golden inputs.
func FuzzEncode(f *testing.F) {
	for _, c := range readGoldens(f, "goldens.json").Cases {
		f.Add(c.input(f), uint8(77))
	}
	f.Add("a photo of a dog.", uint8(3))
	f.Add(strings.Repeat("&amp;", 40), uint8(8))
	tok := trained(f)
	f.Fuzz(func(t *testing.T, text string, ctx uint8) {
		ids := tok.Encode(text)
		for _, id := range ids {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("id %d out of range [0, %d)", id, tok.VocabSize())
			}
		}
		contextLen := max(int(ctx), 2)
		got, eot := tok.EncodeContext(text, contextLen)
		if len(got) != contextLen || got[0] != int64(tok.StartID()) {
			t.Fatalf("EncodeContext: len %d (want %d), first %d", len(got), contextLen, got[0])
		}
		if eot < 1 || eot >= contextLen || got[eot] != int64(tok.EndID()) {
			t.Fatalf("eot %d: id %d", eot, got[eot])
		}
		n := min(len(ids), contextLen-2)
		for i := 0; i < n; i++ {
			if got[1+i] != int64(ids[i]) {
				t.Fatalf("EncodeContext id %d = %d, Encode gives %d", 1+i, got[1+i], ids[i])
			}
		}
		if got[1+n] != int64(tok.EndID()) {
			t.Fatalf("no end token after the %d ids", n)
		}
		if firstEnd := slices.Index(got, int64(tok.EndID())); firstEnd != eot {
			t.Fatalf("eot %d, first end token at %d", eot, firstEnd)
		}
		for _, id := range got[2+n:] {
			if id != 0 {
				t.Fatalf("padding holds %d", id)
			}
		}
		if len(text) <= 1024 {
			cleaned := clean(text)
			if got, want := piecesOf(cleaned), clipRE2.FindAllString(cleaned, -1); !slices.Equal(got, want) {
				t.Fatalf("pieces of %q: scanner %q, RE2 %q", cleaned, got, want)
			}
			pretokenize(cleaned, func(piece string) bool {
				if piece == startToken || piece == endToken {
					return true
				}
				if a, b := tok.bpe(piece, nil), tok.bpeReference(piece); !slices.Equal(a, b) {
					t.Fatalf("bpe(%q) = %v, CLIP's loop %v", piece, a, b)
				}
				return true
			})
		}
	})
}

// FuzzLoad: malformed vocab.json / merges.txt give an error, never a panic.
func FuzzLoad(f *testing.F) {
	vocabJSON, mergesTxt, _ := clipShapedFiles(f)
	// a complete byte vocabulary with a few merged tokens, so fuzzed merges
	// files get past the vocabulary checks
	small := map[string]int{}
	for i, s := range byteSymbols() {
		small[s], small[s+endOfWord] = i, 256+i
	}
	for _, s := range []string{"th", "he</w>", "the</w>", "ab", startToken, endToken} {
		small[s] = len(small)
	}
	smallJSON, err := json.Marshal(small)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"a": 0}`), []byte("#version: 0.2\nt h\nh e</w>\nth e</w>\n"))
	f.Add(vocabJSON[:4096], mergesTxt[:512])
	f.Add([]byte("{}"), []byte("\n\n a\nab\n"))
	f.Fuzz(func(t *testing.T, vocab, merges []byte) {
		if tok, err := Load(bytes.NewReader(vocab), bytes.NewReader(merges)); err == nil {
			tok.EncodeContext("a photo of the dog.", 8)
		}
		if tok, err := Load(bytes.NewReader(smallJSON), bytes.NewReader(merges)); err == nil {
			ids, _ := tok.EncodeContext("the theme "+string(merges), 16)
			for _, id := range ids {
				if id < 0 || id >= int64(tok.VocabSize()) {
					t.Fatalf("id %d out of range", id)
				}
			}
		}
	})
}
