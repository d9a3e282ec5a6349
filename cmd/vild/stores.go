package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vild/vild/apikey"
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
	// keys and limiter, with --auth keys: the keys file in the data
	// directory and a limiter in this process, or both in Redis.
	keys    apikey.Store
	limiter apikey.Limiter
}

// keysLeaseMargin, past the request deadline, bounds how long a replica that died holds a key's concurrent
// place in Redis: longer than any request.
const keysLeaseMargin = 5 * time.Second

// openStores opens the file store (file://DIR: vocabularies as files, the
// embedding cache in bbolt, sessions in memory) or Redis (redis://, rediss://:
// all three shared by every replica that names the same Redis).
func openStores(ctx context.Context, cfg serveConfig, reg prometheus.Registerer) (*stores, error) {
	if strings.HasPrefix(cfg.Store, "file://") {
		vs, err := vocabulary.OpenFileStore(filepath.Join(cfg.Model.DataDir, "vocabularies"))
		if err != nil {
			return nil, err
		}
		st := &stores{vocabularies: vs, close: func() error { return nil }}
		if cfg.Auth == "keys" {
			if st.keys, err = apikey.OpenFileStore(filepath.Join(cfg.Model.DataDir, apikey.FileName)); err != nil {
				return nil, err
			}
			st.limiter = apikey.NewLocal()
		}
		return st, nil
	}
	c, err := redisstore.Open(ctx, cfg.Store, redisstore.NewMetrics(reg))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	vs := c.Vocabularies(ctx)
	st := &stores{
		vocabularies: vs,
		sessions:     c.Sessions(cfg.API.SessionTTL),
		embeddings:   c.Embeddings(),
		check:        c.Ping,
		close:        func() error { return errors.Join(vs.Close(), c.Close()) },
	}
	if cfg.Auth == "keys" {
		st.keys, st.limiter = c.APIKeys(), c.Limiter(cfg.API.RequestTimeout+keysLeaseMargin)
	}
	return st, nil
}
