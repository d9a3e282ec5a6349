package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Character classes of CLIP's pre-tokenisation pattern
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// compiled case-insensitively (re.IGNORECASE), so a rune belongs to a class
// when any rune of its case-folding orbit does (U+0345 COMBINING GREEK
// YPOGEGRAMMENI folds with IOTA, and so counts as a letter).
const (
	classSpace  = iota // \s: no alternative matches, the rune is skipped
	classLetter        // [\p{L}]+
	classNumber        // [\p{N}], one rune per piece
	classOther         // [^\s\p{L}\p{N}]+
)

var asciiClass [utf8.RuneSelf]uint8

func init() {
	for r := rune(0); r < utf8.RuneSelf; r++ {
		asciiClass[r] = uint8(slowClass(r))
	}
}

func runeClass(r rune) int {
	if r < utf8.RuneSelf {
		return int(asciiClass[r])
	}
	return slowClass(r)
}

func slowClass(r rune) int {
	letter, number := false, false
	for f := r; ; {
		letter = letter || unicode.IsLetter(f)
		number = number || unicode.IsNumber(f)
		if f = unicode.SimpleFold(f); f == r {
			break
		}
	}
	switch {
	case letter:
		return classLetter
	case number:
		return classNumber
	case isSpace(r):
		return classSpace
	}
	return classOther
}

// foldEq reports whether r matches the lower-case ASCII letter or symbol c
// case-insensitively (so 'ſ' matches 's', as in Python's re).
func foldEq(r rune, c byte) bool {
	if r == rune(c) {
		return true
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f == rune(c) {
			return true
		}
	}
	return false
}

// matchFold returns the byte length of the prefix of s that matches lit
// (lower-case ASCII) case-insensitively, or 0.
func matchFold(s, lit string) int {
	i := 0
	for k := 0; k < len(lit); k++ {
		if i >= len(s) {
			return 0
		}
		r, n := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRuneInString(s[i:])
		}
		if !foldEq(r, lit[k]) {
			return 0
		}
		i += n
	}
	return i
}

var (
	specialLits     = [...]string{startToken, endToken}
	contractionLits = [...]string{"s", "t", "re", "ve", "m", "ll", "d"}
)

// pretokenize calls yield with each piece of cleaned text s, in order, as
// Python's re.findall with CLIP's pattern would return them; yield returns
// false to stop early.
func pretokenize(s string, yield func(piece string) bool) {
	for i := 0; i < len(s); {
		if s[i] == '<' {
			if n := matchSpecial(s[i:]); n > 0 {
				if !yield(s[i : i+n]) {
					return
				}
				i += n
				continue
			}
		}
		if s[i] == '\'' {
			if n := matchContraction(s[i+1:]); n > 0 {
				if !yield(s[i : i+1+n]) {
					return
				}
				i += 1 + n
				continue
			}
		}
		r, n := decodeRune(s[i:])
		switch c := runeClass(r); c {
		case classSpace:
			i += n
			continue
		case classNumber:
			if !yield(s[i : i+n]) {
				return
			}
			i += n
			continue
		default:
			j := i + n
			for j < len(s) {
				r2, n2 := decodeRune(s[j:])
				if runeClass(r2) != c {
					break
				}
				j += n2
			}
			if !yield(s[i:j]) {
				return
			}
			i = j
		}
	}
}

func decodeRune(s string) (rune, int) {
	if s[0] < utf8.RuneSelf {
		return rune(s[0]), 1
	}
	return utf8.DecodeRuneInString(s)
}

func matchSpecial(s string) int {
	for _, lit := range specialLits {
		if n := matchFold(s, lit); n > 0 {
			return n
		}
	}
	return 0
}

func matchContraction(s string) int {
	for _, lit := range contractionLits {
		if n := matchFold(s, lit); n > 0 {
			return n
		}
	}
	return 0
}
