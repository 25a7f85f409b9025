package pveapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/nexcage/nexcage/pveapi"
)

// A stand-in for a PVE node: a few API paths answering in PVE's envelope.
func fakeNode() *httptest.Server {
	const upid = "UPID:pve:00001234:00005678:65F0A1B2:vzcreate:105:deploy@pve!ci:"
	answer := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"data": v})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api2/json/version", func(w http.ResponseWriter, r *http.Request) {
		answer(w, map[string]string{"version": "9.1.2", "release": "9.1"})
	})
	mux.HandleFunc("GET /api2/json/cluster/nextid", func(w http.ResponseWriter, r *http.Request) { answer(w, "105") })
	mux.HandleFunc("POST /api2/json/nodes/pve/lxc", func(w http.ResponseWriter, r *http.Request) { answer(w, upid) })
	mux.HandleFunc("GET /api2/json/nodes/pve/tasks/{upid}/status", func(w http.ResponseWriter, r *http.Request) {
		answer(w, map[string]string{"status": "stopped", "exitstatus": "OK", "type": "vzcreate", "id": "105"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "PVEAPIToken=deploy@pve!ci=") {
			http.Error(w, "invalid token value!", http.StatusUnauthorized)
		}
	})
	return httptest.NewTLSServer(mux)
}

func Example() {
	node := fakeNode()
	defer node.Close()

	// PVE's certificate is self-signed: pin its fingerprint (what
	// `pvenode cert info` shows on the node).
	c, err := pveapi.New(pveapi.Config{
		URL:         node.URL,
		Token:       "deploy@pve!ci=5f8c1a4e-0000-4000-8000-000000000000",
		Fingerprint: pveapi.Fingerprint(node.Certificate()),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	// The client prints without its secret.
	fmt.Println(strings.Replace(fmt.Sprint(c), node.Listener.Addr().String(), "ADDR", 1))

	ctx := context.Background()
	v, err := c.Version(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	vmid, err := c.NextID(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	upid, err := c.CreateLXC(ctx, "pve", url.Values{
		"vmid":         {fmt.Sprint(vmid)},
		"ostemplate":   {"local:vztmpl/alpine-3.20_1_amd64.tar.zst"},
		"unprivileged": {pveapi.FormBool(true)},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err := c.WaitTask(ctx, "pve", upid)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("PVE %s: CT %d created (%s %s)\n", v.Release, vmid, st.Type, st.ExitStatus)
	// Output:
	// pveapi.Client{URL: "https://ADDR", auth: token deploy@pve!ci=<redacted>}
	// PVE 9.1: CT 105 created (vzcreate OK)
}
