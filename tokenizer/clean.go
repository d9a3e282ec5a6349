package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// clean is CLIP's basic_clean + whitespace_clean + lower(), as the Python
// reference runs them: invalid UTF-8 -> U+FFFD, NFC (in place of ftfy),
// html.unescape twice, strip, whitespace runs -> " ", strip, str.lower().
func clean(s string) string {
	s = validUTF8(s)
	if !isASCII(s) {
		s = norm.NFC.String(s)
	}
	s = unescapeHTML(unescapeHTML(s))
	s = collapseSpace(s)
	return lowerPython(s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// validUTF8 replaces each maximal subpart of an ill-formed UTF-8 sequence with
// U+FFFD, as Python's bytes.decode("utf-8", "replace") does (Go's own decoder
// would replace byte by byte).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError || n > 1 {
			b.WriteString(s[i : i+n])
			i += n
			continue
		}
		b.WriteRune(utf8.RuneError)
		i += maximalSubpart(s[i:])
	}
	return b.String()
}

// maximalSubpart is the length (>= 1) of the longest prefix of s that starts a
// well-formed UTF-8 sequence; s is known not to start with a complete one.
func maximalSubpart(s string) int {
	c := s[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(s); k++ {
		b := s[n]
		if k == 0 && (b < lo || b > hi) || k > 0 && (b < 0x80 || b > 0xBF) {
			break
		}
		n++
	}
	return n
}

// isSpace is Python's str.isspace (and so re's \s and str.strip()): Unicode
// White_Space plus the information separators U+001C..U+001F.
func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		switch r {
		case ' ', '\t', '\n', '\v', '\f', '\r', 0x1c, 0x1d, 0x1e, 0x1f:
			return true
		}
		return false
	}
	return unicode.IsSpace(r)
}

// collapseSpace strips s and turns each run of whitespace into one space.
func collapseSpace(s string) string {
	if tidySpace(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	pending := false
	for _, r := range s {
		if isSpace(r) {
			pending = b.Len() > 0
			continue
		}
		if pending {
			b.WriteByte(' ')
			pending = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// tidySpace reports whether collapseSpace would leave ASCII s as it is.
func tidySpace(s string) bool {
	prevSpace := true // no leading space
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return false
		}
		sp := isSpace(rune(c))
		if sp && (c != ' ' || prevSpace) {
			return false
		}
		prevSpace = sp
	}
	return !prevSpace || len(s) == 0
}

// lowerPython is Python's str.lower(): full lower-case mapping (U+0130 becomes
// "i\u0307") and the Final_Sigma rule for U+03A3.
func lowerPython(s string) string {
	if isASCII(s) {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i, r := range rs {
		switch r {
		case 0x130:
			b.WriteString("i\u0307")
		case 0x3A3:
			if finalSigma(rs, i) {
				b.WriteRune(0x3C2)
			} else {
				b.WriteRune(0x3C3)
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma: cased case-ignorable* Σ !(case-ignorable* cased), as CPython's
// handle_capital_sigma.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && caseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && caseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !cased(rs[j])
}

// cased is the Unicode Cased property (Lu, Ll, Lt, Other_Lowercase, Other_Uppercase).
func cased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

// caseIgnorable is the Unicode Case_Ignorable property: Mn, Me, Cf, Lm, Sk and
// Word_Break MidLetter, MidNumLet, Single_Quote.
func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// unescapeHTML is Python's html.unescape: the HTML5 rules for named and numeric
// character references, including references without ';' and the longest
// known prefix of an unknown name.
func unescapeHTML(s string) string {
	amp := strings.IndexByte(s, '&')
	if amp < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:amp])
	for i := amp; i < len(s); {
		if s[i] != '&' {
			j := strings.IndexByte(s[i:], '&')
			if j < 0 {
				b.WriteString(s[i:])
				break
			}
			b.WriteString(s[i : i+j])
			i += j
			continue
		}
		repl, n := charref(s[i+1:])
		if n == 0 {
			b.WriteByte('&')
			i++
			continue
		}
		b.WriteString(repl)
		i += 1 + n
	}
	return b.String()
}

// charref matches Python's `#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?`
// at the start of s (just after '&') and returns the replacement and the
// number of bytes matched, or n == 0 when nothing matches.
func charref(s string) (string, int) {
	if strings.HasPrefix(s, "#") {
		if n := countDigits(s[1:], 10); n > 0 {
			end := 1 + n
			num := parseCapped(s[1:end], 10)
			if end < len(s) && s[end] == ';' {
				end++
			}
			return numericRef(num), end
		}
		if len(s) > 1 && (s[1] == 'x' || s[1] == 'X') {
			if n := countDigits(s[2:], 16); n > 0 {
				end := 2 + n
				num := parseCapped(s[2:end], 16)
				if end < len(s) && s[end] == ';' {
					end++
				}
				return numericRef(num), end
			}
		}
		return "", 0
	}
	// named: up to 32 code points that are not \t \n \f space < & # ;
	end, count := 0, 0
	for end < len(s) && count < 32 {
		r, size := utf8.DecodeRuneInString(s[end:])
		if r == '\t' || r == '\n' || r == '\f' || r == ' ' || r == '<' || r == '&' || r == '#' || r == ';' {
			break
		}
		end += size
		count++
	}
	if count == 0 {
		return "", 0
	}
	if end < len(s) && s[end] == ';' {
		end++
	}
	name := s[:end]
	if v, ok := htmlEntities[name]; ok {
		return v, end
	}
	// the longest prefix (of at least 2 code points, shorter than name) that is known
	for x := count + boolInt(strings.HasSuffix(name, ";")) - 1; x > 1; x-- {
		p := prefixRunes(name, x)
		if v, ok := htmlEntities[p]; ok {
			return v + name[len(p):], end
		}
	}
	return "&" + name, end
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// prefixRunes is the first n code points of s.
func prefixRunes(s string, n int) string {
	i := 0
	for k := 0; k < n && i < len(s); k++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}

func countDigits(s string, base int) int {
	n := 0
	for n < len(s) {
		c := s[n]
		ok := c >= '0' && c <= '9' || base == 16 && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F')
		if !ok {
			break
		}
		n++
	}
	return n
}

// parseCapped parses digits, saturating above the largest code point (the
// value only matters up to there).
func parseCapped(s string, base int) int {
	v := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d int
		switch {
		case c >= '0' && c <= '9':
			d = int(c - '0')
		case c >= 'a' && c <= 'f':
			d = int(c-'a') + 10
		default:
			d = int(c-'A') + 10
		}
		v = v*base + d
		if v > unicode.MaxRune+1 {
			v = unicode.MaxRune + 1
		}
	}
	return v
}

func numericRef(num int) string {
	if v, ok := htmlInvalidCharrefs[num]; ok {
		return v
	}
	if num >= 0xD800 && num <= 0xDFFF || num > unicode.MaxRune {
		return "\uFFFD"
	}
	if htmlInvalidCodepoints[num] {
		return ""
	}
	return string(rune(num))
}
