package pct

import (
	"net/url"
	"strings"
	"testing"
)

// TestRemoteFormLine: a printed request line quotes values with anything
// not printable (C0 and C1 controls, a bidi override, invalid UTF-8), so
// that a description cannot drive the terminal or disguise the line, and
// shows the environment's names without their values, as the password.
func TestRemoteFormLine(t *testing.T) {
	for _, val := range []string{"a\x1b]0;x\x07b", "a\u0085b", "a\u202eb", "a\xffb", "a\x7fb"} {
		got := formLine("PUT", "/nodes/pve/lxc/100/config", []string{"description"}, url.Values{"description": {val}})
		if strings.ContainsAny(got, "\x1b\x07\u0085\u202e\x7f") || strings.Contains(got, "\xff") || !strings.Contains(got, `description="a\`) {
			t.Errorf("%q is shown as %q", val, got)
		}
	}
	if got := formLine("PUT", "/x", []string{"hostname"}, url.Values{"hostname": {"web"}}); got != "PUT /api2/json/x hostname=web" {
		t.Errorf("a plain value: %q", got)
	}
	got := formLine("POST", "/nodes/pve/lxc", []string{"env", "password"}, url.Values{"env": {"DB_PASSWORD=s3cret\x00MODE=one=two"}, "password": {hiddenValue}})
	if want := `POST /api2/json/nodes/pve/lxc env="DB_PASSWORD=(not shown)\x00MODE=(not shown)" password=(not shown)`; got != want {
		t.Errorf("env shown as %q, want %q", got, want)
	}
	for in, want := range map[string]string{
		"lxc.environment.runtime: TOKEN=abc": "lxc.environment.runtime: TOKEN=(not shown)",
		"lxc.environment: TOKEN=abc":         "lxc.environment: TOKEN=(not shown)",
		"lxc.init.cwd: /app":                 "lxc.init.cwd: /app",
	} {
		if got := hiddenRawLine(in); got != want {
			t.Errorf("hiddenRawLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRemoteNodeNames: node names the API gives must be PVE's
// (pve_verify_node_name): they are printed in request lines and errors.
func TestRemoteNodeNames(t *testing.T) {
	for _, n := range []string{"pve", "pve-2", "N1", "a"} {
		if err := checkNodeName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", "-pve", "pve-", "pve.example", "pve\x1b[2J", "pve\u202e", "pve/../x", "pve node"} {
		err := checkNodeName(n)
		if err == nil {
			t.Errorf("%q was accepted", n)
		} else if strings.ContainsAny(err.Error(), "\x1b\u202e") {
			t.Errorf("%q: the error %q carries it raw", n, err)
		}
	}
}
