package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vild/vild/detector"
)

func TestMemoryStore(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(2, time.Minute)
	var ids []string
	for i := 0; i < 3; i++ {
		id, exp, err := m.Create(ctx, &detector.Regions{Width: i})
		if err != nil || len(id) != 32 || time.Until(exp) <= 0 {
			t.Fatalf("create: %q %v %v", id, exp, err)
		}
		ids = append(ids, id)
	}
	if _, _, err := m.Get(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("oldest of three in a store of two: %v", err)
	}
	if r, _, err := m.Get(ctx, ids[2]); err != nil || r.Width != 2 {
		t.Fatalf("newest: %+v %v", r, err)
	}
	if err := m.Delete(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, ids[2]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if m.Len() != 1 {
		t.Fatalf("len %d", m.Len())
	}
}
