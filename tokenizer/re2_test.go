package tokenizer

import (
	"regexp"
	"slices"
	"testing"
)

// clipRE2 is CLIP's pattern for Go's RE2, case-insensitive as CLIP compiles
// it; \s is spelled out as Python's whitespace (RE2's \s is ASCII only).
var clipRE2 = regexp.MustCompile(`(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|` +
	`[^\t\n\v\f\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}\p{L}\p{N}]+`)

func piecesOf(s string) []string {
	var out []string
	pretokenize(s, func(p string) bool { out = append(out, p); return true })
	return out
}

// TestPretokenizeMatchesRE2: the hand-written scanner splits text exactly as
// RE2 does with CLIP's pattern (FuzzEncode repeats this on fuzzed text).
func TestPretokenizeMatchesRE2(t *testing.T) {
	for _, c := range readGoldens(t, "goldens.json").Cases {
		s := clean(c.input(t))
		if got, want := piecesOf(s), clipRE2.FindAllString(s, -1); !slices.Equal(got, want) {
			t.Errorf("%s: scanner %q, RE2 %q", c.Name, got, want)
		}
	}
}
