package pct_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/pct"
)

// upgradeConf is an application CT nexcage made through the API (PVE
// 9.1: entrypoint and env, no raw keys but the environment), as PVE
// writes it: the description encode_text'ed.
const upgradeConf = `#nexcage%3A template=local%3Avztmpl/app_0_amd64.tar.zst image=example.com/app%3A0 digest=sha256%3A0000
arch: amd64
entrypoint: /app/run.sh
hostname: app
memory: 512
net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,host-managed=1,type=veth
ostype: unmanaged
rootfs: local-lvm:vm-100-disk-0,size=8G
unprivileged: 1
lxc.environment.runtime: GREETING=hello
`

// TestRemoteUpgradeRefusals: through the API, --health-cmd is a
// *RemoteExecError before any request; a plan whose CT's config changed
// before it ran is refused (its digest) without a change; a snapshot and
// a lock are refused as on the host. Every request PVE's schema judged.
func TestRemoteUpgradeRefusals(t *testing.T) {
	s, api, h := remoteStandIn(t)
	ctx := context.Background()
	conf := s.Path("etc/pve/nodes/pve/lxc/100.conf")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(text), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write(upgradeConf)
	tmpl := planTemplate(t, "arch: amd64\nostype: unmanaged\nentrypoint: /app/run.sh --v2\nlxc.environment.runtime: GREETING=hi\n", "/data")
	old := planTemplate(t, "arch: amd64\nostype: unmanaged\nentrypoint: /app/run.sh\nlxc.environment.runtime: GREETING=hello\n", "/data")
	changing := func(from int) []string {
		var out []string
		for _, r := range api.Requests(t)[from:] {
			if r.Method != "GET" {
				out = append(out, r.Method+" "+r.Path)
			}
		}
		return out
	}

	_, err := pct.PlanUpgrade(ctx, h, 100, nil, tmpl, pct.UpgradeOptions{HealthCmd: "true"})
	var xe *pct.RemoteExecError
	if !errors.As(err, &xe) || !errors.Is(err, pct.ErrInvalidArgument) || xe.Cmd != "true" {
		t.Fatalf("--health-cmd through the API: %v (%T), want a *RemoteExecError", err, err)
	}
	if n := len(api.Requests(t)); n != 0 {
		t.Errorf("--health-cmd through the API made %d requests before it was refused", n)
	}

	p, err := pct.PlanUpgrade(ctx, h, 100, old, tmpl, pct.UpgradeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cmds := strings.Join(p.Commands(), "\n")
	for _, want := range []string{
		"POST /api2/json/nodes/pve/lxc vmid=101 ostemplate=local:vztmpl/app_1_amd64.tar.zst rootfs=local-lvm:8 unprivileged=1 hostname=nexcage-upgrade-100",
		"PUT /api2/json/nodes/pve/lxc/100/config rootfs=local-lvm:NEWVOL,size=8G unused0=local-lvm:vm-100-disk-0 ",
		`entrypoint="/app/run.sh --v2" env=GREETING=hi digest=DIGEST`,
	} {
		if !strings.Contains(cmds, want) {
			t.Errorf("the plan lacks %q:\n%s", want, cmds)
		}
	}
	mark := len(api.Requests(t))
	write(upgradeConf + "cores: 2\n")
	_, err = pct.Upgrade(ctx, h, p)
	if err == nil || !strings.Contains(err.Error(), "CT 100's config changed since the upgrade was planned") {
		t.Fatalf("a config changed after the plan: %v", err)
	}
	if ch := changing(mark); len(ch) > 0 {
		t.Errorf("a refused upgrade sent %q", ch)
	}

	for extra, want := range map[string]string{
		"lock: backup\n": "CT 100 is locked",
		"parent: snap\n\n[snap]\nhostname: app\n": "CT 100 has snapshots",
		"lxc.init.cwd: /srv\n":                    "", // the user's cwd stays: no raw write needed
	} {
		write(upgradeConf + extra)
		_, err := pct.PlanUpgrade(ctx, h, 100, old, tmpl, pct.UpgradeOptions{})
		switch {
		case want == "" && err != nil:
			t.Errorf("with %q: %v", extra, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("with %q: %v, want %q", extra, err, want)
		}
	}
	// Adopted: the marker is added to the description, every current
	// value is the user's.
	write(strings.SplitN(upgradeConf, "\n", 2)[1])
	if _, err := pct.PlanUpgrade(ctx, h, 100, nil, tmpl, pct.UpgradeOptions{}); err == nil || !strings.Contains(err.Error(), "was not created by nexcage") {
		t.Errorf("not nexcage's, without Adopt: %v", err)
	}
	ap, err := pct.PlanUpgrade(ctx, h, 100, nil, tmpl, pct.UpgradeOptions{Adopt: true})
	if err != nil {
		t.Fatal(err)
	}
	if cmds := strings.Join(ap.Commands(), "\n"); !strings.Contains(cmds, ` description="nexcage: template=local:vztmpl/app_1_amd64.tar.zst image=example.com/app:1" digest=DIGEST`) {
		t.Errorf("adopted: the swap does not add the marker, or changes more:\n%s", cmds)
	}
	if ch := changing(mark); len(ch) > 0 {
		t.Errorf("plans sent %q", ch)
	}
	api.CheckJudged(t)
}
