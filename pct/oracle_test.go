package pct_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
)

// appTemplateConf is the .conf convert writes for an application image
// with a user, a working directory, a stop signal and environment
// variables.
const appTemplateConf = `arch: amd64
cmode: console
entrypoint: /app/run.sh 'sleep infinity'
hostname: app
ostype: unmanaged
unprivileged: 1
lxc.environment.runtime: PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
lxc.environment.runtime: TERM=xterm
lxc.environment.runtime: HOME=/app
lxc.environment.runtime: GREETING=hello world
lxc.init.cwd: /app
lxc.init.uid: 1000
lxc.init.gid: 1000
lxc.init.groups: 10,18
lxc.signal.halt: SIGTERM
`

// planTemplate is a local template file with the given .conf, as deploy
// loads it.
func planTemplate(t *testing.T, conf string, volumes ...string) *pct.Template {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "app_1_amd64.tar.zst")
	if err := os.WriteFile(file, []byte("not a real archive: plans never read it"), 0o644); err != nil {
		t.Fatal(err)
	}
	tp := &pct.Template{File: file, Volumes: volumes, Image: "example.com/app:1"}
	if conf != "" {
		c, err := lxc.ParseTemplateConfig(conf)
		if err != nil {
			t.Fatalf("the template's .conf: %v", err)
		}
		tp.Config = c
	}
	return tp
}

func intp(i int) *int { return &i }

// planJSON is what `deploy --dry-run --json` prints for the plan.
func planJSON(t *testing.T, p *pct.Plan) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"dry_run": true, "vmid": p.VMID, "commands": p.Commands(), "config": p.Config.Render()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeployPlansPassPVE plans deploys for each PVE version the oracle
// holds (an offline host of that version, as --dry-run --pve-version
// does) and has that version's own pct CLI, API schema and config parser
// judge every command and the config that results. It also checks what
// must not be lost on the way: every environment variable, swap 0, the
// mount points in the preview.
func TestDeployPlansPassPVE(t *testing.T) {
	o := pveoracle.Require(t)
	ctx := context.Background()
	bind := t.TempDir()
	allEnv := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm", "HOME=/app", "GREETING=hello world"}
	scenarios := []struct {
		name string
		tmpl func(t *testing.T) *pct.Template
		opts pct.Options
	}{
		{"system container", func(t *testing.T) *pct.Template {
			return planTemplate(t, "arch: amd64\nhostname: web\nostype: alpine\nunprivileged: 1\n")
		}, pct.Options{Memory: 256, Swap: intp(0), Cores: 2, Start: true}},
		{"application container", func(t *testing.T) *pct.Template { return planTemplate(t, appTemplateConf, "/data") },
			pct.Options{Hostname: "app", Mounts: []pct.BindMount{{Source: bind, Dest: "/srv/data", RO: true}}, Swap: intp(0), RunAsRoot: true, DropEnv: true, Start: true}},
		{"application container on another node", func(t *testing.T) *pct.Template { return planTemplate(t, appTemplateConf) },
			pct.Options{Node: "pve2", RunAsRoot: true, DropEnv: true, Features: "nesting=1", Password: ""}},
		{"no template config", func(t *testing.T) *pct.Template { return planTemplate(t, "") },
			pct.Options{VMID: 123, Unprivileged: new(bool), SSHKeysFile: "/dev/null"}},
	}
	for _, v := range pveoracle.Versions {
		pv, err := pct.ParseVersion(v.PVE)
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range scenarios {
			t.Run(v.PVE+"/"+sc.name, func(t *testing.T) {
				h := pct.OfflineHost(pv, sc.opts.Node)
				tp := sc.tmpl(t)
				p, err := pct.MakePlan(ctx, h, tp, sc.opts)
				if err != nil {
					t.Fatal(err)
				}
				o.CheckPlan(t, v, planJSON(t, p))
				// The dry-run JSON does not validate pvesh: each argv on
				// its own, pvesh as the pct call reaching the same method.
				for _, c := range p.Argvs() {
					o.CheckArgv(t, v, c...)
				}
				// What the config file will hold is what the preview
				// shows: parse it back as this release would.
				got, err := lxc.ParseFor(p.Config.Render(), p.Container)
				if err != nil {
					t.Fatalf("the previewed config is not one pve-container %s parses: %v\n%s", p.Container, err, p.Config.Render())
				}
				if sc.opts.Swap != nil && !strings.Contains(p.Config.Render(), "\nswap: 0\n") {
					t.Errorf("--swap 0 is not in the config:\n%s", p.Config.Render())
				}
				if sc.opts.Swap != nil && !strings.Contains(strings.Join(p.Create, " "), "--swap 0") {
					t.Errorf("--swap 0 is not passed to pct create: %q", p.Create)
				}
				if len(got.MountPoints) != len(sc.opts.Mounts)+len(tp.Volumes) {
					t.Errorf("the preview has %d mount points, want %d:\n%s", len(got.MountPoints), len(sc.opts.Mounts)+len(tp.Volumes), p.Config.Render())
				}
				if tp.Config == nil || tp.Config.Entrypoint == "" {
					if strings.Contains(p.Config.Render(), "host-managed") {
						t.Errorf("a system container got a host-managed network:\n%s", p.Config.Render())
					}
					return
				}
				// As PVE's own OCI import: the host manages an application
				// container's network, from 9.1 on (9.0 has no such option).
				if hm := strings.Contains(p.Config.Render(), "\nnet0: name=eth0,bridge=vmbr0,ip=dhcp,host-managed=1\n"); hm != (v.PVE != "9.0") {
					t.Errorf("PVE %s: host-managed=1 on net0 is %v:\n%s", v.PVE, hm, p.Config.Render())
				}
				// Every variable reaches the config, once.
				var have []string
				have = append(have, got.Env...)
				for _, r := range got.Raw {
					if r.Key == "lxc.environment" {
						have = append(have, r.Value)
					}
				}
				want := allEnv
				if v.PVE == "9.0" {
					// --drop-env: plain lxc.environment would reach the
					// host's hooks; the user hears what was left out.
					want = nil
					if w := strings.Join(p.Warnings, "\n"); !strings.Contains(w, "PATH, TERM, HOME, GREETING") {
						t.Errorf("PVE 9.0 --drop-env: warnings %q do not name the dropped variables", p.Warnings)
					}
				}
				if strings.Contains(p.Config.Render(), "lxc.environment:") {
					t.Errorf("plain lxc.environment, which reaches the host's hooks:\n%s", p.Config.Render())
				}
				if strings.Join(sorted(have), "\n") != strings.Join(sorted(want), "\n") {
					t.Errorf("environment in the config:\n%s\nwant:\n%s", strings.Join(have, "\n"), strings.Join(want, "\n"))
				}
				if !strings.Contains(p.Config.Render(), "\nlxc.signal.halt: SIGTERM\n") {
					t.Errorf("no stop signal:\n%s", p.Config.Render())
				}
				for _, a := range p.Create {
					if a == "--env" {
						t.Errorf("pct create gets --env, of which pct keeps only the last: %q", p.Create)
					}
				}
			})
		}
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestDeployRefusesUserBeforePVE92: lxc.init.uid exists from
// pve-container 6.1.0 on; an older PVE refuses the config. Deploy names
// the user, the version needed and the way out, and with RunAsRoot the
// plan has no lxc.init.* line that PVE would refuse.
func TestDeployRefusesUserBeforePVE92(t *testing.T) {
	ctx := context.Background()
	for _, pve := range []string{"9.0", "9.1"} {
		pv, _ := pct.ParseVersion(pve)
		// DropEnv: 9.0 refuses the environment first (TestDeployRefusesHookDangerousEnvOnPVE90).
		_, err := pct.MakePlan(ctx, pct.OfflineHost(pv, ""), planTemplate(t, appTemplateConf), pct.Options{DropEnv: true})
		var pe *pct.Error
		if !errors.As(err, &pe) || pe.Param != "run-as-root" || !strings.Contains(err.Error(), "lxc.init.uid: 1000") || !strings.Contains(err.Error(), "6.1.0 (PVE 9.2)") {
			t.Errorf("PVE %s: %v, want a refusal naming lxc.init.uid 1000, pve-container 6.1.0 and --run-as-root", pve, err)
		}
		p, err := pct.MakePlan(ctx, pct.OfflineHost(pv, ""), planTemplate(t, appTemplateConf), pct.Options{RunAsRoot: true, DropEnv: true})
		if err != nil {
			t.Fatal(err)
		}
		if r := p.Config.Render(); strings.Contains(r, "lxc.init.uid") || strings.Contains(r, "lxc.init.groups") {
			t.Errorf("PVE %s with RunAsRoot: the config still sets a user or groups:\n%s", pve, r)
		}
	}
	p, err := pct.MakePlan(ctx, pct.OfflineHost(pct.Version{Major: 9, Minor: 2}, ""), planTemplate(t, appTemplateConf), pct.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Config.Render(); !strings.Contains(r, "lxc.init.uid: 1000\n") || !strings.Contains(r, "lxc.init.groups: 10,18\n") {
		t.Errorf("PVE 9.2 lost the user or its groups:\n%s", r)
	}
}

// TestDeployRefusesHookDangerousEnvOnPVE90: before PVE 9.1 the
// environment can only be plain lxc.environment, which LXC also gives the
// hooks PVE runs as root on the host. Any image variable there changes
// what the host runs (PATH naming the image's binaries, not only
// LD_PRELOAD), so deploy refuses every one, naming PVE 9.1, unless
// --drop-env leaves them out with a warning.
func TestDeployRefusesHookDangerousEnvOnPVE90(t *testing.T) {
	ctx := context.Background()
	h90 := pct.OfflineHost(pct.Version{Major: 9, Minor: 0}, "")
	for _, env := range []string{"PATH=/var/lib/lxc/100/rootfs/usr/bin:/usr/bin", "HOME=/x", "TMPDIR=/x", "IFS=/", "BASH_ENV=/x", "ENV=/x", "LD_PRELOAD=/x.so", "GREETING=hi"} {
		name, _, _ := strings.Cut(env, "=")
		conf := "arch: amd64\ncmode: console\nentrypoint: /app\nostype: unmanaged\nunprivileged: 1\nlxc.environment.runtime: " + env + "\n"
		_, err := pct.MakePlan(ctx, h90, planTemplate(t, conf), pct.Options{})
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "PVE 9.1") || !strings.Contains(err.Error(), "6.0.18") {
			t.Errorf("PVE 9.0, %s: %v, want a refusal naming it and PVE 9.1 (pve-container 6.0.18)", name, err)
		}
		p, err := pct.MakePlan(ctx, h90, planTemplate(t, conf), pct.Options{DropEnv: true})
		if err != nil {
			t.Fatalf("PVE 9.0 --drop-env: %v", err)
		}
		if r := p.Config.Render(); strings.Contains(r, name+"=") {
			t.Errorf("PVE 9.0 --drop-env kept %s:\n%s", name, r)
		}
		if !strings.Contains(strings.Join(p.Warnings, "\n"), name) {
			t.Errorf("PVE 9.0 --drop-env: warnings %q do not name %s", p.Warnings, name)
		}
		p, err = pct.MakePlan(ctx, pct.OfflineHost(pct.Version{Major: 9, Minor: 1}, ""), planTemplate(t, conf), pct.Options{})
		if err != nil || !strings.Contains(p.Config.Render(), "lxc.environment.runtime: "+env) {
			t.Errorf("PVE 9.1 keeps %s inside the container (runtime only): %v", name, err)
		}
	}
}

// TestDeployAppDefaultsAsPVEImport: an application container whose image
// names no stop signal gets SIGTERM, as PVE's own OCI import writes; a
// system container keeps LXC's default.
func TestDeployAppDefaultsAsPVEImport(t *testing.T) {
	ctx := context.Background()
	h := pct.OfflineHost(pct.Version{Major: 9, Minor: 2}, "")
	app := strings.Replace(appTemplateConf, "lxc.signal.halt: SIGTERM\n", "", 1)
	p, err := pct.MakePlan(ctx, h, planTemplate(t, app), pct.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(p.Config.Render(), "lxc.signal.halt: SIGTERM\n"); got != 1 {
		t.Errorf("app container: %d SIGTERM stop signals, want 1:\n%s", got, p.Config.Render())
	}
	p, err = pct.MakePlan(ctx, h, planTemplate(t, strings.Replace(appTemplateConf, "SIGTERM", "SIGQUIT", 1)), pct.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Config.Render(); !strings.Contains(r, "lxc.signal.halt: SIGQUIT\n") || strings.Contains(r, "SIGTERM") {
		t.Errorf("the image's stop signal is not kept alone:\n%s", r)
	}
	p, err = pct.MakePlan(ctx, h, planTemplate(t, "arch: amd64\nostype: alpine\nunprivileged: 1\n"), pct.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.Config.Render(), "lxc.signal.halt") || strings.Contains(p.Config.Render(), "host-managed") {
		t.Errorf("a system container got app defaults:\n%s", p.Config.Render())
	}
}

// TestDeployRefusesTemplateBindMounts: a template's .conf chooses a host
// directory (another CT's disks, an NFS export) that would be bound
// read-write without the user asking. Deploy refuses it, naming the line
// and the fix; repeating it with --mount makes it the user's own choice;
// --allow-template-mounts applies it with a warning.
func TestDeployRefusesTemplateBindMounts(t *testing.T) {
	ctx := context.Background()
	h := pct.OfflineHost(pct.Version{Major: 9, Minor: 2}, "")
	// Not under /tmp, which no template may bind at all: a directory like
	// /mnt/pve/nfs, which it could.
	if err := os.MkdirAll("/srv", 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/srv", "nexcage-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := "arch: amd64\nostype: alpine\nunprivileged: 1\nmp0: " + dir + ",mp=/srv/x\n"
	_, err = pct.MakePlan(ctx, h, planTemplate(t, conf), pct.Options{})
	if err == nil || !strings.Contains(err.Error(), "mp0") || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "Mounts "+dir+":/srv/x") || !strings.Contains(err.Error(), "AllowTemplateMounts") {
		t.Errorf("template bind mount: %v, want a refusal naming mp0, %s, Mounts and AllowTemplateMounts", err, dir)
	}
	p, err := pct.MakePlan(ctx, h, planTemplate(t, conf), pct.Options{Mounts: []pct.BindMount{{Source: dir, Dest: "/srv/x"}}})
	if err != nil {
		t.Fatalf("--mount repeating it: %v", err)
	}
	if got := strings.Count(p.Config.Render(), dir+",mp=/srv/x"); got != 1 || len(p.Warnings) != 0 {
		t.Errorf("--mount repeating it: %d mount points of it, warnings %q, want 1 and none:\n%s", got, p.Warnings, p.Config.Render())
	}
	p, err = pct.MakePlan(ctx, h, planTemplate(t, conf), pct.Options{AllowTemplateMounts: true})
	if err != nil {
		t.Fatalf("--allow-template-mounts: %v", err)
	}
	if !strings.Contains(p.Config.Render(), dir+",mp=/srv/x") || !strings.Contains(strings.Join(p.Warnings, "\n"), dir) {
		t.Errorf("--allow-template-mounts: mount missing or no warning naming %s (%q):\n%s", dir, p.Warnings, p.Config.Render())
	}
}
