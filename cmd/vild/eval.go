package main

import (
	"context"
	"errors"
	"io"
)

// runEval is the hook for `vild eval --annotations COCO.json --images DIR`
// (COCO-style AP/AP50 for novel, base and all categories, issue 4 item 6);
// replace this file with the implementation.
func runEval(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("eval: not implemented in this build yet")
}
