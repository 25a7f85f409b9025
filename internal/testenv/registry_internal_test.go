package testenv

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A port taken between picking it and the registry's bind must cost a
// retry, not the test.
func TestRegistryRetriesWhenPortTaken(t *testing.T) {
	RequireTool(t, "docker-registry")
	cases := []struct {
		name  string
		serve func(l net.Listener) *http.Server
	}{
		// Something that accepts but is not a registry.
		{"silent listener", func(net.Listener) *http.Server { return nil }},
		// Worst case: another registry-looking server answers /v2/ with 200
		// while ours dies of EADDRINUSE; we must not mistake it for ours.
		{"impostor registry", func(l net.Listener) *http.Server {
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
				w.WriteHeader(http.StatusOK)
			})}
			go srv.Serve(l)
			return srv
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := tc.serve(taken)
			t.Cleanup(func() {
				if srv != nil {
					srv.Close()
				} else {
					taken.Close()
				}
			})

			var mu sync.Mutex
			calls := 0
			orig := pickRegistryAddr
			pickRegistryAddr = func() (string, error) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				if calls == 1 {
					return taken.Addr().String(), nil
				}
				return orig()
			}
			t.Cleanup(func() { pickRegistryAddr = orig })

			start := time.Now()
			addr := Registry(t)
			if addr == taken.Addr().String() {
				t.Fatalf("Registry returned the taken address %s", addr)
			}
			if calls != 2 {
				t.Fatalf("picked an address %d times, want 2", calls)
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Fatalf("retry took %v", el)
			}
			if err := probeV2(t.Context(), &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+addr+"/v2/"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRegistryConfigOverridesIgnored(t *testing.T) {
	RequireTool(t, "docker-registry")
	// Would make every request 401 if it reached the registry.
	t.Setenv("REGISTRY_AUTH", "htpasswd")
	t.Setenv("REGISTRY_AUTH_HTPASSWD_REALM", "x")
	t.Setenv("REGISTRY_AUTH_HTPASSWD_PATH", "/nonexistent")
	addr := Registry(t)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("addr %q", addr)
	}
}
