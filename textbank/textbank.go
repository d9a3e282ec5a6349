// Package textbank turns category names into text embeddings: each name is
// placed into every prompt template, tokenised, run through the bundle's text
// encoder, and the unit embeddings are averaged and renormalised (ViLD's prompt
// ensemble). Embeddings are cached in memory and, optionally, on disk in a
// bbolt file keyed by bundle digest + template set + name, so a name is
// encoded once per model, across restarts. The bundle's precomputed category
// embeddings are served without running the encoder.
package textbank

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/vild/vild/bundle"
	"github.com/vild/vild/ort"
	"github.com/vild/vild/tokenizer"
)

// Graph input and output names of text_encoder.onnx (docs/bundle.md).
const (
	InputIDs         = "input_ids"
	OutputEmbeddings = "text_embeddings"
)

// Errors returned by Embed.
var (
	ErrName    = errors.New("textbank: invalid category name")
	ErrEncoder = errors.New("textbank: text encoder output does not match the bundle")
)

// DefaultMaxMemory is the default bound on embeddings held in memory.
const DefaultMaxMemory = 200_000

// Config assembles a Bank from its parts; Open builds one from a bundle.
type Config struct {
	Session       ort.Session          // text_encoder.onnx
	Tokenizer     *tokenizer.Tokenizer // the bundle's tokenizer
	Templates     []string             // prompt templates, each with one "{}"
	ContextLength int                  // L of input_ids
	Dim           int                  // embedding dimension D
	Digest        string               // bundle digest: part of every cache key
	Store         Store                // persistent cache; nil for memory only
	Precomputed   map[string][]float32 // embeddings known without the encoder
	Workers       int                  // names encoded at once; ≤ 0 means GOMAXPROCS
	MaxMemory     int                  // embeddings kept in memory; ≤ 0 means DefaultMaxMemory
}

// Bank embeds category names. It is safe for concurrent use.
type Bank struct {
	cfg     Config
	bucket  []byte // Store bucket for this bundle and template set
	mu      sync.RWMutex
	mem     map[string][]float32
	group   singleflight.Group
	ownSess bool
	stats   struct{ memory, disk, encoded atomic.Int64 }
}

// Stats counts where embeddings came from.
type Stats struct {
	Memory  int64 // served from memory (including precomputed)
	Disk    int64 // read from the on-disk cache
	Encoded int64 // names run through the text encoder
}

// New returns a Bank over cfg's parts; Close does not close cfg.Session.
func New(cfg Config) (*Bank, error) {
	if cfg.Session == nil || cfg.Tokenizer == nil {
		return nil, errors.New("textbank: new: a session and a tokenizer are required")
	}
	if len(cfg.Templates) == 0 || cfg.ContextLength < 3 || cfg.Dim < 1 {
		return nil, fmt.Errorf("textbank: new: %d templates, context %d, dim %d", len(cfg.Templates), cfg.ContextLength, cfg.Dim)
	}
	for _, t := range cfg.Templates {
		if strings.Count(t, "{}") != 1 {
			return nil, fmt.Errorf("textbank: new: template %q must hold \"{}\" once", t)
		}
	}
	err := ort.CheckSignature(cfg.Session,
		[]ort.Info{{Name: InputIDs, DType: ort.Int64, Shape: []int64{-1, int64(cfg.ContextLength)}}},
		[]ort.Info{{Name: OutputEmbeddings, DType: ort.Float32, Shape: []int64{-1, int64(cfg.Dim)}}})
	if err != nil {
		return nil, fmt.Errorf("textbank: new: %w", err)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxMemory <= 0 {
		cfg.MaxMemory = DefaultMaxMemory
	}
	b := &Bank{cfg: cfg, mem: map[string][]float32{}, bucket: bucketName(cfg.Digest, cfg.Templates, cfg.ContextLength)}
	for name, e := range cfg.Precomputed {
		if len(e) != cfg.Dim {
			return nil, fmt.Errorf("textbank: new: precomputed %q has dimension %d, want %d", name, len(e), cfg.Dim)
		}
		b.mem[name] = e
	}
	return b, nil
}

// Options configure Open.
type Options struct {
	CachePath string // bbolt file for the on-disk cache; empty for memory only
	// Store, when set, is the persistent cache instead of CachePath's file
	// (a shared one, such as redisstore's); the Bank closes it with itself.
	Store     Store
	Workers   int
	MaxMemory int
	// Logger takes the warning about a corrupt cache file moved aside (nil:
	// slog.Default()).
	Logger *slog.Logger
}

// Open builds a Bank for bundle b: it loads the text encoder and the tokenizer
// and takes the bundle's precomputed category embeddings, which serve those
// names without running the encoder.
func Open(b *bundle.Bundle, rt ort.Runtime, opts Options) (*Bank, error) {
	m := b.Manifest
	tok, err := tokenizer.LoadFS(b.FS, bundle.TokenizerDir)
	if err != nil {
		return nil, fmt.Errorf("textbank: open %s: %w", b.Source, err)
	}
	pre, err := b.CategoryEmbeddings()
	if err != nil {
		return nil, fmt.Errorf("textbank: open: %w", err)
	}
	precomputed := make(map[string][]float32, len(pre))
	for i, c := range m.Categories {
		precomputed[c.Name] = pre[i]
	}
	model, err := b.ReadFile(bundle.TextEncoderFile)
	if err != nil {
		return nil, fmt.Errorf("textbank: open: %w", err)
	}
	sess, err := rt.NewSession(bundle.TextEncoderFile, model)
	if err != nil {
		return nil, fmt.Errorf("textbank: open %s: %w", b.Source, err)
	}
	store := opts.Store // nil interface: memory only, unless CachePath
	if store == nil && opts.CachePath != "" {
		bs, err := OpenBoltStore(opts.CachePath)
		if err != nil {
			sess.Close()
			return nil, fmt.Errorf("textbank: open: %w", err)
		}
		if aside, why := bs.MovedAside(); aside != "" {
			log := opts.Logger
			if log == nil {
				log = slog.Default()
			}
			log.Warn("the text-embedding cache was corrupt: moved aside, starting an empty one (names are encoded again as they are asked for)",
				"path", opts.CachePath, "moved_to", aside, "cause", why)
		}
		store = bs
	}
	bank, err := New(Config{Session: sess, Tokenizer: tok, Templates: m.Text.Templates,
		ContextLength: m.Text.ContextLength, Dim: m.Embedding.Dim, Digest: b.Digest, Store: store,
		Precomputed: precomputed, Workers: opts.Workers, MaxMemory: opts.MaxMemory})
	if err != nil {
		sess.Close()
		if store != nil {
			store.Close()
		}
		return nil, err
	}
	bank.ownSess = true
	return bank, nil
}

// Close releases the session (when Open created it) and the store.
func (b *Bank) Close() error {
	var errs []error
	if b.ownSess {
		errs = append(errs, b.cfg.Session.Close())
	}
	if b.cfg.Store != nil {
		errs = append(errs, b.cfg.Store.Close())
	}
	return errors.Join(errs...)
}

// Stats reports where embeddings came from so far.
func (b *Bank) Stats() Stats {
	return Stats{Memory: b.stats.memory.Load(), Disk: b.stats.disk.Load(), Encoded: b.stats.encoded.Load()}
}

// Dim is the embedding dimension.
func (b *Bank) Dim() int { return b.cfg.Dim }

// Embed returns the L2-normalised prompt-ensemble embedding of each name, in
// order. Each distinct name is encoded at most once at a time (singleflight);
// the encoder work of a name outlives a cancelled caller, since its result is
// cached for the next.
// Its span ("text_encode") carries how many names, never a name.
func (b *Bank) Embed(ctx context.Context, names []string) ([][]float32, error) {
	ctx, sp := otel.Tracer("github.com/vild/vild/textbank").Start(ctx, "text_encode", trace.WithAttributes(attribute.Int("vild.names", len(names))))
	defer sp.End()
	out, err := b.embed(ctx, names)
	if err != nil {
		sp.SetStatus(codes.Error, "") // the error may hold a name: not exported
	}
	return out, err
}

func (b *Bank) embed(ctx context.Context, names []string) ([][]float32, error) {
	out := make([][]float32, len(names))
	var missing []int
	for i, name := range names {
		if strings.TrimSpace(name) == "" || strings.Contains(name, "\x00") {
			return nil, fmt.Errorf("%w: %q", ErrName, name)
		}
		if e, ok := b.lookupMemory(name); ok {
			b.stats.memory.Add(1)
			out[i] = e
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) == 0 {
		return out, nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.Workers)
	for _, i := range missing {
		g.Go(func() error {
			e, err := b.embedOne(gctx, names[i])
			out[i] = e
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

func (b *Bank) lookupMemory(name string) ([]float32, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	e, ok := b.mem[name]
	return e, ok
}

func (b *Bank) remember(name string, e []float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.mem) >= b.cfg.MaxMemory {
		for k := range b.mem { // evict an arbitrary entry
			delete(b.mem, k)
			break
		}
	}
	b.mem[name] = e
}

func (b *Bank) embedOne(ctx context.Context, name string) ([]float32, error) {
	ch := b.group.DoChan(name, func() (any, error) {
		if e, ok := b.lookupMemory(name); ok {
			return e, nil
		}
		if b.cfg.Store != nil {
			e, err := b.cfg.Store.Get(b.bucket, name, b.cfg.Dim)
			if err != nil {
				return nil, err
			}
			if e != nil {
				b.stats.disk.Add(1)
				b.remember(name, e)
				return e, nil
			}
		}
		// Detached from the caller: the result is cached for everyone.
		e, err := b.encode(context.WithoutCancel(ctx), name)
		if err != nil {
			return nil, err
		}
		b.stats.encoded.Add(1)
		b.remember(name, e)
		if b.cfg.Store != nil {
			if err := b.cfg.Store.Put(b.bucket, name, e); err != nil {
				return nil, err
			}
		}
		return e, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]float32), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("textbank: embed %q: %w", name, ctx.Err())
	}
}

// encode runs every prompt of name through the text encoder and returns the
// renormalised mean of the unit embeddings.
func (b *Bank) encode(ctx context.Context, name string) ([]float32, error) {
	t, l, d := len(b.cfg.Templates), b.cfg.ContextLength, b.cfg.Dim
	ids := make([]int64, 0, t*l)
	for _, tmpl := range b.cfg.Templates {
		row, _ := b.cfg.Tokenizer.EncodeContext(strings.Replace(tmpl, "{}", name, 1), l)
		ids = append(ids, row...)
	}
	out, err := b.cfg.Session.Run(ctx, map[string]ort.Tensor{InputIDs: {Shape: []int64{int64(t), int64(l)}, I64: ids}})
	if err != nil {
		return nil, fmt.Errorf("textbank: encode %q: %w", name, err)
	}
	emb := out[OutputEmbeddings]
	if len(emb.Shape) != 2 || emb.Shape[0] != int64(t) || emb.Shape[1] != int64(d) || len(emb.F32) != t*d {
		return nil, fmt.Errorf("%w: encode %q: output shape %v, want [%d %d]", ErrEncoder, name, emb.Shape, t, d)
	}
	return Ensemble(bundle.Rows(emb.F32, d))
}

// Ensemble normalises each row, averages them and normalises the mean.
func Ensemble(rows [][]float32) ([]float32, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: no embeddings to average", ErrEncoder)
	}
	d := len(rows[0])
	mean := make([]float64, d)
	for _, r := range rows {
		if len(r) != d {
			return nil, fmt.Errorf("%w: rows of different lengths", ErrEncoder)
		}
		var n float64
		for _, v := range r {
			n += float64(v) * float64(v)
		}
		n = math.Sqrt(n)
		if n == 0 || math.IsNaN(n) || math.IsInf(n, 0) {
			return nil, fmt.Errorf("%w: embedding of norm %v", ErrEncoder, n)
		}
		for j, v := range r {
			mean[j] += float64(v) / n
		}
	}
	var n float64
	for _, v := range mean {
		n += v * v
	}
	n = math.Sqrt(n)
	if n == 0 {
		return nil, fmt.Errorf("%w: prompt embeddings cancel out", ErrEncoder)
	}
	out := make([]float32, d)
	for j, v := range mean {
		out[j] = float32(v / n)
	}
	return out, nil
}
