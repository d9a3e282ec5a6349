package observe

import (
	"context"
	"fmt"
	"net/url"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// ExportTraces makes otel's global tracer provider export every span over
// OTLP/HTTP to endpoint (a URL such as http://collector:4318; its path
// defaults to /v1/traces), in batches, and sets the W3C trace-context
// propagator. Sampling follows the caller's traceparent (parent-based, always
// on for a root). shutdown flushes what is pending. Without a call the global
// provider is otel's no-op one.
func ExportTraces(ctx context.Context, endpoint string) (shutdown func(context.Context) error, err error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("observe: OTLP endpoint: %w", err)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces" // the OTLP/HTTP default, which WithEndpointURL does not add
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return nil, fmt.Errorf("observe: OTLP exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "vild"))))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return tp.Shutdown, nil
}
