package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vild/vild/detector"
	"github.com/vild/vild/internal/services"
	"github.com/vild/vild/session"
	"github.com/vild/vild/vocabulary"
)

func open(t *testing.T, r *services.Redis) (*Client, *Metrics) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	c, err := Open(context.Background(), r.URL(), m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, m
}

func vocabularies(t *testing.T, c *Client) *Vocabularies {
	v := c.Vocabularies(context.Background())
	t.Cleanup(func() { v.Close() })
	return v
}

var spec = vocabulary.Spec{Categories: []string{"mug"}}

func TestVocabularyConditionalWrites(t *testing.T) {
	ctx := context.Background()
	c, _ := open(t, services.StartRedis(t))
	s := vocabularies(t, c)
	if _, _, err := s.Put(ctx, "k", spec, "e1", "*"); !errors.Is(err, vocabulary.ErrETagMismatch) {
		t.Fatalf("If-Match * on a missing entry: %v", err)
	}
	e, created, err := s.Put(ctx, "k", spec, "e1", "")
	if err != nil || !created || e.ETag != "e1" {
		t.Fatalf("create: %+v %v %v", e, created, err)
	}
	if _, _, err := s.Put(ctx, "k", spec, "e2", `"other"`); !errors.Is(err, vocabulary.ErrETagMismatch) {
		t.Fatalf("stale If-Match: %v", err)
	}
	if _, created, err := s.Put(ctx, "k", spec, "e2", `W/"e1", "x"`); err != nil || created {
		t.Fatalf("replace: %v %v", created, err)
	}
	if _, _, err := s.Put(ctx, "../k", spec, "e3", ""); !errors.Is(err, vocabulary.ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "k" || list[0].ETag != "e2" || list[0].Categories != 1 {
		t.Fatalf("list %+v %v", list, err)
	}
	if err := s.Delete(ctx, "k", "e1"); !errors.Is(err, vocabulary.ErrETagMismatch) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := s.Delete(ctx, "k", `"e2"`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, vocabulary.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.Delete(ctx, "k", ""); !errors.Is(err, vocabulary.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// Eight replicas (clients) replace the same vocabulary at once, each with
// If-Match on the ETag they all read: exactly one wins, the others get
// ErrETagMismatch, and the stored entry is the winner's.
func TestConcurrentConditionalPutsOneWins(t *testing.T) {
	ctx := context.Background()
	r := services.StartRedis(t)
	first, _ := open(t, r)
	if _, _, err := vocabularies(t, first).Put(ctx, "race", spec, "e0", ""); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		var stores []*Vocabularies
		for range 8 {
			c, _ := open(t, r)
			stores = append(stores, vocabularies(t, c))
		}
		base, err := stores[0].Get(ctx, "race")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, len(stores))
		start := make(chan struct{})
		for i, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, errs[i] = s.Put(ctx, "race", vocabulary.Spec{Categories: []string{fmt.Sprint(i)}}, fmt.Sprintf("r%d-%d", round, i), `"`+base.ETag+`"`)
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: replicas %d and %d both won", round, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, vocabulary.ErrETagMismatch):
				t.Fatalf("round %d: replica %d: %v", round, i, err)
			}
		}
		got, err := stores[0].Get(ctx, "race")
		if winner < 0 || err != nil || got.ETag != fmt.Sprintf("r%d-%d", round, winner) {
			t.Fatalf("round %d: winner %d, stored %+v %v", round, winner, got, err)
		}
	}
}

// A write through one replica reaches another's Watch within a second.
func TestChangeNoticeWithinASecond(t *testing.T) {
	ctx := context.Background()
	r := services.StartRedis(t)
	a, _ := open(t, r)
	b, _ := open(t, r)
	va, vb := vocabularies(t, a), vocabularies(t, b)
	got := make(chan string, 4)
	vb.Watch(func(name, old string) { got <- name + "@" + old })
	time.Sleep(100 * time.Millisecond) // the subscription is asynchronous
	if _, _, err := va.Put(ctx, "shared", spec, "e1", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := va.Put(ctx, "shared", vocabulary.Spec{Categories: []string{"cup"}}, "e2", ""); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"shared@", "shared@e1"} {
		select {
		case n := <-got:
			if n != want {
				t.Fatalf("notice %q, want %q", n, want)
			}
		case <-time.After(time.Second):
			t.Fatalf("no notice %q within a second", want)
		}
	}
}

// Redis down: a vocabulary this replica read is still served, writes fail
// with ErrUnavailable and write nothing; Redis back (append-only file): the
// same client works again with nothing lost.
func TestRedisDownAndBack(t *testing.T) {
	ctx := context.Background()
	r := services.StartRedis(t)
	c, m := open(t, r)
	v := vocabularies(t, c)
	// The write's own change notice drops the local copy when it arrives:
	// wait for it, so that the read below is the copy kept.
	noticed := make(chan struct{}, 1)
	v.Watch(func(name, _ string) {
		if name == "kept" {
			select {
			case noticed <- struct{}{}:
			default:
			}
		}
	})
	if _, _, err := v.Put(ctx, "kept", spec, "e1", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-noticed:
	case <-time.After(5 * time.Second):
		t.Fatal("no change notice for the write")
	}
	if _, err := v.Get(ctx, "kept"); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if e, err := v.Get(ctx, "kept"); err != nil || e.ETag != "e1" {
		t.Fatalf("read while down: %+v %v", e, err)
	}
	if _, err := v.Get(ctx, "never-read"); !errors.Is(err, vocabulary.ErrUnavailable) {
		t.Fatalf("unknown vocabulary while down: %v", err)
	}
	if _, _, err := v.Put(ctx, "lost", spec, "e9", ""); !errors.Is(err, vocabulary.ErrUnavailable) {
		t.Fatalf("write while down: %v", err)
	}
	if err := c.Ping(ctx); err == nil {
		t.Fatal("ping answered while down")
	}
	if n := testutil.ToFloat64(m.errors.WithLabelValues("vocabularies", "put")); n < 1 {
		t.Fatalf("store errors counted %v", n)
	}
	r.Restart()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("no recovery without a restart: %v", err)
	}
	if e, err := v.Get(ctx, "kept"); err != nil || e.ETag != "e1" {
		t.Fatalf("after the restart: %+v %v", e, err)
	}
	if _, err := v.Get(ctx, "lost"); !errors.Is(err, vocabulary.ErrNotFound) {
		t.Fatalf("the failed write left %v", err)
	}
}

func randomRegions(n, dt, di int) *detector.Regions {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	r := &detector.Regions{Width: 640, Height: 480}
	for range n {
		r.Boxes = append(r.Boxes, [4]float32{rng.Float32(), rng.Float32(), rng.Float32(), rng.Float32()})
		t, im := make([]float32, dt), make([]float32, di)
		for i := range t {
			t[i] = rng.Float32()
		}
		for i := range im {
			im[i] = rng.Float32()
		}
		r.TextEmbeddings = append(r.TextEmbeddings, t)
		r.ImageEmbeddings = append(r.ImageEmbeddings, im)
	}
	return r
}

func TestRegionsEncoding(t *testing.T) {
	withFeatures := randomRegions(2, 3, 3)
	withFeatures.Features = &detector.Features{ScaleX: 0.64, ScaleY: 0.5, Levels: []detector.FeatureLevel{
		{Stride: 4, Channels: 2, Height: 3, Width: 2, Data: []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{Stride: 8, Channels: 2, Height: 1, Width: 1, Data: []float32{-1, 0.5}}}}
	withCrops := randomRegions(5, 4, 4)
	withCrops.CropEmbeddings = randomRegions(3, 4, 4).TextEmbeddings
	for _, r := range []*detector.Regions{randomRegions(300, 512, 512), randomRegions(1, 3, 3), {Width: 5, Height: 7}, withFeatures, withCrops} {
		b := EncodeRegions(r)
		got, err := DecodeRegions(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Boxes) == 0 {
			got.Boxes = nil
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("%d regions: round trip differs", len(r.Boxes))
		}
		for _, cut := range []int{0, 3, 23, len(b) - 1, len(b) - 9} {
			if cut < len(b) {
				if _, err := DecodeRegions(b[:cut]); err == nil {
					t.Fatalf("%d bytes of %d decoded", cut, len(b))
				}
			}
		}
	}
}

// A session stored before regions carried crop embeddings (format version 1:
// no crop count and dimension in the header) still decodes.
func TestRegionsEncodingVersion1(t *testing.T) {
	r := randomRegions(4, 3, 3)
	b := EncodeRegions(r)
	v1 := append(append([]byte{'v', 'r', 'g', 1}, b[4:24]...), b[32:]...)
	got, err := DecodeRegions(v1)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("version 1: %v, equal %v", err, reflect.DeepEqual(got, r))
	}
	for _, bad := range [][]byte{append([]byte{'v', 'r', 'g', 3}, b[4:]...), append([]byte{'v', 'r', 'g', 0}, b[4:]...)} {
		if _, err := DecodeRegions(bad); err == nil {
			t.Fatalf("version %d decoded", bad[3])
		}
	}
	withCrops := randomRegions(2, 3, 3)
	withCrops.CropEmbeddings = randomRegions(3, 3, 3).TextEmbeddings // more crops than regions
	if _, err := DecodeRegions(EncodeRegions(withCrops)); err == nil {
		t.Fatal("3 crop embeddings of 2 regions decoded")
	}
}

func TestSessions(t *testing.T) {
	ctx := context.Background()
	c, _ := open(t, services.StartRedis(t))
	s := c.Sessions(time.Second)
	reg := randomRegions(50, 8, 8)
	id, exp, err := s.Create(ctx, reg)
	if err != nil || len(id) != 32 || time.Until(exp) > time.Second {
		t.Fatalf("create %q %v %v", id, exp, err)
	}
	got, gexp, err := s.Get(ctx, id)
	if err != nil || !reflect.DeepEqual(got, reg) || gexp.Sub(exp).Abs() > 200*time.Millisecond {
		t.Fatalf("get: %v, expiry %v vs %v", err, gexp, exp)
	}
	if err := s.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, id); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	id, _, _ = s.Create(ctx, reg)
	time.Sleep(1200 * time.Millisecond)
	if _, _, err := s.Get(ctx, id); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("after the TTL: %v", err)
	}
}

func TestEmbeddingsCacheMissesWhileDown(t *testing.T) {
	r := services.StartRedis(t)
	c, m := open(t, r)
	e := c.Embeddings()
	bucket := []byte("sha256:x/templates:y")
	if err := e.Put(bucket, "mug", []float32{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.Get(bucket, "mug", 3); err != nil || !reflect.DeepEqual(got, []float32{1, 2, 3}) {
		t.Fatalf("get %v %v", got, err)
	}
	if got, _ := e.Get(bucket, "mug", 4); got != nil {
		t.Fatalf("wrong dimension served: %v", got)
	}
	r.Kill()
	if got, err := e.Get(bucket, "mug", 3); got != nil || err != nil {
		t.Fatalf("while down: %v %v, want a miss", got, err)
	}
	if err := e.Put(bucket, "cup", []float32{1, 2, 3}); err != nil {
		t.Fatalf("put while down: %v", err)
	}
	if n := testutil.ToFloat64(m.errors.WithLabelValues("embeddings", "get")); n != 1 {
		t.Fatalf("embedding errors %v, want 1", n)
	}
}
