// Package web is vild's browser page: pick or drop an image, type categories,
// see boxes and labels drawn over it. Plain HTML, CSS and JavaScript, no build
// step and no CDN, embedded in the binary and served at /.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static/*.html static/*.js static/*.css static/samples/*.png
var static embed.FS

// FS returns the page's files (index.html at the root).
func FS() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}
