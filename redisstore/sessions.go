package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/session"
)

const sessionKey = prefix + "session:" // + id: the encoded regions, with a TTL

// Sessions is session.Store in Redis: each session is one key holding its
// regions in a compact binary form, expiring after the TTL. Redis bounds
// their memory: with maxmemory and the volatile-lru policy it evicts the
// least recently used keys that have a TTL, sessions only (docs/deploy.md).
type Sessions struct {
	c   *Client
	ttl time.Duration
}

var _ session.Store = (*Sessions)(nil)

// Sessions returns the session store; sessions live for ttl.
func (c *Client) Sessions(ttl time.Duration) *Sessions { return &Sessions{c: c, ttl: ttl} }

func sessionUnavailable(err error) error {
	return fmt.Errorf("redisstore: %w: %w", session.ErrUnavailable, err)
}

// Create stores regions under a new id.
func (s *Sessions) Create(ctx context.Context, regions *detector.Regions) (string, time.Time, error) {
	id := session.NewID()
	start := time.Now()
	err := s.c.rdb.Set(ctx, sessionKey+id, EncodeRegions(regions), s.ttl).Err()
	if err := s.c.observe(ctx, "sessions", "create", start, err); err != nil {
		return "", time.Time{}, sessionUnavailable(err)
	}
	return id, start.Add(s.ttl), nil
}

// Get returns the session's regions and expiry.
func (s *Sessions) Get(ctx context.Context, id string) (*detector.Regions, time.Time, error) {
	start := time.Now()
	var get *redis.StringCmd
	var ttl *redis.DurationCmd
	_, err := s.c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, sessionKey+id)
		ttl = p.PTTL(ctx, sessionKey+id)
		return nil
	})
	s.c.observe(ctx, "sessions", "get", start, err)
	if errors.Is(err, redis.Nil) {
		return nil, time.Time{}, session.ErrNotFound
	}
	if err != nil {
		return nil, time.Time{}, sessionUnavailable(err)
	}
	b, _ := get.Bytes()
	r, err := DecodeRegions(b)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("redisstore: session %s: %w", id, err)
	}
	return r, time.Now().Add(ttl.Val()), nil
}

// Delete forgets a session.
func (s *Sessions) Delete(ctx context.Context, id string) error {
	start := time.Now()
	n, err := s.c.rdb.Del(ctx, sessionKey+id).Result()
	if err := s.c.observe(ctx, "sessions", "delete", start, err); err != nil {
		return sessionUnavailable(err)
	}
	if n == 0 {
		return session.ErrNotFound
	}
	return nil
}

// regionsMagic starts an encoding; its last byte is the format version (2;
// version 1, written before regions carried crop embeddings, is still read).
var regionsMagic = [4]byte{'v', 'r', 'g', 2}

// EncodeRegions lays regions out as the magic, then uint32 little-endian
// width, height, region count, text and image embedding dimensions, crop
// embedding count and dimension, then float32 little-endian boxes, text
// embeddings, image embeddings and crop embeddings. Regions
// with features (a model with a mask head) go on with the features: float64
// little-endian scale x and y, uint32 level count, per level uint32 stride,
// channels, height and width, then the level's float32 data. Timings are not
// kept: they belong to the request that computed the regions.
func EncodeRegions(r *detector.Regions) []byte {
	n := len(r.Boxes)
	dt, di := 0, 0
	if n > 0 && len(r.TextEmbeddings) == n {
		dt = len(r.TextEmbeddings[0])
	}
	if n > 0 && len(r.ImageEmbeddings) == n {
		di = len(r.ImageEmbeddings[0])
	}
	kc, dc := len(r.CropEmbeddings), 0
	if kc > 0 {
		dc = len(r.CropEmbeddings[0])
	}
	b := make([]byte, 0, 32+4*n*(4+dt+di)+4*kc*dc)
	b = append(b, regionsMagic[:]...)
	for _, v := range []int{r.Width, r.Height, n, dt, di, kc, dc} {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	f := func(xs []float32) {
		for _, x := range xs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
	}
	for _, box := range r.Boxes {
		f(box[:])
	}
	for i := 0; dt > 0 && i < n; i++ {
		f(r.TextEmbeddings[i])
	}
	for i := 0; di > 0 && i < n; i++ {
		f(r.ImageEmbeddings[i])
	}
	for _, e := range r.CropEmbeddings {
		f(e)
	}
	if ft := r.Features; ft != nil {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(ft.ScaleX))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(ft.ScaleY))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(ft.Levels)))
		for _, l := range ft.Levels {
			for _, v := range []int{l.Stride, l.Channels, l.Height, l.Width} {
				b = binary.LittleEndian.AppendUint32(b, uint32(v))
			}
			f(l.Data)
		}
	}
	return b
}

// Bounds on what a stored session may claim: feature levels, regions and
// embedding dimensions (bundle.Manifest allows at most 65,536).
const (
	maxFeatureLevels = 16
	maxRegions       = 1 << 24
	maxDim           = 1 << 16
)

// errEncoding: the bytes are not an encoding of regions.
var errEncoding = errors.New("not an encoding of regions")

// DecodeRegions reverses EncodeRegions.
func DecodeRegions(b []byte) (*detector.Regions, error) {
	if len(b) < 24 || [3]byte(b[:3]) != [3]byte(regionsMagic[:3]) || b[3] < 1 || b[3] > regionsMagic[3] {
		return nil, errEncoding
	}
	header := 24
	if b[3] >= 2 {
		header = 32
		if len(b) < header {
			return nil, errEncoding
		}
	}
	u := func(i int) int { return int(binary.LittleEndian.Uint32(b[4+4*i:])) }
	r := &detector.Regions{Width: u(0), Height: u(1)}
	n, dt, di, kc, dc := u(2), u(3), u(4), 0, 0
	if header == 32 {
		kc, dc = u(5), u(6)
	}
	if n > maxRegions || dt > maxDim || di > maxDim || dc > maxDim || kc > n || (kc > 0) != (dc > 0) {
		return nil, errEncoding
	}
	regionsEnd := int64(header) + 4*int64(n)*int64(4+dt+di) + 4*int64(kc)*int64(dc)
	if int64(len(b)) < regionsEnd {
		return nil, errEncoding
	}
	var ft *detector.Features
	if int64(len(b)) > regionsEnd {
		var err error
		if ft, err = decodeFeatures(b[regionsEnd:]); err != nil {
			return nil, err
		}
		b = b[:regionsEnd]
	}
	off := header
	next := func(k int) []float32 {
		out := make([]float32, k)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[off:]))
			off += 4
		}
		return out
	}
	r.Boxes = make([][4]float32, n)
	for i := range r.Boxes {
		r.Boxes[i] = [4]float32(next(4))
	}
	if dt > 0 {
		r.TextEmbeddings = make([][]float32, n)
		for i := range r.TextEmbeddings {
			r.TextEmbeddings[i] = next(dt)
		}
	}
	if di > 0 {
		r.ImageEmbeddings = make([][]float32, n)
		for i := range r.ImageEmbeddings {
			r.ImageEmbeddings[i] = next(di)
		}
	}
	if kc > 0 {
		r.CropEmbeddings = make([][]float32, kc)
		for i := range r.CropEmbeddings {
			r.CropEmbeddings[i] = next(dc)
		}
	}
	r.Features = ft
	return r, nil
}

// decodeFeatures reads the features EncodeRegions appends.
func decodeFeatures(b []byte) (*detector.Features, error) {
	if len(b) < 20 {
		return nil, errEncoding
	}
	ft := &detector.Features{ScaleX: math.Float64frombits(binary.LittleEndian.Uint64(b)),
		ScaleY: math.Float64frombits(binary.LittleEndian.Uint64(b[8:]))}
	levels := int(binary.LittleEndian.Uint32(b[16:]))
	if levels > maxFeatureLevels {
		return nil, errEncoding
	}
	off := 20
	for range levels {
		if len(b)-off < 16 {
			return nil, errEncoding
		}
		var d [4]int
		for i := range d {
			d[i] = int(binary.LittleEndian.Uint32(b[off+4*i:]))
		}
		off += 16
		k := int64(d[1]) * int64(d[2]) * int64(d[3])
		if k*4 > int64(len(b)-off) {
			return nil, errEncoding
		}
		l := detector.FeatureLevel{Stride: d[0], Channels: d[1], Height: d[2], Width: d[3], Data: make([]float32, k)}
		for i := range l.Data {
			l.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[off:]))
			off += 4
		}
		ft.Levels = append(ft.Levels, l)
	}
	if off != len(b) {
		return nil, errEncoding
	}
	return ft, nil
}

// embeddingKey is the hash of one embedding bucket.
const embeddingKey = prefix + "emb:" // + bucket (bundle digest + template set): name → float32 LE

// Embeddings is textbank.Store in Redis: one hash per bucket, name →
// embedding. It is a cache: a failed read is a miss and a failed write is
// dropped (both counted in vild_store_errors_total), so text encoding goes on
// when Redis is down.
type Embeddings struct{ c *Client }

// Embeddings returns the embedding cache.
func (c *Client) Embeddings() *Embeddings { return &Embeddings{c: c} }

// Get returns the cached embedding, or nil.
func (e *Embeddings) Get(bucket []byte, name string, dim int) ([]float32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), embeddingTimeout)
	defer cancel()
	start := time.Now()
	b, err := e.c.rdb.HGet(ctx, embeddingKey+string(bucket), name).Bytes()
	if e.c.observe(ctx, "embeddings", "get", start, err) != nil || len(b) != 4*dim {
		return nil, nil
	}
	out := make([]float32, dim)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

// Put stores the embedding of name.
func (e *Embeddings) Put(bucket []byte, name string, v []float32) error {
	ctx, cancel := context.WithTimeout(context.Background(), embeddingTimeout)
	defer cancel()
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	start := time.Now()
	e.c.observe(ctx, "embeddings", "put", start, e.c.rdb.HSet(ctx, embeddingKey+string(bucket), name, b).Err())
	return nil
}

// Close does nothing: the Client owns the connection.
func (e *Embeddings) Close() error { return nil }

// embeddingTimeout bounds one cache operation, so that a hung Redis slows a
// miss by at most this much before the text encoder runs.
const embeddingTimeout = 250 * time.Millisecond
