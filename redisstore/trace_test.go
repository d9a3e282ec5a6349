package redisstore

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vild/vild/internal/services"
)

// A store call under a recording span is a client span under it; with no
// span in the context it makes none.
func TestStoreCallsAreSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })
	c, _ := open(t, services.StartRedis(t))
	s := vocabularies(t, c)

	if _, _, err := s.Put(context.Background(), "plain", spec, "e1", ""); err != nil {
		t.Fatal(err)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans without a request span", n)
	}
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	if _, err := s.Get(ctx, "plain"); err != nil {
		t.Fatal(err)
	}
	parent.End()
	var found bool
	for _, sp := range exp.GetSpans() {
		if sp.Name == "redis vocabularies.get" {
			found = true
			if sp.Parent.SpanID() != parent.SpanContext().SpanID() || sp.SpanKind != trace.SpanKindClient {
				t.Errorf("store span: parent %s kind %v", sp.Parent.SpanID(), sp.SpanKind)
			}
		}
	}
	if !found {
		t.Errorf("no redis vocabularies.get span: %v", exp.GetSpans())
	}
}
