package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/vild/vild/detector"
)

// journalVersion is the journal's format; a journal of another version is refused.
const journalVersion = 1

// runFingerprint is everything that decides an image's detections. A journal
// written under another fingerprint is refused, so a resumed run never mixes
// results of two models, vocabularies or settings.
type runFingerprint struct {
	Model            string        `json:"model"`
	VocabularyDigest string        `json:"vocabulary_digest"`
	Categories       []string      `json:"categories"`
	Head             detector.Head `json:"head"`
	ScoreThreshold   float32       `json:"score_threshold"`
	NMSIoU           float32       `json:"nms_iou"`
	MaxDetections    int           `json:"max_detections"`
	LabelsPerBox     int           `json:"labels_per_box"`
	RunnersUp        int           `json:"runners_up"`
	// Masks is empty in journals written before masks (none asked).
	Masks detector.Masks `json:"masks,omitempty"`
	// Scores is --scores, empty for the model's default (and in journals
	// written before it).
	Scores detector.Scores `json:"scores,omitempty"`
}

// differences lists the fields that differ, "name: then → now".
func (f runFingerprint) differences(now runFingerprint) []string {
	var out []string
	a, b := reflect.ValueOf(f), reflect.ValueOf(now)
	t := a.Type()
	for i := range t.NumField() {
		if reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			continue
		}
		name := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]
		then, cur := fmt.Sprint(a.Field(i).Interface()), fmt.Sprint(b.Field(i).Interface())
		if name == "categories" {
			then, cur = fmt.Sprintf("%d names", len(f.Categories)), fmt.Sprintf("%d names", len(now.Categories))
			if len(f.Categories) == len(now.Categories) {
				then, cur = "a different list", "this one"
			}
		}
		out = append(out, fmt.Sprintf("%s: %s then, %s now", name, then, cur))
	}
	return out
}

// journalHeader is a journal's first line.
type journalHeader struct {
	Version int            `json:"vild_detect_journal"`
	Run     runFingerprint `json:"run"`
}

// journalRecord is one finished image: a journal line.
type journalRecord struct {
	FileName   string               `json:"file_name"`
	Width      int                  `json:"width"`
	Height     int                  `json:"height"`
	Detections []detector.Detection `json:"detections"`
}

// journal appends finished images to OUT.journal, one JSON line each, so
// that an interrupted run (Ctrl-C, a kill, a crash) resumes without redoing
// them. Failed images are not written: a rerun tries them again. In memory
// it keeps only where each image's line is (journalEntry), so a run over many
// images holds their detections on disk, not in memory.
type journal struct {
	f     *os.File
	path  string
	size  int64                   // bytes of whole lines
	index map[string]journalEntry // by file_name; the last line wins
}

// journalEntry is where one image's record is, and its size.
type journalEntry struct {
	Offset        int64
	Length        int
	Width, Height int
}

// openJournal opens path, creating it with fp's header, or indexes the
// records of an earlier run when it exists. A header for another run is
// refused; a last line cut short (the process killed mid-write) is cut off.
func openJournal(path string, fp runFingerprint) (*journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("detect: journal: %w", err)
	}
	j := &journal{f: f, path: path, index: map[string]journalEntry{}}
	err = j.read(fp)
	if err == nil {
		err = f.Truncate(j.size)
	}
	if err == nil {
		_, err = f.Seek(j.size, io.SeekStart)
	}
	if err == nil && j.size == 0 {
		_, err = j.write(journalHeader{Version: journalVersion, Run: fp})
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return j, nil
}

// read checks the header against fp and indexes the records of whole lines.
func (j *journal) read(fp runFingerprint) error {
	r := bufio.NewReaderSize(j.f, 1<<20)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return nil // nothing, or a last line cut short
		}
		if err != nil {
			return fmt.Errorf("detect: journal: %w", err)
		}
		if n == 1 {
			var h journalHeader
			if err := json.Unmarshal(line, &h); err != nil || h.Version != journalVersion {
				return fmt.Errorf("detect: %s is not a journal of this version of vild detect; move it away to start over", j.path)
			}
			if d := h.Run.differences(fp); len(d) > 0 {
				return fmt.Errorf("detect: %s holds a run with other settings (%s): rerun with the same ones to resume, or delete it to start over",
					j.path, strings.Join(d, "; "))
			}
		} else {
			rec, err := decodeRecord(line)
			if err != nil {
				if _, eof := r.Peek(1); eof == io.EOF {
					return nil // the last line, written in part
				}
				return fmt.Errorf("detect: %s: line %d is not a record (%v); delete the journal to start over", j.path, n, err)
			}
			j.index[rec.FileName] = journalEntry{Offset: j.size, Length: len(line), Width: rec.Width, Height: rec.Height}
		}
		j.size += int64(len(line))
	}
}

func decodeRecord(line []byte) (journalRecord, error) {
	var rec journalRecord
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return rec, err
	}
	if rec.FileName == "" {
		return rec, errors.New("no file_name")
	}
	return rec, nil
}

// has says whether the journal holds the image.
func (j *journal) has(fileName string) bool {
	_, ok := j.index[fileName]
	return ok
}

// add appends one record in a single write.
func (j *journal) add(rec journalRecord) error {
	off := j.size
	n, err := j.write(rec)
	if err != nil {
		return fmt.Errorf("detect: journal: %w", err)
	}
	j.index[rec.FileName] = journalEntry{Offset: off, Length: n, Width: rec.Width, Height: rec.Height}
	return nil
}

// record reads one image's record back.
func (j *journal) record(e journalEntry) (journalRecord, error) {
	line := make([]byte, e.Length)
	if _, err := j.f.ReadAt(line, e.Offset); err != nil {
		return journalRecord{}, fmt.Errorf("detect: journal: %w", err)
	}
	rec, err := decodeRecord(line)
	if err != nil {
		return rec, fmt.Errorf("detect: %s: the record at byte %d: %w", j.path, e.Offset, err)
	}
	return rec, nil
}

func (j *journal) close() error { return j.f.Close() }

// write appends v as one JSON line in a single write.
func (j *journal) write(v any) (int, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	n, err := j.f.Write(append(b, '\n'))
	j.size += int64(n)
	return n, err
}
