package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vild/vild/apikey"
	"github.com/vild/vild/redisstore"
)

const keysUsage = `usage: vild keys create --name NAME --scopes detect[,vocabularies:write][,admin] [--rps N] [--burst N] [--max-concurrent N]
       vild keys list
       vild keys revoke NAME
each with [--data-dir DIR] [--store URL], as vild serve uses them (VILD_DATA_DIR, VILD_STORE)`

func runKeys(ctx context.Context, args []string, stdout io.Writer) error {
	return keysCommand(ctx, args, os.Getenv, stdout, os.Stderr)
}

// keysCommand is vild keys: create, list and revoke API keys in the store
// vild serve --auth keys reads (the keys file of the data directory, or
// Redis). The token is printed once, alone on its line of stdout; what is
// stored is its hash.
func keysCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(keysUsage)
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprintln(stderr, keysUsage)
		return flag.ErrHelp
	}
	sub, args := args[0], args[1:]
	env := &envSource{get: getenv}
	fs := flag.NewFlagSet("vild keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", env.str("VILD_DATA_DIR", defaultDataDir()), "the data directory of vild serve: the keys file is DIR/"+apikey.FileName+" (VILD_DATA_DIR)")
	storeURL := fs.String("store", env.str("VILD_STORE", ""), "where vild serve keeps its state: file://DIR or redis://… (VILD_STORE); keys live there")
	var name, scopes string
	var rps float64
	var burst, maxConcurrent int
	switch sub {
	case "create":
		fs.StringVar(&name, "name", "", "the key's `NAME` (1–64 of A–Z a–z 0–9 . _ -), unique")
		fs.StringVar(&scopes, "scopes", "", "comma-separated: detect, vocabularies:write, admin (all)")
		fs.Float64Var(&rps, "rps", 0, "requests per second (0 = unlimited; not given: the server's --key-rps)")
		fs.IntVar(&burst, "burst", 0, "requests at once above the rate (0 = the rate rounded up; not given: the server's --key-burst)")
		fs.IntVar(&maxConcurrent, "max-concurrent", 0, "concurrent inferences (0 = unlimited; not given: the server's --key-max-concurrent)")
	case "list", "revoke":
	default:
		return fmt.Errorf("keys: unknown command %q\n%s", sub, keysUsage)
	}
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		rest, args = append(rest, args[0]), args[1:]
	}
	if err := errors.Join(env.errs...); err != nil {
		return err
	}
	store, closeStore, err := openKeyStore(ctx, *storeURL, *dataDir)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer closeStore()

	switch sub {
	case "create":
		if len(rest) > 0 {
			return fmt.Errorf("keys create: unexpected argument %q (the name is --name)", rest[0])
		}
		sc, err := apikey.ParseScopes(scopes)
		if err != nil {
			return fmt.Errorf("keys create: --scopes: %w", err)
		}
		var limits apikey.KeyLimits
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "rps":
				limits.RPS = &rps
			case "burst":
				limits.Burst = &burst
			case "max-concurrent":
				limits.MaxConcurrent = &maxConcurrent
			}
		})
		token, k, err := apikey.New(name, sc, limits, time.Now())
		if err != nil {
			return fmt.Errorf("keys create: %w", err)
		}
		if err := store.Create(ctx, k); err != nil {
			return fmt.Errorf("keys create: %w", err)
		}
		fmt.Fprintf(stderr, "vild: key %q made (scopes %s; %s). Its token follows, shown this once: keep it secret.\n",
			k.Name, joinScopes(k.Scopes), k.Limits)
		_, err = fmt.Fprintln(stdout, token)
		return err
	case "list":
		if len(rest) > 0 {
			return fmt.Errorf("keys list: unexpected argument %q", rest[0])
		}
		keys, err := store.List(ctx)
		if err != nil {
			return fmt.Errorf("keys list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSCOPES\tCREATED\tLIMITS")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, joinScopes(k.Scopes), k.Created.UTC().Format(time.RFC3339), k.Limits)
		}
		return tw.Flush()
	default: // revoke
		if len(rest) != 1 {
			return errors.New("keys revoke: give the key's NAME: vild keys revoke NAME")
		}
		if err := store.Revoke(ctx, rest[0]); err != nil {
			return fmt.Errorf("keys revoke: %w", err)
		}
		fmt.Fprintf(stderr, "vild: key %q revoked; servers refuse it within a second\n", rest[0])
		return nil
	}
}

func joinScopes(s []apikey.Scope) string {
	parts := make([]string, len(s))
	for i, sc := range s {
		parts[i] = string(sc)
	}
	return strings.Join(parts, ",")
}

// openKeyStore opens the keys of --store / --data-dir as vild serve does.
func openKeyStore(ctx context.Context, rawStore, dataDir string) (apikey.Store, func(), error) {
	store, dir, err := resolveStore(rawStore, dataDir)
	if err != nil {
		return nil, nil, err
	}
	if strings.HasPrefix(store, "file://") {
		s, err := apikey.OpenFileStore(filepath.Join(dir, apikey.FileName))
		return s, func() {}, err
	}
	c, err := redisstore.Open(ctx, store, nil)
	if err != nil {
		return nil, nil, err
	}
	return c.APIKeys(), func() { c.Close() }, nil
}
