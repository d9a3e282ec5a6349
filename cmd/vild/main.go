// Command vild is the open-vocabulary object detection server and its tools.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vild:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: vild <serve|detect|eval|version>")
	}
	switch args[0] {
	case "version":
		_, err := fmt.Fprintln(stdout, "vild", version)
		return err
	default:
		return fmt.Errorf("unknown command %q; usage: vild <serve|detect|eval|version>", args[0])
	}
}
