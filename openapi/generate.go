package openapi

// The spec is generated from the annotations in package handlers by the
// pinned swag CLI, then converted to OpenAPI 3.0 (openapi3.json) by
// kin-openapi's openapi2conv; TestSpecUpToDate and TestV3UpToDate fail when
// the committed files drift.
//go:generate go run github.com/swaggo/swag/cmd/swag@v1.16.6 init --quiet -g handlers.go -d ../handlers,../api,../vocabulary,../detector,../labelstudio -o . --packageName openapi --outputTypes go,json,yaml
//go:generate go run ./internal/v3convert swagger.json openapi3.json

// SwagVersion is the swag release the spec is generated with.
const SwagVersion = "v1.16.6"

// SwagDirs are the packages whose annotations and types the spec is made of.
const SwagDirs = "../handlers,../api,../vocabulary,../detector,../labelstudio"
