package rootfs

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// registryOn127002 serves a registry that answers 404 to everything on
// 127.0.0.2, which the registry client does not treat as loopback (it
// speaks HTTPS to it), over TLS or plain HTTP.
func registryOn127002(t *testing.T, tls bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2 (%v): these cases need a second loopback address", err)
	}
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.Listener.Close()
	srv.Listener = l
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return l.Addr().String()
}

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
			ref, err := ParseRef(registryOn127002(t, tc.tls) + "/x:1")
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
