package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/imageio"
)

// Limits of `vild detect` over many images.
const (
	// maxDetectWorkers caps --workers: each worker holds one image and one
	// inference's tensors.
	maxDetectWorkers = 64
	// defaultDetectWorkers caps the default (one per core).
	defaultDetectWorkers = 8
	// maxImageFileBytes is the largest image file read (the server's default
	// body limit is 20 MiB).
	maxImageFileBytes = 64 << 20
)

// imageExtensions are the files a folder is searched for: the formats
// imageio decodes.
var imageExtensions = map[string]bool{".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".webp": true}

// imageResult is what one image gives: its size (after EXIF orientation) and
// the detections.
type imageResult struct {
	Width, Height int
	Detections    []detector.Detection
}

// imageDetector detects objects in one encoded image; name is the image's
// file name, for messages (and for a remote implementation's upload). The
// in-process model is localDetector; a client of the HTTP API can stand in.
type imageDetector interface {
	Detect(ctx context.Context, name string, data []byte) (*imageResult, error)
}

// localDetector runs the model in this process: decode, Regions, Score.
type localDetector struct {
	det    detector.Detector
	vocab  *detector.Vocabulary
	opts   detector.Options
	limits imageio.Limits
}

func (l localDetector) Detect(ctx context.Context, name string, data []byte) (*imageResult, error) {
	img, err := imageio.Decode(data, l.limits)
	if err != nil {
		return nil, err
	}
	r, err := l.det.Regions(ctx, img.Image)
	if err != nil {
		return nil, err
	}
	res, err := l.det.Score(ctx, r, l.vocab, l.opts)
	if err != nil {
		return nil, err
	}
	return &imageResult{Width: res.Width, Height: res.Height, Detections: res.Detections}, nil
}

// batchInput is one image to detect: where it is read from and its COCO
// file_name (relative to the folder it was found in, or the path as given).
type batchInput struct {
	Path     string
	FileName string
}

// collectInputs expands the arguments: a folder is walked recursively for
// image files (by extension, sorted, hidden entries skipped), a file is taken
// as given. Two inputs with the same file_name are an error.
func collectInputs(args []string) ([]batchInput, error) {
	var out []batchInput
	seen := map[string]string{}
	add := func(path, name string) error {
		name = filepath.ToSlash(name)
		if other, dup := seen[name]; dup {
			return fmt.Errorf("detect: %s and %s would both be file_name %q; give them in separate runs", other, path, name)
		}
		seen[name] = path
		out = append(out, batchInput{Path: path, FileName: name})
		return nil
	}
	for _, arg := range args {
		info, err := os.Stat(arg)
		if err != nil {
			// not fatal here: the file is reported with the others' failures
			if err := add(arg, fileName(arg)); err != nil {
				return nil, err
			}
			continue
		}
		if !info.IsDir() {
			if err := add(arg, fileName(arg)); err != nil {
				return nil, err
			}
			continue
		}
		found := 0
		err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != arg && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() || !imageExtensions[strings.ToLower(filepath.Ext(path))] {
				return nil
			}
			rel, err := filepath.Rel(arg, path)
			if err != nil {
				return err
			}
			found++
			return add(path, rel)
		})
		if err != nil {
			return nil, fmt.Errorf("detect: %s: %w", arg, err)
		}
		if found == 0 {
			return nil, fmt.Errorf("detect: no image files (%s) in %s", extensionList(), arg)
		}
	}
	return out, nil
}

// fileName is a file argument's COCO file_name: the path as given when it is
// local, else its base name.
func fileName(path string) string {
	if filepath.IsLocal(path) {
		return filepath.Clean(path)
	}
	return filepath.Base(path)
}

func extensionList() string {
	return ".png, .jpg, .jpeg, .gif, .webp"
}

// readImageFile reads one image file within maxImageFileBytes.
func readImageFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxImageFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxImageFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxImageFileBytes)
	}
	return data, nil
}

// defaultWorkers is one worker per core, at most defaultDetectWorkers.
func defaultWorkers() int {
	return max(1, min(runtime.GOMAXPROCS(0), defaultDetectWorkers))
}

// imageOutcome is one finished image: its result or why it failed.
type imageOutcome struct {
	Index  int // in the run's input list
	Input  batchInput
	Result *imageResult
	Err    error
	Millis float64
}

// batchRun runs Detector over Inputs on Workers goroutines.
type batchRun struct {
	Inputs   []batchInput
	Detector imageDetector
	Workers  int
	// Completed, when set, is called for each finished image in the order
	// they finish (the journal); Ordered, when set, in input order (stdout).
	// Neither is called concurrently; an error from either stops the run.
	Completed, Ordered func(imageOutcome) error
}

// errInterrupted marks a run stopped by its context (Ctrl-C, SIGTERM).
var errInterrupted = errors.New("interrupted")

// errRunChanged, from a detector, stops the whole run: what detects is no
// longer what the run started with (a server upgraded under it), so no later
// image could be trusted either.
var errRunChanged = errors.New("the detector changed during the run")

// run detects every input. A failed image (unreadable, undecodable, refused by
// the detector) is an outcome with Err, not the end of the run; the context's
// end stops the run with errInterrupted, the images in flight not counted as
// failed. At most 4 × Workers images are finished but not yet passed to
// Ordered, so one slow image holds back a bounded amount.
func (b batchRun) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := max(1, b.Workers)
	window := make(chan struct{}, 4*workers)
	jobs := make(chan int)
	done := make(chan imageOutcome)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				done <- b.detectOne(ctx, i)
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range b.Inputs {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(done) }()

	var firstErr error
	pending := map[int]imageOutcome{}
	next := 0
	for o := range done {
		if firstErr != nil {
			continue // drain
		}
		if ctx.Err() != nil && o.Err != nil {
			continue // stopped by the interruption, not a bad image
		}
		if errors.Is(o.Err, errRunChanged) {
			firstErr = o.Err
			cancel()
			continue
		}
		if b.Completed != nil {
			if err := b.Completed(o); err != nil {
				firstErr = err
				cancel()
				continue
			}
		}
		pending[o.Index] = o
		for {
			p, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			<-window
			if b.Ordered != nil {
				if err := b.Ordered(p); err != nil {
					firstErr = err
					cancel()
					break
				}
			}
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if next < len(b.Inputs) {
		return errInterrupted
	}
	return nil
}

func (b batchRun) detectOne(ctx context.Context, i int) imageOutcome {
	in := b.Inputs[i]
	o := imageOutcome{Index: i, Input: in}
	start := time.Now()
	if err := ctx.Err(); err != nil {
		o.Err = err
		return o
	}
	data, err := readImageFile(in.Path)
	if err != nil {
		o.Err = err
		return o
	}
	o.Result, o.Err = b.Detector.Detect(ctx, in.FileName, data)
	o.Millis = float64(time.Since(start).Microseconds()) / 1000
	return o
}

// progress reports a run on stderr: count/total, images per second and the
// time left. On a terminal it redraws one line; otherwise it prints a line
// every Every images and at the end.
type progress struct {
	W        io.Writer
	Terminal bool
	Total    int // images in the run, resumed ones included
	Resumed  int // finished by an earlier run
	Every    int // plain mode: images between lines
	Now      func() time.Time

	start      time.Time
	done       int // finished in this run, failed ones included
	failed     int
	lastRedraw time.Time
}

func (p *progress) begin() {
	if p.Now == nil {
		p.Now = time.Now
	}
	p.start = p.Now()
	if p.Every <= 0 {
		p.Every = max(1, (p.Total-p.Resumed)/20)
	}
	if p.Resumed > 0 {
		fmt.Fprintf(p.W, "detect: resuming: %d of %d images done by an earlier run\n", p.Resumed, p.Total)
	}
}

// add counts one finished image.
func (p *progress) add(failed bool) {
	p.done++
	if failed {
		p.failed++
	}
	todo := p.Total - p.Resumed
	last := p.done == todo
	if p.Terminal {
		if now := p.Now(); last || now.Sub(p.lastRedraw) >= 100*time.Millisecond {
			p.lastRedraw = now
			fmt.Fprintf(p.W, "\r\033[K%s", p.line(true))
			if last {
				fmt.Fprintln(p.W)
			}
		}
		return
	}
	if last || p.done%p.Every == 0 {
		fmt.Fprintln(p.W, p.line(false))
	}
}

// note prints a message (a failed file) without breaking the progress line.
func (p *progress) note(format string, args ...any) {
	if p.Terminal {
		fmt.Fprint(p.W, "\r\033[K")
	}
	fmt.Fprintf(p.W, format+"\n", args...)
}

// end finishes a redrawn line that stopped early (an interruption).
func (p *progress) end() {
	if p.Terminal && p.done < p.Total-p.Resumed && p.done > 0 {
		fmt.Fprintln(p.W)
	}
}

func (p *progress) line(bar bool) string {
	count := p.Resumed + p.done
	el := p.Now().Sub(p.start).Seconds()
	rate := float64(p.done) / max(el, 1e-9)
	eta := "?"
	if p.done > 0 {
		eta = (time.Duration(float64(p.Total-count)/rate) * time.Second).Round(time.Second).String()
	}
	var b strings.Builder
	b.WriteString("detect: ")
	if bar {
		const width = 24
		n := width * count / max(p.Total, 1)
		b.WriteString("[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "] ")
	}
	fmt.Fprintf(&b, "%d/%d images, %.2f img/s, ETA %s", count, p.Total, rate, eta)
	if p.failed > 0 {
		fmt.Fprintf(&b, ", %d failed", p.failed)
	}
	return b.String()
}

// isTerminal says whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
