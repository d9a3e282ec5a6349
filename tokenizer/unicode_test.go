package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// unicodeTable is testdata/unicode.json: how the Python reference cleans and
// pre-tokenises every single code point (clip_tokenizer.unicode_table).
type unicodeTable struct {
	UnidataVersion string    `json:"unidata_version"`
	Assigned       [][2]rune `json:"assigned"`
	Space          []rune    `json:"space"`
	PieceClass     [][3]any  `json:"piece_class"`
	SigmaClass     [][3]any  `json:"sigma_class"`
	Lower          [][2]any  `json:"lower"`
	NFC            [][2]any  `json:"nfc"`
	assignedRuns   [][3]any
}

func loadUnicodeTable(t *testing.T) *unicodeTable {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "unicode.json"))
	if err != nil {
		t.Fatal(err)
	}
	var u unicodeTable
	if err := json.Unmarshal(data, &u); err != nil {
		t.Fatal(err)
	}
	for _, r := range u.Assigned { // [first, last] runs of assigned code points
		u.assignedRuns = append(u.assignedRuns, [3]any{float64(r[0]), float64(r[1]), "assigned"})
	}
	return &u
}

// runCursor walks [[first, last, class], ...] runs in code point order.
type runCursor struct {
	runs [][3]any
	i    int
}

// at is the class of r; calls must come in increasing r.
func (c *runCursor) at(r rune) string {
	for c.i < len(c.runs) && rune(c.runs[c.i][1].(float64)) < r {
		c.i++
	}
	if c.i < len(c.runs) && rune(c.runs[c.i][0].(float64)) <= r {
		return c.runs[c.i][2].(string)
	}
	return ""
}

func pairs(list [][2]any) map[rune]string {
	out := map[rune]string{}
	for _, p := range list {
		out[rune(p[0].(float64))] = p[1].(string)
	}
	return out
}

// TestEveryCodePoint compares, for each of the 1,112,064 scalar values, the
// Go pre-tokeniser class, whitespace, lower-casing, Final_Sigma properties and
// NFC with Python's. Go's tables may follow a newer Unicode version than
// Python's, so a difference is allowed only on a code point that Python's
// database leaves unassigned; any other fails.
func TestEveryCodePoint(t *testing.T) {
	if testing.Short() {
		t.Skip("exhaustive; skipped with -short")
	}
	u := loadUnicodeTable(t)
	assigned := runCursor{runs: u.assignedRuns}
	piece := runCursor{runs: u.PieceClass}
	sigma := runCursor{runs: u.SigmaClass}
	lower := pairs(u.Lower)
	nfc := pairs(u.NFC)
	space := map[rune]bool{}
	for _, r := range u.Space {
		space[r] = true
	}
	classNames := map[int]string{classLetter: "L", classNumber: "N", classOther: "O", classSpace: "S"}
	tolerated := map[string]int{}
	fails := 0
	isAssigned := false
	check := func(what string, r rune, got, want string) {
		if got == want {
			return
		}
		if !isAssigned {
			tolerated[what]++
			return
		}
		if fails++; fails <= 20 {
			t.Errorf("%U %s: Go %q, Python %q", r, what, got, want)
		}
	}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xD800 && r <= 0xDFFF {
			continue
		}
		s := string(r)
		isAssigned = assigned.at(r) != ""
		check("piece class", r, classNames[runeClass(r)], piece.at(r))
		if !isAssigned {
			continue // only the class tally above for these: every difference is allowed
		}
		check("space", r, map[bool]string{true: "space", false: "-"}[isSpace(r)], map[bool]string{true: "space", false: "-"}[space[r]])
		wantLower, ok := lower[r]
		if !ok {
			wantLower = s
		}
		check("lower", r, lowerPython(s), wantLower)
		gotSigma := "-"
		if caseIgnorable(r) {
			gotSigma = "I"
		} else if cased(r) {
			gotSigma = "C"
		}
		check("final sigma class", r, gotSigma, sigma.at(r))
		wantNFC, ok := nfc[r]
		if !ok {
			wantNFC = s
		}
		check("NFC", r, norm.NFC.String(s), wantNFC)
	}
	if fails > 20 {
		t.Errorf("... %d differences in all", fails)
	}
	t.Logf("Python's Unicode %s vs Go's %s (x/text norm %s): differences on code points unassigned in Python: %v",
		u.UnidataVersion, unicode.Version, norm.Version, tolerated)
}
