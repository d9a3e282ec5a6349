// Command vild is the open-vocabulary object detection server and its tools:
//
//	vild serve   [--addr HOST:PORT] [--model DIR] [--metrics-addr HOST:PORT] [--ort-lib PATH] …
//	vild detect  IMAGE|DIR... --categories "a,b,c" [--out annotated.png | results.json | results.jsonl]
//	vild eval    --annotations COCO.json --images DIR | --results results.json
//	vild calibration --annotations COCO.json --images DIR [--sizes 10,100,all] [--scores stable,softmax]
//	vild exemplars-eval --annotations COCO.json --images DIR --pool-annotations COCO.json --pool-images DIR
//	vild keys    create --name NAME --scopes detect[,vocabularies:write][,admin] | list | revoke NAME
//	vild version
//
// Every flag of serve also reads an environment variable (VILD_ADDR, …);
// `vild serve -h` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "vild:", err)
		os.Exit(1)
	}
}

// command is one subcommand: it parses its own flags from args.
type command func(ctx context.Context, args []string, stdout io.Writer) error

// commands lists the subcommands. `eval` lives in eval.go.
var commands = map[string]command{
	"serve":  runServe,
	"detect": runDetect,
	"eval":   runEval,
	// scores across vocabulary sizes (docs/evaluation.md "Calibration")
	"calibration": runCalibration,
	// exemplar categories against names (docs/exemplars.md)
	"exemplars-eval": runExemplarsEval,
	"version":        runVersion,
	"keys":           runKeys,
}

func usage() string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return "usage: vild <" + strings.Join(names, "|") + "> [flags]; vild <command> -h for its flags"
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage())
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return fmt.Errorf("unknown command %q; %s", args[0], usage())
	}
	return cmd(ctx, args[1:], stdout)
}

func runVersion(ctx context.Context, args []string, stdout io.Writer) error {
	_, err := fmt.Fprintln(stdout, "vild", version)
	return err
}
