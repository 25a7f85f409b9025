package pct_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/internal/pvetest"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/pveapi"
)

// remoteHost is a pct.Host reached through the stand-in's API (PVE 9.1,
// nodes pve and pve2), with a token that may do anything.
func remoteHost(t *testing.T) (*pvetest.API, *pct.Host) {
	t.Helper()
	_, api, h := remoteStandIn(t)
	return api, h
}

// remoteStandIn is remoteHost with the stand-in behind the API.
func remoteStandIn(t *testing.T) (*pvetest.StandIn, *pvetest.API, *pct.Host) {
	t.Helper()
	pveoracle.Require(t)
	s := pvetest.NewStandIn(t)
	api, h := remoteOn(t, s)
	return s, api, h
}

// remoteOn is a pct.Host reached through an API started on s, whose
// server runs with env (PVE_VERSION=9.0.5 plays PVE 9.0).
func remoteOn(t *testing.T, s *pvetest.StandIn, env ...string) (*pvetest.API, *pct.Host) {
	t.Helper()
	return remoteOnOpts(t, s, pvetest.APIOptions{Env: env})
}

// remoteOnOpts is remoteOn with the server's options.
func remoteOnOpts(t *testing.T, s *pvetest.StandIn, opts pvetest.APIOptions) (*pvetest.API, *pct.Host) {
	t.Helper()
	api := s.StartAPI(t, opts)
	tok := strings.TrimPrefix(api.AddToken(t, "ci@pve!plan", map[string][]string{"/": {"*"}}), "PVEAPIToken=")
	c, err := pveapi.New(pveapi.Config{URL: api.URL, Token: tok, Fingerprint: api.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return api, pct.NewRemoteHost(c)
}

// TestRemotePlan makes plans through the API: raw LXC lines are refused
// with a *RawLinesError listing them, before any request that changes
// anything; the plan's commands are API requests without the password;
// an unknown node is refused; a plan is deployed only by its kind of
// host. Every request was judged by PVE's schema.
func TestRemotePlan(t *testing.T) {
	api, h := remoteHost(t)
	ctx := context.Background()

	_, err := pct.MakePlan(ctx, h, planTemplate(t, appTemplateConf), pct.Options{Node: "pve", RunAsRoot: true})
	var rl *pct.RawLinesError
	if !errors.As(err, &rl) || !errors.Is(err, pct.ErrInvalidArgument) {
		t.Fatalf("an app template with raw lines over the API: %v (%T)", err, err)
	}
	if got := strings.Join(rl.Lines, "\n"); !strings.Contains(got, "lxc.init.cwd: /app") || !strings.Contains(got, "lxc.signal.halt: SIGTERM") || strings.Contains(got, "lxc.environment.runtime") {
		t.Errorf("refused lines %q: want cwd and the stop signal, and no environment (an API parameter on 9.1)", rl.Lines)
	}

	const pw = "s3cret-Passw0rd"
	p, err := pct.MakePlan(ctx, h, planTemplate(t, "arch: amd64\nostype: alpine\n", "/data"), pct.Options{Node: "pve2", Hostname: "web", Password: pw, Start: true})
	if err != nil {
		t.Fatal(err)
	}
	cmds := wantCommands(t, p,
		"POST /api2/json/nodes/pve2/storage/local/upload content=vztmpl filename=app_1_amd64.tar.zst checksum-algorithm=sha256 checksum=",
		"POST /api2/json/nodes/pve2/lxc vmid=100 ostemplate=local:vztmpl/app_1_amd64.tar.zst ",
		" hostname=web ", " password=(not shown)",
		"PUT /api2/json/nodes/pve2/lxc/100/config mp0=local-lvm:8,mp=/data",
		"POST /api2/json/nodes/pve2/lxc/100/status/start",
	)
	if strings.Contains(cmds, pw) {
		t.Errorf("the password is in the plan's commands:\n%s", cmds)
	}
	if _, err := pct.Deploy(ctx, pct.OfflineHost(pct.Version{Major: 9, Minor: 1}, ""), p); !errors.Is(err, pct.ErrInvalidArgument) {
		t.Errorf("a remote plan deployed by a local host: %v", err)
	}

	_, err = pct.MakePlan(ctx, h, planTemplate(t, ""), pct.Options{Node: "pve9"})
	if !errors.Is(err, pct.ErrNotFound) || !strings.Contains(err.Error(), "it has pve, pve2") {
		t.Errorf("unknown node: %v", err)
	}
	_, err = pct.MakePlan(ctx, h, planTemplate(t, ""), pct.Options{})
	var pe *pct.Error
	if !errors.As(err, &pe) || pe.Param != "node" || !strings.Contains(err.Error(), "several nodes") {
		t.Errorf("no node on a cluster of two with local storages: %v", err)
	}

	for _, r := range api.Requests(t) {
		if r.Method != "GET" {
			t.Errorf("planning made a %s %s", r.Method, r.Path)
		}
	}
	api.CheckJudged(t)
}

// TestRemoteCreateInterrupted: a deploy interrupted (Ctrl-C) while PVE's
// create task runs does not leave the CT behind: the task is waited for
// and the CT it made destroyed again; the error names the VMID.
func TestRemoteCreateInterrupted(t *testing.T) {
	pveoracle.Require(t)
	s := pvetest.NewStandIn(t)
	api := s.StartAPI(t, pvetest.APIOptions{TaskDelay: 3 * time.Second})
	tok := strings.TrimPrefix(api.AddToken(t, "ci@pve!create", map[string][]string{"/": {"*"}}), "PVEAPIToken=")
	c, err := pveapi.New(pveapi.Config{URL: api.URL, Token: tok, Fingerprint: api.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	h := pct.NewRemoteHost(c)
	// A real rootfs: the create task must succeed, late.
	tmpl := appTemplate(t, t.TempDir(), "web", "sha256:1111", nil, lxc.Config{})
	p, err := pct.MakePlan(context.Background(), h, tmpl, pct.Options{Node: "pve", Hostname: "web"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conf := s.ConfigPath("pve", p.VMID)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Ctrl-C while the client waits for the create task (kept
		// "running" for 3 s after it made the CT): a poll of the
		// vzcreate task's status is logged once answered, so the POST
		// has returned its UPID. Watching for the config file instead
		// raced a POST still unpacking on a loaded machine.
		for ctx.Err() == nil {
			if b, err := os.ReadFile(api.LogPath); err == nil && bytes.Contains(b, []byte(":vzcreate:")) {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, err = pct.Deploy(ctx, h, p)
	cancel()
	<-done
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("CT %d", p.VMID)) {
		t.Errorf("interrupted create: %v, want an error naming CT %d", err, p.VMID)
	}
	if _, serr := os.Stat(conf); serr == nil {
		t.Errorf("the interrupted create left CT %d behind (%v)", p.VMID, err)
	}
	deleted := false
	for _, r := range api.Requests(t) {
		deleted = deleted || (r.Method == "DELETE" && r.Params["purge"] == "1")
	}
	if !deleted {
		t.Errorf("no DELETE purge=1 for the interrupted create")
	}
}

// wantCommands fails t for each of wants that p's commands (a deploy or
// upgrade plan, as --dry-run prints them) do not contain, and returns
// them joined.
func wantCommands(t *testing.T, p interface{ Commands() []string }, wants ...string) string {
	t.Helper()
	cmds := strings.Join(p.Commands(), "\n")
	for _, want := range wants {
		if !strings.Contains(cmds, want) {
			t.Errorf("the plan's commands lack %q:\n%s", want, cmds)
		}
	}
	return cmds
}
