package apikey_test

import (
	"path/filepath"
	"testing"

	"github.com/vild/vild/apikey"
	"github.com/vild/vild/apikey/apikeytest"
)

func TestMemoryStoreContract(t *testing.T) { apikeytest.StoreContract(t, apikey.NewMemory()) }

func TestFileStoreContract(t *testing.T) {
	s, err := apikey.OpenFileStore(filepath.Join(t.TempDir(), apikey.FileName))
	if err != nil {
		t.Fatal(err)
	}
	apikeytest.StoreContract(t, s)
}
