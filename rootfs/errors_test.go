package rootfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

// TestRegistryTransportErrorsAreTyped: a plain-HTTP registry and an
// unverifiable certificate are sentinels a caller decides on, in words
// that name no command-line flag (the CLI adds --insecure).
func TestRegistryTransportErrorsAreTyped(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
		kind error
		word string
	}{
		{"plain HTTP", false, ErrPlainHTTP, "speaks plain HTTP"},
		{"untrusted certificate", true, ErrUntrustedCert, "cannot be verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := ParseRef(testenv.Registry404On127002(t, tc.tls) + "/x:1")
			if err != nil {
				t.Fatal(err)
			}
			_, err = newStore(t).Pull(context.Background(), ref, PullOptions{})
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.word) || strings.Contains(err.Error(), "--") {
				t.Errorf("err = %v, want %v saying %q and naming no flag", err, tc.kind, tc.word)
			}
		})
	}
}

// TestStoreDirErrorIsTyped: a store that cannot be created is
// ErrStoreDir, naming no flag.
func TestStoreDirErrorIsTyped(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenStore(filepath.Join(file, "store"))
	if !errors.Is(err, ErrStoreDir) || !strings.Contains(err.Error(), "not a directory") || strings.Contains(err.Error(), "--") {
		t.Errorf("err = %v, want ErrStoreDir with the cause, naming no flag", err)
	}
}
