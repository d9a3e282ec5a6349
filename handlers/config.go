package handlers

import (
	"errors"
	"fmt"
	"time"

	"github.com/vild/vild/apikey"
)

// Config holds every limit of the HTTP layer. Zero fields take the defaults
// below (DefaultConfig); docs/api.md lists them and must match.
type Config struct {
	// MaxBodyBytes caps raw and multipart bodies of POST /v1/detect and POST /v1/images.
	MaxBodyBytes int64
	// MaxJSONImageBytes caps JSON bodies that carry base64 images: detection, and vocabularies with exemplars (4/3 of MaxBodyBytes plus room).
	MaxJSONImageBytes int64
	// MaxJSONBytes caps JSON bodies without images (embeddings, re-scoring).
	MaxJSONBytes int64
	// MaxParts caps the parts of a multipart body.
	MaxParts int
	// MaxPartHeaderBytes caps a multipart part's header block.
	MaxPartHeaderBytes int
	// MaxCategories caps the names of one request (categories + synonyms + negatives).
	MaxCategories int
	// MaxVocabularyCategories caps the names of a stored vocabulary.
	MaxVocabularyCategories int
	// MaxCategoryLength caps one name, in characters.
	MaxCategoryLength int
	// MaxBatch caps the images of one JSON request.
	MaxBatch int
	// MaxImageSide and MaxImagePixels are the decoder's limits, reported in errors.
	MaxImageSide   int
	MaxImagePixels int
	// MaxDetections caps the detections of one image.
	MaxDetections int
	// MaxRunnersUp caps the runner-up labels of one detection.
	MaxRunnersUp int
	// MaxLabelsPerBox caps the labels one region may be reported with.
	MaxLabelsPerBox int
	// RequestTimeout bounds a request, queue time included.
	RequestTimeout time.Duration
	// Workers is the number of concurrent inferences.
	Workers int
	// QueueLength is how many requests may wait for a worker; more fail fast with 503.
	QueueLength int
	// MaxQueueWait is how long a request may wait for a worker before a 503.
	MaxQueueWait time.Duration
	// RetryAfterSeconds is the Retry-After sent with 503s.
	RetryAfterSeconds int
	// MaxSessions and SessionTTL bound the image-session cache (LRU with expiry).
	MaxSessions int
	SessionTTL  time.Duration
	// VocabularyCacheSize bounds the embedded vocabularies kept in memory.
	VocabularyCacheSize int
	// KeyRPS, KeyBurst and KeyMaxConcurrent are the limits of an API key
	// that sets none of its own (Deps.Keys): requests per second with a
	// burst, and concurrent inferences; 0 = unlimited (burst 0: the rate
	// rounded up).
	KeyRPS           float64
	KeyBurst         int
	KeyMaxConcurrent int
}

// keyLimits are the default limits of an API key.
func (c Config) keyLimits() apikey.Limits {
	return apikey.Limits{RPS: c.KeyRPS, Burst: c.KeyBurst, MaxConcurrent: c.KeyMaxConcurrent}
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:            20 << 20,
		MaxJSONImageBytes:       28 << 20,
		MaxJSONBytes:            4 << 20,
		MaxParts:                8,
		MaxPartHeaderBytes:      16 << 10,
		MaxCategories:           1000,
		MaxVocabularyCategories: 10000,
		MaxCategoryLength:       128,
		MaxBatch:                8,
		MaxImageSide:            16384,
		MaxImagePixels:          40_000_000,
		MaxDetections:           300,
		MaxRunnersUp:            5,
		MaxLabelsPerBox:         20,
		RequestTimeout:          10 * time.Second,
		Workers:                 1,
		QueueLength:             4,
		MaxQueueWait:            2 * time.Second,
		RetryAfterSeconds:       1,
		MaxSessions:             128,
		SessionTTL:              15 * time.Minute,
		VocabularyCacheSize:     64,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	set64 := func(v *int64, dv int64) {
		if *v == 0 {
			*v = dv
		}
	}
	setD := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	set64(&c.MaxBodyBytes, d.MaxBodyBytes)
	set64(&c.MaxJSONImageBytes, d.MaxJSONImageBytes)
	set64(&c.MaxJSONBytes, d.MaxJSONBytes)
	set(&c.MaxParts, d.MaxParts)
	set(&c.MaxPartHeaderBytes, d.MaxPartHeaderBytes)
	set(&c.MaxCategories, d.MaxCategories)
	set(&c.MaxVocabularyCategories, d.MaxVocabularyCategories)
	set(&c.MaxCategoryLength, d.MaxCategoryLength)
	set(&c.MaxBatch, d.MaxBatch)
	set(&c.MaxImageSide, d.MaxImageSide)
	set(&c.MaxImagePixels, d.MaxImagePixels)
	set(&c.MaxDetections, d.MaxDetections)
	set(&c.MaxRunnersUp, d.MaxRunnersUp)
	set(&c.MaxLabelsPerBox, d.MaxLabelsPerBox)
	setD(&c.RequestTimeout, d.RequestTimeout)
	set(&c.Workers, d.Workers)
	if c.QueueLength == 0 {
		c.QueueLength = 4 * c.Workers
	}
	setD(&c.MaxQueueWait, d.MaxQueueWait)
	set(&c.RetryAfterSeconds, d.RetryAfterSeconds)
	set(&c.MaxSessions, d.MaxSessions)
	setD(&c.SessionTTL, d.SessionTTL)
	set(&c.VocabularyCacheSize, d.VocabularyCacheSize)
	return c
}

// Validate rejects negative or inconsistent limits.
func (c Config) Validate() error {
	var errs []error
	pos := func(name string, v int64) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", name, v))
		}
	}
	pos("max body bytes", c.MaxBodyBytes)
	pos("max JSON image bytes", c.MaxJSONImageBytes)
	pos("max JSON bytes", c.MaxJSONBytes)
	pos("max parts", int64(c.MaxParts))
	pos("max categories", int64(c.MaxCategories))
	pos("max category length", int64(c.MaxCategoryLength))
	pos("max batch", int64(c.MaxBatch))
	pos("max detections", int64(c.MaxDetections))
	pos("workers", int64(c.Workers))
	pos("queue length", int64(c.QueueLength))
	pos("request timeout", int64(c.RequestTimeout))
	pos("max queue wait", int64(c.MaxQueueWait))
	pos("max sessions", int64(c.MaxSessions))
	if c.KeyRPS < 0 || c.KeyBurst < 0 || c.KeyMaxConcurrent < 0 {
		errs = append(errs, errors.New("key limits must not be negative (0 = unlimited)"))
	}
	if c.MaxVocabularyCategories < c.MaxCategories {
		errs = append(errs, fmt.Errorf("max vocabulary categories (%d) must be at least max categories (%d)",
			c.MaxVocabularyCategories, c.MaxCategories))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("handlers: config: %w", err)
	}
	return nil
}
