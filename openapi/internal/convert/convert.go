// Package convert turns the Swagger 2.0 spec swag generates into OpenAPI 3.0
// with kin-openapi's openapi2conv (docs/decisions/0021-go-client.md says why
// not swag's own OpenAPI 3 output).
package convert

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
)

// ToV3 converts a Swagger 2.0 document (JSON) to OpenAPI 3.0 (JSON, indented,
// keys in a stable order).
func ToV3(swagger []byte) ([]byte, error) {
	var v2 openapi2.T
	if err := json.Unmarshal(swagger, &v2); err != nil {
		return nil, fmt.Errorf("convert: reading the Swagger 2.0 spec: %w", err)
	}
	v3, err := openapi2conv.ToV3(&v2)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	b, err := json.Marshal(v3)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "    "); err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}
