// Command v3convert writes the OpenAPI 3.0 form of the Swagger 2.0 spec that
// swag generates: `go run ./internal/v3convert swagger.json openapi3.json`
// (openapi/generate.go). The conversion is kin-openapi's openapi2conv; the
// result is checked against OpenAPI 3 before it is written.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/vild/vild/openapi/internal/convert"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "v3convert:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: v3convert SWAGGER.json OPENAPI3.json")
	}
	v2, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	out, err := convert.ToV3(v2)
	if err != nil {
		return err
	}
	doc, err := openapi3.NewLoader().LoadFromData(out)
	if err != nil {
		return err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return fmt.Errorf("the converted spec is not valid OpenAPI 3: %w", err)
	}
	return os.WriteFile(args[1], out, 0o644)
}
