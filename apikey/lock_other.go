//go:build !unix

package apikey

// lockFile is a no-op where advisory locks are not available: concurrent
// `vild keys` commands on one file may then lose one of two writes.
func lockFile(path string) (unlock func(), err error) { return func() {}, nil }
