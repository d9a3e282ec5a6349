// Package tokenizer implements CLIP's text tokenizer (byte-level BPE with
// end-of-word markers), parameterised by a vocabulary, so the same code serves
// the project's own small vocabulary and a real CLIP ViT-B/32 one (49,408
// tokens, context 77).
//
// It is equal, id for id, to the Python reference
// training/vildtrain/text/clip_tokenizer.py (itself a mirror of OpenAI's
// simple_tokenizer.py with Unicode NFC in place of ftfy); golden files under
// testdata/ pin that, and docs/tokenizer.md describes the algorithm, the file
// formats and the deviations from CLIP.
//
// A Tokenizer is safe for concurrent use. Input is untrusted: any bytes are
// accepted (invalid UTF-8 becomes U+FFFD), and at most MaxInputBytes of a text
// are read, which bounds the work per call.
package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

const (
	// MaxInputBytes is how much of a text is tokenised: longer input is cut at
	// the last UTF-8 boundary at or before this many bytes, before cleaning.
	// It is far above any caption or category name (CLIP's context holds 75
	// tokens, a few hundred bytes of text) and bounds the work per call to
	// about 2 ms of one core (BenchmarkEncodeMaxInput).
	MaxInputBytes = 16 << 10
	// DefaultContext is CLIP's context length.
	DefaultContext = 77
	// MaxFileBytes caps vocab.json and merges.txt (decompressed); CLIP's are
	// about 1.6 MB and 0.5 MB.
	MaxFileBytes = 64 << 20

	startToken = "<|startoftext|>"
	endToken   = "<|endoftext|>"
	endOfWord  = "</w>"
	// clipGzipMerges is how many merges CLIP reads from its .gz (49152-256-2).
	clipGzipMerges = 48894
	// ClipGzipName is the file name of CLIP's own merges file.
	ClipGzipName = "bpe_simple_vocab_16e6.txt.gz"
)

// Tokenizer encodes text into token ids of one vocabulary.
type Tokenizer struct {
	vocabSize int
	sot, eot  int32
	byteID    [256]int32 // byte symbol
	byteEOW   [256]int32 // byte symbol + "</w>"
	merges    map[uint64]merge
	mergeA    []int32 // by rank
	mergeB    []int32
	mergeOut  []int32
	cache     pieceCache
}

// Load reads a CLIP-style vocabulary: vocab.json (token -> id, ids exactly
// 0..N-1) and merges.txt (an optional "#version" first line, then one merge
// "a b" per line, rank = order). Every byte token with and without "</w>",
// <|startoftext|>, <|endoftext|>, both sides of every merge and its result
// must be in the vocabulary; errors name the offending line.
func Load(vocab, merges io.Reader) (*Tokenizer, error) {
	v, err := readVocab(vocab)
	if err != nil {
		return nil, err
	}
	pairs, err := readMerges(merges, -1, false)
	if err != nil {
		return nil, err
	}
	return build(v, pairs)
}

// LoadCLIPGzip reads CLIP's own bpe_simple_vocab_16e6.txt.gz the way CLIP
// does: the first line is a header, the next 48,894 lines are merges, and the
// vocabulary is laid out from them (byte tokens, byte tokens + "</w>", merged
// tokens, <|startoftext|>, <|endoftext|>: 49,408 tokens).
func LoadCLIPGzip(r io.Reader) (*Tokenizer, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", ClipGzipName, err)
	}
	defer zr.Close()
	pairs, err := readMerges(zr, clipGzipMerges, true)
	if err != nil {
		return nil, err
	}
	v, err := layoutVocab(pairs)
	if err != nil {
		return nil, err
	}
	return build(v, pairs)
}

// LoadDir reads dir/vocab.json and dir/merges.txt, or, when there is no
// vocab.json, CLIP's dir/bpe_simple_vocab_16e6.txt.gz.
func LoadDir(dir string) (*Tokenizer, error) {
	return LoadFS(os.DirFS(filepath.Clean(dir)), ".")
}

// LoadFS is LoadDir on a file system (for go:embed bundles); dir is a
// slash-separated path in fsys.
func LoadFS(fsys fs.FS, dir string) (*Tokenizer, error) {
	vf, err := fsys.Open(path.Join(dir, "vocab.json"))
	if errors.Is(err, fs.ErrNotExist) {
		gz, gerr := fsys.Open(path.Join(dir, ClipGzipName))
		if gerr != nil {
			return nil, fmt.Errorf("tokenizer: load %s: no vocab.json and no %s", dir, ClipGzipName)
		}
		defer gz.Close()
		return LoadCLIPGzip(gz)
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizer: load %s: %w", dir, err)
	}
	defer vf.Close()
	mf, err := fsys.Open(path.Join(dir, "merges.txt"))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: load %s: %w", dir, err)
	}
	defer mf.Close()
	return Load(vf, mf)
}

func readAllCapped(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: read %s: %w", name, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("tokenizer: %s is larger than %d bytes", name, MaxFileBytes)
	}
	return data, nil
}

func readVocab(r io.Reader) (map[string]int32, error) {
	data, err := readAllCapped(r, "vocab.json")
	if err != nil {
		return nil, err
	}
	var raw map[string]int64
	if err := json.Unmarshal(data, &raw); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, fmt.Errorf("tokenizer: vocab.json line %d: %w", lineAt(data, se.Offset), err)
		case errors.As(err, &te):
			return nil, fmt.Errorf("tokenizer: vocab.json line %d: %w", lineAt(data, te.Offset), err)
		}
		return nil, fmt.Errorf("tokenizer: vocab.json: %w", err)
	}
	if raw == nil {
		return nil, errors.New("tokenizer: vocab.json: not an object")
	}
	n := int64(len(raw))
	byID := make([]string, n)
	seen := make([]bool, n)
	v := make(map[string]int32, n)
	for tok, id := range raw {
		if id < 0 || id >= n {
			return nil, fmt.Errorf("tokenizer: vocab.json: token %q has id %d; ids must be 0..%d", tok, id, n-1)
		}
		if seen[id] {
			a, b := byID[id], tok
			if a > b {
				a, b = b, a
			}
			return nil, fmt.Errorf("tokenizer: vocab.json: id %d is used by both %q and %q", id, a, b)
		}
		seen[id], byID[id] = true, tok
		v[tok] = int32(id)
	}
	return v, nil
}

// lineAt is the 1-based line of byte offset off in data.
func lineAt(data []byte, off int64) int {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

type mergeLine struct {
	a, b string
	line int
}

// readMerges reads "a b" lines; limit >= 0 stops after that many merges;
// skipFirst drops the first line whatever it holds (CLIP's .gz header).
func readMerges(r io.Reader, limit int, skipFirst bool) ([]mergeLine, error) {
	sc := bufio.NewScanner(io.LimitReader(r, MaxFileBytes+1))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var out []mergeLine
	total := 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		total += len(text) + 1
		if total > MaxFileBytes+1 {
			return nil, fmt.Errorf("tokenizer: merges.txt is larger than %d bytes", MaxFileBytes)
		}
		text = strings.TrimSuffix(text, "\r")
		if line == 1 && (skipFirst || strings.HasPrefix(text, "#version")) {
			continue
		}
		if text == "" {
			continue
		}
		a, b, ok := strings.Cut(text, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, fmt.Errorf("tokenizer: merges.txt line %d: want two tokens separated by one space, got %q", line, truncate(text, 80))
		}
		out = append(out, mergeLine{a, b, line})
		if limit >= 0 && len(out) == limit {
			return out, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokenizer: read merges.txt: %w", err)
	}
	if limit >= 0 {
		return nil, fmt.Errorf("tokenizer: %s holds %d merges, want %d", ClipGzipName, len(out), limit)
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// byteSymbols are CLIP's 256 byte tokens in vocabulary order.
func byteSymbols() []string {
	table := bytesToUnicode()
	order := byteOrder()
	out := make([]string, 256)
	for i, b := range order {
		out[i] = string(table[b])
	}
	return out
}

// layoutVocab builds CLIP's vocabulary from merges: byte tokens, the same +
// "</w>", merged tokens in merge order, <|startoftext|>, <|endoftext|>.
func layoutVocab(pairs []mergeLine) (map[string]int32, error) {
	syms := byteSymbols()
	v := make(map[string]int32, 512+len(pairs)+2)
	add := func(tok string, line int) error {
		if _, dup := v[tok]; dup {
			return fmt.Errorf("tokenizer: merges line %d: token %q is already in the vocabulary", line, tok)
		}
		v[tok] = int32(len(v))
		return nil
	}
	for _, s := range syms {
		_ = add(s, 0)
	}
	for _, s := range syms {
		_ = add(s+endOfWord, 0)
	}
	for _, m := range pairs {
		if err := add(m.a+m.b, m.line); err != nil {
			return nil, err
		}
	}
	_ = add(startToken, 0)
	_ = add(endToken, 0)
	return v, nil
}

func build(v map[string]int32, pairs []mergeLine) (*Tokenizer, error) {
	t := &Tokenizer{vocabSize: len(v), merges: make(map[uint64]merge, len(pairs))}
	var ok bool
	if t.sot, ok = v[startToken]; !ok {
		return nil, fmt.Errorf("tokenizer: vocab.json lacks %s", startToken)
	}
	if t.eot, ok = v[endToken]; !ok {
		return nil, fmt.Errorf("tokenizer: vocab.json lacks %s", endToken)
	}
	table := bytesToUnicode()
	for b := 0; b < 256; b++ {
		sym := string(table[b])
		if t.byteID[b], ok = v[sym]; !ok {
			return nil, fmt.Errorf("tokenizer: vocab.json lacks byte token %q (byte 0x%02x)", sym, b)
		}
		if t.byteEOW[b], ok = v[sym+endOfWord]; !ok {
			return nil, fmt.Errorf("tokenizer: vocab.json lacks byte token %q (byte 0x%02x)", sym+endOfWord, b)
		}
	}
	t.mergeA = make([]int32, len(pairs))
	t.mergeB = make([]int32, len(pairs))
	t.mergeOut = make([]int32, len(pairs))
	for rank, m := range pairs {
		a, okA := v[m.a]
		b, okB := v[m.b]
		out, okO := v[m.a+m.b]
		switch {
		case !okA:
			return nil, fmt.Errorf("tokenizer: merges.txt line %d: %q is not in the vocabulary", m.line, m.a)
		case !okB:
			return nil, fmt.Errorf("tokenizer: merges.txt line %d: %q is not in the vocabulary", m.line, m.b)
		case !okO:
			return nil, fmt.Errorf("tokenizer: merges.txt line %d: merged token %q is not in the vocabulary", m.line, m.a+m.b)
		}
		key := pairKey(a, b)
		if _, dup := t.merges[key]; dup {
			return nil, fmt.Errorf("tokenizer: merges.txt line %d: merge %q %q appears twice", m.line, m.a, m.b)
		}
		t.merges[key] = merge{rank: int32(rank), out: out}
		t.mergeA[rank], t.mergeB[rank], t.mergeOut[rank] = a, b, out
	}
	return t, nil
}

// VocabSize is the number of tokens (the text encoder's embedding rows).
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// StartID is the id of <|startoftext|>.
func (t *Tokenizer) StartID() int32 { return t.sot }

// EndID is the id of <|endoftext|>. In CLIP's layout it is the largest id, so
// a text encoder may find it by argmax.
func (t *Tokenizer) EndID() int32 { return t.eot }

// Encode returns the token ids of text, without start and end tokens.
func (t *Tokenizer) Encode(text string) []int32 {
	return t.encode(text, -1)
}

// EncodeContext returns <|startoftext|>, the ids of text and <|endoftext|>,
// padded with 0 to contextLen; when that is too long it is cut to contextLen
// and the last id set to <|endoftext|> (CLIP's truncate=True). eot is the
// position of the first <|endoftext|>, where CLIP's text encoder pools (text
// that spells "<|endoftext|>" encodes to that id, as in CLIP). contextLen
// below 2 is treated as 2.
func (t *Tokenizer) EncodeContext(text string, contextLen int) (ids []int64, eot int) {
	if contextLen < 2 {
		contextLen = 2
	}
	body := t.encode(text, contextLen-1) // one more than fits tells truncation apart
	ids = make([]int64, contextLen)
	ids[0] = int64(t.sot)
	n := min(len(body), contextLen-2)
	for i := 0; i < n; i++ {
		ids[1+i] = int64(body[i])
	}
	ids[1+n] = int64(t.eot)
	for i := 1; i <= n; i++ {
		if ids[i] == int64(t.eot) {
			return ids, i
		}
	}
	return ids, 1 + n
}

// encode tokenises text, stopping once limit ids are out (limit < 0: all).
func (t *Tokenizer) encode(text string, limit int) []int32 {
	if len(text) > MaxInputBytes {
		cut := MaxInputBytes
		for cut > MaxInputBytes-utf8.UTFMax && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	s := clean(text)
	var out []int32
	pretokenize(s, func(piece string) bool {
		out = t.appendPiece(out, piece)
		return limit < 0 || len(out) < limit
	})
	if limit >= 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func (t *Tokenizer) appendPiece(dst []int32, piece string) []int32 {
	switch piece {
	case startToken:
		return append(dst, t.sot)
	case endToken:
		return append(dst, t.eot)
	}
	if len(piece) <= cachePieceBytes {
		if ids, ok := t.cache.get(piece); ok {
			return append(dst, ids...)
		}
		start := len(dst)
		dst = t.bpe(piece, dst)
		t.cache.put(piece, append([]int32(nil), dst[start:]...))
		return dst
	}
	return t.bpe(piece, dst)
}
