package generate_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/generate"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/lxc"
)

// TestSpecIsValidAndConverts: what generate spec writes is valid against
// the runtime-spec schema, and convert maps every flag as asked.
func TestSpecIsValidAndConverts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flags    generate.SpecOptions
		rootless bool
	}{
		{name: "defaults"},
		{name: "rootless", rootless: true},
		{name: "everything", flags: generate.SpecOptions{
			Args: []string{"/usr/bin/app", "--name", "my app"}, Env: []string{"PATH=/bin", "MODE=prod"}, Cwd: "/srv/app",
			User: "1000:100", Hostname: "web-1", Memory: "512m", CPUs: "1.5", Arch: "arm64",
			Mounts: []string{"type=bind,src=/srv/data,dst=/data,ro", "type=tmpfs,dst=/run/app,size=64m,mode=1777", "type=bind,source=/srv/logs,target=/var/log/app"},
		}},
		{name: "cmd", flags: generate.SpecOptions{Cmd: `/bin/sh -c 'echo "hello world"'`, RootPath: "/srv/rootfs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "bundle")
			opts := generate.Options{Spec: tc.flags}
			generate.ForceRootless(&opts, tc.rootless)
			res, err := generate.Spec(context.Background(), dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			validateConfig(t, res.Config)
			spec := loadSpec(t, dir)
			if tc.rootless != (spec.Linux != nil && len(spec.Linux.UIDMappings) == 1) {
				t.Errorf("rootless %v but uid mappings %v", tc.rootless, spec.Linux.UIDMappings)
			}
			c, err := lxc.FromSpec(spec, false)
			if err != nil {
				t.Fatalf("convert cannot map the config: %v", err)
			}
			switch tc.name {
			case "defaults":
				if len(c.MountPoints) != 0 || len(c.Raw) != 0 || c.Entrypoint != "/bin/sh" || spec.Root.Path != "rootfs" || spec.Hostname != "" {
					t.Errorf("defaults map to %+v (root %q, hostname %q): want only the shell", c, spec.Root.Path, spec.Hostname)
				}
			case "everything":
				conf := c.Render()
				for _, want := range []string{
					"entrypoint: /usr/bin/app --name 'my app'\n", "hostname: web-1\n", "mp0: /srv/data,mp=/data,ro=1\n",
					"mp1: /srv/logs,mp=/var/log/app\n", "lxc.mount.entry: tmpfs run/app tmpfs mode=1777,nodev,nosuid,size=64m 0 0\n",
					"lxc.environment.runtime: PATH=/bin\n", "lxc.environment.runtime: MODE=prod\n", "lxc.init.cwd: /srv/app\n",
					"lxc.init.uid: 1000\n", "lxc.init.gid: 100\n",
				} {
					if !strings.Contains(conf, want) {
						t.Errorf("the CT config lacks %q:\n%s", want, conf)
					}
				}
				r := spec.Linux.Resources
				if r.Memory == nil || *r.Memory.Limit != 512<<20 || r.CPU == nil || *r.CPU.Quota != 150000 || *r.CPU.Period != 100000 {
					t.Errorf("resources %+v: want 512 MiB and 1.5 CPUs", r)
				}
				if spec.Annotations["org.opencontainers.image.architecture"] != "arm64" {
					t.Errorf("--arch arm64 gave annotations %v", spec.Annotations)
				}
			case "cmd":
				if strings.Join(spec.Process.Args, "|") != "/bin/sh|-c|echo \"hello world\"" || spec.Root.Path != "/srv/rootfs" {
					t.Errorf("--cmd gave args %q, root %q", spec.Process.Args, spec.Root.Path)
				}
			}
		})
	}
}

// TestSpecReadsTheRootfs: with a rootfs at root.path, the process is its
// init and the architecture comes from its /bin/sh.
func TestSpecReadsTheRootfs(t *testing.T) {
	testenv.RequireRoot(t)
	src := oddTree(t, false)
	bundle := filepath.Dir(src)
	res, err := generate.Spec(context.Background(), bundle, generate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Process, " ") != "/sbin/init" || res.Arch != "amd64" {
		t.Errorf("process %v, arch %q; want /sbin/init, amd64", res.Process, res.Arch)
	}
	// What generate spec writes beside a rootfs is a bundle convert takes.
	convertBundle(t, bundle, convert.Options{Name: "odd", Privileged: true, ToolVersion: "test"})
}

func TestSpecRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.json")
	os.WriteFile(config, []byte("{}"), 0o644)
	_, err := generate.Spec(context.Background(), dir, generate.Options{})
	if err == nil || !errors.Is(err, generate.ErrBundleExists) || !strings.Contains(err.Error(), config+" already exists") || strings.Contains(err.Error(), "--") {
		t.Fatalf("error %v, want one naming %s and no flag", err, config)
	}
	if b, _ := os.ReadFile(config); string(b) != "{}" {
		t.Error("config.json was changed")
	}
	if _, err := generate.Spec(context.Background(), dir, generate.Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	validateConfig(t, config)
	if l := leftovers(t, dir); len(l) != 1 {
		t.Errorf("left behind: %v", l)
	}
}

// TestSpecOptionErrors: an option convert could not map is an
// OptionError that names the option (never a command-line flag) and the
// fix, before anything is written.
func TestSpecOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		flags generate.SpecOptions
		flag  string
		want  string
	}{
		{generate.SpecOptions{Mounts: []string{"type=nfs,src=/srv,dst=/data"}}, "mount", `type "nfs" cannot be mapped to a PVE container: use type=bind`},
		{generate.SpecOptions{Mounts: []string{"type=bind,src=data,dst=/data"}}, "mount", "src=data is relative: PVE bind mounts need an absolute host path"},
		{generate.SpecOptions{Mounts: []string{"type=bind,src=/srv,dst=/data/../etc"}}, "mount", "dst=/data/../etc contains '..'"},
		{generate.SpecOptions{Mounts: []string{"type=bind,src=/srv,dst=data"}}, "mount", `"data" is not an absolute path inside the container`},
		{generate.SpecOptions{Mounts: []string{"type=bind,src=/srv/a b,dst=/data"}}, "mount", "contains a comma, a blank or a control character"},
		{generate.SpecOptions{Mounts: []string{"type=bind,src=/srv/./x,dst=/data"}}, "mount", "not a clean path"},
		{generate.SpecOptions{Mounts: []string{"type=tmpfs,dst=/proc"}}, "mount", "LXC mounts /proc itself"},
		{generate.SpecOptions{Mounts: []string{"type=tmpfs,src=/x,dst=/run"}}, "mount", "a tmpfs mount has no src"},
		{generate.SpecOptions{Mounts: []string{"type=bind,dst=/data"}}, "mount", "a bind mount needs src="},
		{generate.SpecOptions{Mounts: []string{"src=/srv,dst=/data"}}, "mount", "no type=: write type=bind or type=tmpfs"},
		{generate.SpecOptions{Mounts: []string{"type=bind,src=/srv"}}, "mount", "no dst="},
		{generate.SpecOptions{Mounts: []string{"type=bind,src=/srv,dst=/data,rw"}}, "mount", `unknown field "rw"`},
		{generate.SpecOptions{Mounts: []string{"type=tmpfs,dst=/run,size=lots"}}, "mount", "size=lots: write bytes or a number"},
		{generate.SpecOptions{Mounts: []string{"type=tmpfs,dst=/run", "type=bind,src=/srv,dst=/run"}}, "mount", "/run is already the destination of mount 1"},
		{generate.SpecOptions{Memory: "lots"}, "memory", "write bytes or a number with k, m, g or t"},
		{generate.SpecOptions{Memory: "1k"}, "memory", "less than 4 MiB"},
		{generate.SpecOptions{CPUs: "two"}, "cpus", "write a number of CPUs"},
		{generate.SpecOptions{CPUs: "0"}, "cpus", "between 0.01 and 8192"},
		{generate.SpecOptions{User: "www-data"}, "user", "write numeric UID[:GID]"},
		{generate.SpecOptions{User: "1000:staff"}, "user", "write numeric UID[:GID]"},
		{generate.SpecOptions{Env: []string{"NOVALUE"}}, "env", "write NAME=VALUE"},
		{generate.SpecOptions{Env: []string{"A B=c"}}, "env", "write NAME=VALUE"},
		{generate.SpecOptions{Cwd: "app"}, "cwd", "must be an absolute path"},
		{generate.SpecOptions{Hostname: "web_1"}, "hostname", "not a valid DNS name"},
		{generate.SpecOptions{Args: []string{"/bin/sh"}, Cmd: "/bin/sh"}, "cmd", "args and cmd both set the process"},
		{generate.SpecOptions{Args: []string{`it's "quoted"`}}, "args", "both kinds of quotes"},
		{generate.SpecOptions{Cmd: "   "}, "cmd", "the command line is empty"},
		{generate.SpecOptions{Arch: "mips"}, "arch", "not an architecture Proxmox VE runs"},
	} {
		t.Run(tc.flag+" "+tc.want, func(t *testing.T) {
			dir := t.TempDir()
			_, err := generate.Spec(context.Background(), dir, generate.Options{Spec: tc.flags})
			var oe *generate.OptionError
			if !errors.As(err, &oe) || oe.Field != tc.flag || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want an OptionError for %s saying %q", err, tc.flag, tc.want)
			}
			if oe.With == "" && !strings.HasPrefix(err.Error(), tc.flag) {
				t.Errorf("error %q does not start with the option's name %s", err, tc.flag)
			}
			if strings.Contains(oe.Msg, "--") && tc.flag != "cmd" {
				t.Errorf("message %q names a flag: a library names none", oe.Msg)
			}
			if l := leftovers(t, dir); len(l) != 0 {
				t.Errorf("left behind: %v", l)
			}
			// The same flags make generate --rootfs fail the same way.
			_, err = generate.Bundle(context.Background(), filepath.Join(dir, "b"), generate.Options{Rootfs: dir, Spec: tc.flags})
			if !errors.As(err, &oe) || oe.Field != tc.flag {
				t.Errorf("Bundle from a rootfs: error %v, want an OptionError for %s", err, tc.flag)
			}
		})
	}
}
