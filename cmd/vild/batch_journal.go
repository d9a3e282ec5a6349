package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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
// them. Failed images are not written: a rerun tries them again.
type journal struct {
	f    *os.File
	path string
}

// openJournal opens path, creating it with fp's header, or reads the records
// of an earlier run when it exists. A header for another run is refused; a
// last line cut short (the process killed mid-write) is cut off.
func openJournal(path string, fp runFingerprint) (*journal, map[string]journalRecord, error) {
	records := map[string]journalRecord{}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("detect: journal: %w", err)
	}
	good, err := readJournal(f, path, fp, records)
	if err == nil {
		err = f.Truncate(good)
	}
	if err == nil {
		_, err = f.Seek(good, io.SeekStart)
	}
	if err == nil && good == 0 {
		err = writeJSONLine(f, journalHeader{Version: journalVersion, Run: fp})
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return &journal{f: f, path: path}, records, nil
}

// readJournal reads f's records into records and returns the length of its
// whole lines.
func readJournal(f *os.File, path string, fp runFingerprint, records map[string]journalRecord) (int64, error) {
	r := bufio.NewReaderSize(f, 1<<20)
	var good int64
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return good, nil // nothing, or a last line cut short
		}
		if err != nil {
			return 0, fmt.Errorf("detect: journal: %w", err)
		}
		if n == 1 {
			var h journalHeader
			if err := json.Unmarshal(line, &h); err != nil || h.Version != journalVersion {
				return 0, fmt.Errorf("detect: %s is not a journal of this version of vild detect; move it away to start over", path)
			}
			if d := h.Run.differences(fp); len(d) > 0 {
				return 0, fmt.Errorf("detect: %s holds a run with other settings (%s): rerun with the same ones to resume, or delete it to start over",
					path, strings.Join(d, "; "))
			}
		} else {
			var rec journalRecord
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&rec); err != nil || rec.FileName == "" {
				if _, eof := r.Peek(1); eof == io.EOF {
					return good, nil // the last line, written in part
				}
				return 0, fmt.Errorf("detect: %s: line %d is not a record (%v); delete the journal to start over", path, n, err)
			}
			records[rec.FileName] = rec
		}
		good += int64(len(line))
	}
}

// add appends one record in a single write.
func (j *journal) add(rec journalRecord) error {
	if err := writeJSONLine(j.f, rec); err != nil {
		return fmt.Errorf("detect: journal: %w", err)
	}
	return nil
}

func (j *journal) close() error { return j.f.Close() }

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
