package admission

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// One worker, one waiting place: a third request fails fast, the waiting one
// times out after maxWait, and the gauges return to zero.
func TestQueueFullThenTimeout(t *testing.T) {
	waiting, running := prometheus.NewGauge(prometheus.GaugeOpts{Name: "w"}), prometheus.NewGauge(prometheus.GaugeOpts{Name: "r"})
	q := New(1, 1, 50*time.Millisecond, Gauges{Waiting: waiting, Running: running})
	hold, started := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := q.Do(context.Background(), func(context.Context) error { close(started); <-hold; return nil })
		done <- err
	}()
	<-started
	waited := make(chan error)
	go func() {
		_, err := q.Do(context.Background(), func(context.Context) error { return nil })
		waited <- err
	}()
	deadline := time.Now().Add(time.Second)
	for testutil.ToFloat64(waiting) != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := q.Do(context.Background(), func(context.Context) error { return nil }); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third request: %v, want ErrQueueFull", err)
	}
	if err := <-waited; !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("waiting request: %v, want ErrQueueTimeout", err)
	}
	if v := testutil.ToFloat64(running); v != 1 {
		t.Fatalf("running %v, want 1", v)
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w, r := testutil.ToFloat64(waiting), testutil.ToFloat64(running); w != 0 || r != 0 {
		t.Fatalf("gauges %v %v after the work, want 0 0", w, r)
	}
}

// A canceled request leaves the queue without running.
func TestCanceledWhileWaiting(t *testing.T) {
	q := New(1, 1, time.Minute, Gauges{})
	hold, started := make(chan struct{}), make(chan struct{})
	go q.Do(context.Background(), func(context.Context) error { close(started); <-hold; return nil })
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ran := false
	if _, err := q.Do(ctx, func(context.Context) error { ran = true; return nil }); !errors.Is(err, context.DeadlineExceeded) || ran {
		t.Fatalf("err %v ran %v", err, ran)
	}
	close(hold)
}
