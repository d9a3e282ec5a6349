package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vild/vild/redisstore"
	"github.com/vild/vild/session"
	"github.com/vild/vild/textbank"
	"github.com/vild/vild/vocabulary"
)

// stores are where serve keeps its state (--store).
type stores struct {
	vocabularies vocabulary.Store
	sessions     session.Store                   // nil: in memory
	embeddings   textbank.Store                  // nil: the bbolt file in the data directory
	check        func(ctx context.Context) error // nil: nothing shared to check
	close        func() error
}

// openStores opens the file store (file://DIR: vocabularies as files, the
// embedding cache in bbolt, sessions in memory) or Redis (redis://, rediss://:
// all three shared by every replica that names the same Redis).
func openStores(ctx context.Context, cfg serveConfig, reg prometheus.Registerer) (*stores, error) {
	if strings.HasPrefix(cfg.Store, "file://") {
		vs, err := vocabulary.OpenFileStore(filepath.Join(cfg.Model.DataDir, "vocabularies"))
		if err != nil {
			return nil, err
		}
		return &stores{vocabularies: vs, close: func() error { return nil }}, nil
	}
	c, err := redisstore.Open(ctx, cfg.Store, redisstore.NewMetrics(reg))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	vs := c.Vocabularies(ctx)
	return &stores{
		vocabularies: vs,
		sessions:     c.Sessions(cfg.API.SessionTTL),
		embeddings:   c.Embeddings(),
		check:        c.Ping,
		close:        func() error { return errors.Join(vs.Close(), c.Close()) },
	}, nil
}
