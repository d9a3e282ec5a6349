package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

//go:generate /usr/bin/python3 gen_tables.py
//go:generate sh testdata/generate.sh

// trainedDir holds the project's committed vocabulary (python3 -m vildtrain bpe).
var trainedDir = filepath.Join("..", "training", "data", "tokenizer")

type goldenCase struct {
	Name     string  `json:"name"`
	Text     *string `json:"text"`
	BytesB64 string  `json:"bytes_b64"`
	IDs      []int32 `json:"ids"`
	Context  []int64 `json:"context"`
	EOT      int     `json:"eot"`
}

type goldenFile struct {
	ContextLength int          `json:"context_length"`
	VocabSize     int          `json:"vocab_size"`
	Cases         []goldenCase `json:"cases"`
}

func (c goldenCase) input(t testing.TB) string {
	if c.Text != nil {
		return *c.Text
	}
	raw, err := base64.StdEncoding.DecodeString(c.BytesB64)
	if err != nil {
		t.Fatalf("%s: %v", c.Name, err)
	}
	return string(raw)
}

func readGoldens(t testing.TB, name string) goldenFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(g.Cases) < 30 {
		t.Fatalf("%s: only %d cases", name, len(g.Cases))
	}
	return g
}

var (
	trainedOnce sync.Once
	trainedTok  *Tokenizer
	trainedErr  error
)

func trained(t testing.TB) *Tokenizer {
	t.Helper()
	trainedOnce.Do(func() { trainedTok, trainedErr = LoadDir(trainedDir) })
	if trainedErr != nil {
		t.Fatal(trainedErr)
	}
	return trainedTok
}

func checkGoldens(t *testing.T, tok *Tokenizer, g goldenFile) {
	t.Helper()
	if tok.VocabSize() != g.VocabSize {
		t.Fatalf("VocabSize() = %d, goldens say %d", tok.VocabSize(), g.VocabSize)
	}
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			text := c.input(t)
			if got := tok.Encode(text); !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
				t.Errorf("Encode(%q)\n got %v\nwant %v", text, got, c.IDs)
			}
			ids, eot := tok.EncodeContext(text, g.ContextLength)
			if !slices.Equal(ids, c.Context) || eot != c.EOT {
				t.Errorf("EncodeContext(%q)\n got %v eot %d\nwant %v eot %d", text, ids, eot, c.Context, c.EOT)
			}
		})
	}
}

// TestGoldens: the Go tokenizer equals the Python reference on tricky inputs
// under the project's trained vocabulary.
func TestGoldens(t *testing.T) {
	checkGoldens(t, trained(t), readGoldens(t, "goldens.json"))
}

// syntheticCLIPMerges builds the same 48,894 merges as the Python
// clip_tokenizer.synthetic_clip_merges: merge k joins byte symbol k/512 with
// the (k%512)-th of (byte symbols, byte symbols + "</w>").
func syntheticCLIPMerges() []mergeLine {
	syms := byteSymbols()
	ends := append(slices.Clone(syms), make([]string, 256)...)
	for i, s := range syms {
		ends[256+i] = s + endOfWord
	}
	out := make([]mergeLine, clipGzipMerges)
	for k := range out {
		out[k] = mergeLine{a: syms[k/len(ends)], b: ends[k%len(ends)], line: k + 2}
	}
	return out
}

func clipShapedFiles(t testing.TB) (vocabJSON, mergesTxt, gz []byte) {
	t.Helper()
	merges := syntheticCLIPMerges()
	vocab, err := layoutVocab(merges)
	if err != nil {
		t.Fatal(err)
	}
	if vocabJSON, err = json.Marshal(vocab); err != nil {
		t.Fatal(err)
	}
	var m bytes.Buffer
	m.WriteString("#version: 0.2\n")
	for _, p := range merges {
		fmt.Fprintf(&m, "%s %s\n", p.a, p.b)
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	// CLIP's .gz: a header line, the merges, then more lines that CLIP ignores
	fmt.Fprintf(zw, "\"bpe_simple_vocab_16e6.txt#version: 0.2\n%sx y\nx y\n", m.Bytes()[len("#version: 0.2\n"):])
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return vocabJSON, m.Bytes(), z.Bytes()
}

// TestCLIPShapedVocabulary: a vocabulary with real CLIP's shape (49,408
// tokens: 256 + 256 byte tokens, 48,894 merges, start and end) loads from
// vocab.json + merges.txt and from CLIP's own .gz, lays out as CLIP's, and
// encodes as the Python reference does.
func TestCLIPShapedVocabulary(t *testing.T) {
	vocabJSON, mergesTxt, gz := clipShapedFiles(t)
	fromHF, err := Load(bytes.NewReader(vocabJSON), bytes.NewReader(mergesTxt))
	if err != nil {
		t.Fatal(err)
	}
	fromGz, err := LoadFS(fstest.MapFS{"clip/" + ClipGzipName: {Data: gz}}, "clip")
	if err != nil {
		t.Fatal(err)
	}
	g := readGoldens(t, "goldens_clip_shape.json")
	for name, tok := range map[string]*Tokenizer{"vocab.json+merges.txt": fromHF, ClipGzipName: fromGz} {
		t.Run(name, func(t *testing.T) {
			if tok.VocabSize() != 49408 || tok.StartID() != 49406 || tok.EndID() != 49407 {
				t.Fatalf("VocabSize %d StartID %d EndID %d, want 49408 49406 49407", tok.VocabSize(), tok.StartID(), tok.EndID())
			}
			// layout: byte tokens in CLIP's order, then with </w>
			for i, b := range byteOrder() {
				if tok.byteID[b] != int32(i) || tok.byteEOW[b] != int32(256+i) {
					t.Fatalf("byte 0x%02x: ids %d %d, want %d %d", b, tok.byteID[b], tok.byteEOW[b], i, 256+i)
				}
			}
			ids, eot := tok.EncodeContext(strings.Repeat("a photo of a dog. ", 40), DefaultContext)
			if len(ids) != 77 || ids[0] != 49406 || ids[76] != 49407 || eot != 76 {
				t.Fatalf("EncodeContext: len %d first %d last %d eot %d", len(ids), ids[0], ids[76], eot)
			}
			checkGoldens(t, tok, g)
		})
	}
}

func TestTrainedLayout(t *testing.T) {
	tok := trained(t)
	if tok.EndID() != int32(tok.VocabSize()-1) || tok.StartID() != int32(tok.VocabSize()-2) {
		t.Fatalf("start %d end %d of %d: the end token must be the largest id", tok.StartID(), tok.EndID(), tok.VocabSize())
	}
	for i, b := range byteOrder() {
		if tok.byteID[b] != int32(i) || tok.byteEOW[b] != int32(256+i) {
			t.Fatalf("byte 0x%02x: ids %d %d, want %d %d", b, tok.byteID[b], tok.byteEOW[b], i, 256+i)
		}
	}
	for rank, out := range tok.mergeOut {
		if out != int32(512+rank) {
			t.Fatalf("merge %d gives id %d, want %d", rank, out, 512+rank)
		}
	}
}

func TestBytesToUnicode(t *testing.T) {
	table := bytesToUnicode()
	seen := map[rune]bool{}
	for b, r := range table {
		if seen[r] {
			t.Fatalf("rune %U used twice", r)
		}
		seen[r] = true
		if isSpace(r) || r < '!' {
			t.Fatalf("byte 0x%02x maps to unprintable %U", b, r)
		}
	}
	if table[' '] != 'Ġ' || table['a'] != 'a' || table[0] != 'Ā' {
		t.Fatalf("table[' ']=%c table['a']=%c table[0]=%c", table[' '], table['a'], table[0])
	}
}

func TestEncodeContext(t *testing.T) {
	tok := trained(t)
	dog := tok.Encode("dog")
	if len(dog) != 1 {
		t.Fatalf("Encode(dog) = %v, want one token", dog)
	}
	sot, eot := int64(tok.StartID()), int64(tok.EndID())
	d := int64(dog[0])
	for _, tc := range []struct {
		name    string
		text    string
		ctx     int
		want    []int64
		wantEOT int
	}{
		{"empty", "", 4, []int64{sot, eot, 0, 0}, 1},
		{"fits", "dog dog", 5, []int64{sot, d, d, eot, 0}, 3},
		{"exact", "dog dog dog", 5, []int64{sot, d, d, d, eot}, 4},
		{"truncated", "dog dog dog dog dog", 5, []int64{sot, d, d, d, eot}, 4},
		{"minimum", "dog", 2, []int64{sot, eot}, 1},
		{"below minimum", "dog", 0, []int64{sot, eot}, 1},
		{"spelled end token", "dog <|endoftext|> dog", 6, []int64{sot, d, eot, d, eot, 0}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, gotEOT := tok.EncodeContext(tc.text, tc.ctx)
			if !slices.Equal(got, tc.want) || gotEOT != tc.wantEOT {
				t.Fatalf("EncodeContext(%q, %d) = %v, %d; want %v, %d", tc.text, tc.ctx, got, gotEOT, tc.want, tc.wantEOT)
			}
		})
	}
}

// TestMaxInputBytes: input beyond the cap is not read, and the cut never
// splits a UTF-8 sequence.
func TestMaxInputBytes(t *testing.T) {
	tok := trained(t)
	unit := "dog "
	exact := strings.Repeat(unit, MaxInputBytes/len(unit))
	long := exact + "cat cat cat"
	if got, want := tok.Encode(long), tok.Encode(exact); !slices.Equal(got, want) {
		t.Fatalf("input past MaxInputBytes changed the ids: %d vs %d tokens", len(got), len(want))
	}
	// a 4-byte rune straddling the cap is dropped whole, not turned into U+FFFD
	pad := strings.Repeat("a", MaxInputBytes-2)
	got := tok.Encode(pad + "😀")
	want := tok.Encode(pad)
	if !slices.Equal(got, want) {
		t.Fatalf("straddling rune: got %d ids, want %d", len(got), len(want))
	}
}

func TestLoadErrors(t *testing.T) {
	vocab := func(extra map[string]int64, drop ...string) string {
		m := map[string]int64{}
		for i, s := range byteSymbols() {
			m[s] = int64(i)
			m[s+endOfWord] = int64(256 + i)
		}
		m[startToken], m[endToken] = 512, 513
		for _, d := range drop {
			delete(m, d)
		}
		for k, v := range extra {
			m[k] = v
		}
		data, _ := json.Marshal(m)
		return string(data)
	}
	good := vocab(nil)
	withAB := vocab(map[string]int64{"ab": 514})
	for _, tc := range []struct {
		name, vocab, merges, want string
	}{
		{"syntax", "{\n\"a\": 0,\n\"b\": }", "", "vocab.json line 3"},
		{"type", "{\n\"a\": \"x\"}", "", "vocab.json line 2"},
		{"not an object", "null", "", "not an object"},
		{"id out of range", vocab(map[string]int64{"zz": 9999}), "", "ids must be 0..514"},
		{"id used twice", vocab(map[string]int64{"zz": 5}), "", "is used by both"},
		{"no start token", vocab(map[string]int64{"qq": 512}, startToken), "", "lacks <|startoftext|>"},
		{"no byte token", vocab(map[string]int64{"qq": 0}, "!"), "", `lacks byte token "!"`},
		{"one field", good, "#version: 0.2\na b\nabc\n", "merges.txt line 3"},
		{"three fields", good, "a b c\n", "merges.txt line 1"},
		{"double space", good, "#version: 0.2\na  b\n", "merges.txt line 2"},
		{"unknown part", good, "#version: 0.2\nab c\n", `line 2: "ab" is not in the vocabulary`},
		{"unknown result", good, "#version: 0.2\na b\n", `line 2: merged token "ab"`},
		{"duplicate", withAB, "#version: 0.2\na b\na b\n", "line 3: merge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(strings.NewReader(tc.vocab), strings.NewReader(tc.merges))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load error = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := Load(strings.NewReader(withAB), strings.NewReader("#version: 0.2\na b\n\n")); err != nil {
		t.Fatalf("valid files: %v", err)
	}
	if _, err := LoadDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no vocab.json") {
		t.Fatalf("LoadDir(empty) error = %v", err)
	}
	if _, err := LoadCLIPGzip(strings.NewReader("not gzip")); err == nil {
		t.Fatal("LoadCLIPGzip(not gzip) succeeded")
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("header\na b\n"))
	zw.Close()
	if _, err := LoadCLIPGzip(&z); err == nil || !strings.Contains(err.Error(), "holds 1 merges, want 48894") {
		t.Fatalf("short .gz error = %v", err)
	}
}

// bpeReference is CLIP's bpe() loop transcribed literally (on ids): the
// oracle for the heap-based bpe.
func (t *Tokenizer) bpeReference(piece string) []int32 {
	word := make([]int32, len(piece))
	for i := 0; i < len(piece); i++ {
		word[i] = t.byteID[piece[i]]
	}
	word[len(word)-1] = t.byteEOW[piece[len(piece)-1]]
	for len(word) > 1 {
		best := int32(-1)
		for i := 0; i+1 < len(word); i++ {
			if m, ok := t.merges[pairKey(word[i], word[i+1])]; ok && (best < 0 || m.rank < best) {
				best = m.rank
			}
		}
		if best < 0 {
			break
		}
		first, second := t.mergeA[best], t.mergeB[best]
		var next []int32
		for i := 0; i < len(word); {
			if i+1 < len(word) && word[i] == first && word[i+1] == second {
				next = append(next, t.mergeOut[best])
				i += 2
			} else {
				next = append(next, word[i])
				i++
			}
		}
		word = next
	}
	return word
}

func TestBPEMatchesCLIPLoop(t *testing.T) {
	tok := trained(t)
	rng := rand.New(rand.NewSource(1))
	alphabet := []string{"a", "e", "o", "s", "t", "n", "r", "l", "é", "😀", "ing", "the", "pe"}
	for i := 0; i < 3000; i++ {
		var b strings.Builder
		for n := 1 + rng.Intn(40); n > 0; n-- {
			b.WriteString(alphabet[rng.Intn(len(alphabet))])
		}
		piece := b.String()
		if got, want := tok.bpe(piece, nil), tok.bpeReference(piece); !slices.Equal(got, want) {
			t.Fatalf("bpe(%q) = %v, CLIP's loop gives %v", piece, got, want)
		}
	}
}

// TestBPEDefersPairsCreatedWithinARank: with merges out of order ("ab a"
// ranked before "a b"), CLIP merges every "a b" of the word before it looks
// at "ab a": "ababc" becomes ab ab c</w>, not aba b c</w>.
func TestBPEDefersPairsCreatedWithinARank(t *testing.T) {
	vocab := map[string]int32{}
	for i, s := range byteSymbols() {
		vocab[s], vocab[s+endOfWord] = int32(i), int32(256+i)
	}
	for _, s := range []string{"aba", "ab", startToken, endToken} {
		vocab[s] = int32(len(vocab))
	}
	tok, err := build(vocab, []mergeLine{{"ab", "a", 1}, {"a", "b", 2}})
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{vocab["ab"], vocab["ab"], vocab["c</w>"]}
	if ref := tok.bpeReference("ababc"); !slices.Equal(ref, want) {
		t.Fatalf("CLIP's loop gives %v, want %v", ref, want)
	}
	if got := tok.bpe("ababc", nil); !slices.Equal(got, want) {
		t.Fatalf("bpe(ababc) = %v, want %v", got, want)
	}
}

func TestConcurrentEncode(t *testing.T) {
	tok := trained(t)
	texts := []string{"a photo of a dog.", "there is a hot pepper in the scene.", "東京 café 😀", "supercalifragilistic"}
	want := make([][]int32, len(texts))
	for i, s := range texts {
		want[i] = tok.Encode(s)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				k := (g + i) % len(texts)
				// distinct pieces too, so the cache turns over
				if got := tok.Encode(texts[k]); !slices.Equal(got, want[k]) {
					errs <- fmt.Sprintf("Encode(%q) = %v, want %v", texts[k], got, want[k])
					return
				}
				tok.Encode(fmt.Sprintf("word%dx%d", g, i))
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func TestCacheIsBounded(t *testing.T) {
	var c pieceCache
	for i := 0; i < 5*cacheEntries; i++ {
		c.put(fmt.Sprint(i), []int32{int32(i)})
	}
	if n := len(c.cur) + len(c.old); n > 2*cacheEntries {
		t.Fatalf("cache holds %d pieces, bound is %d", n, 2*cacheEntries)
	}
	if ids, ok := c.get(fmt.Sprint(5*cacheEntries - 1)); !ok || ids[0] != int32(5*cacheEntries-1) {
		t.Fatalf("latest piece missing from cache")
	}
}
