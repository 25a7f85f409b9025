package lxc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// A template's .conf is written by whoever made the template: every line
// nexcage's convert does not write is refused and named by its number,
// and the config of the other lines comes back without it (issue 15,
// finding 2, and the classes around it).
func TestParseTemplateConfigRefusesWhatNexcageDoesNotWrite(t *testing.T) {
	const base = "#nexcage template\narch: amd64\nostype: alpine\nunprivileged: 1\n"
	for _, tc := range []struct{ line, reason string }{
		{"lxc.hook.pre-start: /bin/sh -c 'touch /tmp/pwned'", "raw key lxc.hook.pre-start is not one nexcage writes"},
		{"lxc.hook.mount = /x", "raw key lxc.hook.mount"},
		{"lxc.apparmor.profile: unconfined", "raw key lxc.apparmor.profile"},
		{"lxc.cap.drop:", "raw key lxc.cap.drop"},
		{"lxc.cgroup2.devices.allow: a", "raw key lxc.cgroup2.devices.allow"},
		{"lxc.idmap: u 0 0 65536", "raw key lxc.idmap"},
		{"lxc.mount.auto: proc:rw sys:rw", "raw key lxc.mount.auto"},
		{"lxc.init.cmd: /bin/sh", "raw key lxc.init.cmd"},
		{"lxc.rootfs.path: /", "raw key lxc.rootfs.path"},
		{"lxc.mount.entry: /etc/pve etc/pve none bind,create=dir 0 0", "only tmpfs mounts"},
		{"lxc.mount.entry: tmpfs srv tmpfs size=1m,bind,create=dir 0 0", `tmpfs option "bind"`},
		{"lxc.mount.entry: tmpfs srv tmpfs rbind,rw,create=dir 0 0", `tmpfs option "rbind"`},
		// LXC's create=dir follows the rootfs's symlinks on the host
		// before pivot_root: convert puts the mount point in the rootfs.
		{"lxc.mount.entry: tmpfs srv tmpfs size=1m,create=dir 0 0", `tmpfs option "create=dir"`},
		{"lxc.mount.entry: tmpfs srv tmpfs move 0 0", `tmpfs option "move"`},
		{"lxc.mount.entry: tmpfs srv tmpfs shared 0 0", `tmpfs option "shared"`},
		{"lxc.mount.entry: tmpfs ../../etc tmpfs size=1m 0 0", "not a clean path"},
		{"lxc.mount.entry: tmpfs /srv tmpfs size=1m 0 0", "not a clean path"},
		{"lxc.mount.entry: tmpfs . tmpfs size=1m 0 0", "not a clean path"},
		{`lxc.mount.entry: tmpfs srv\012x tmpfs size=1m 0 0`, "not a clean path"},
		{"mp0: /,mp=/host", `"/" is the host's root directory`},
		{"mp0: /etc/pve,mp=/pve", "is in /etc/pve"},
		{"mp0: /etc/pve/priv,mp=/pve", "is in /etc/pve"},
		{"mp0: /root/.ssh,mp=/k", "is in /root, a host system directory"},
		{"mp0: /var/lib/vz,mp=/vz", "is in /var"},
		{"mp0: /srv/../etc,mp=/x", "not a clean path"},
		{"mp0: /srv/data,mp=/x,mountoptions=noatime", `property "mountoptions"`},
		{"mp0: local-lvm:8,mp=/x", "not a host directory"},
		{"mp0: /srv/data,mp=/", "container's root"},
		{"mp0: /srv/data,mp=relative", "not an absolute path"},
		{"mp1: /srv/data=x,mp=/x", "unknown property"},
		{"mp01: /srv/data,mp=/x", "key mp01 is not one nexcage writes"},
		{"features: nesting=1", "key features is not one nexcage writes"},
		{"hookscript: local:snippets/x.sh", "key hookscript"},
		{"memory: 512", "key memory"},
		{"lock: create", "key lock"},
		{"unprivileged: yes", "0 or 1"},
		{"arch: sparc", `arch "sparc"`},
		{"hostname: a_b", "not a valid DNS name"},
		{"cmode: rawshell", "cmode"},
		{"lxc.init.uid: -1", "not a numeric id"},
		{"lxc.init.groups: 10,wheel", "numeric group ids"},
		{"lxc.init.groups:", "numeric group ids"},
		{"lxc.init.cwd: srv", "not an absolute path"},
		{"lxc.environment.runtime: NOEQUALS", "not NAME=VALUE"},
		{"not a key value line", "not a \"key: value\" line"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			c, err := ParseTemplateConfig(base + tc.line + "\nhostname: web\n")
			var ue *UnsafeConfigError
			if !errors.As(err, &ue) || len(ue.Lines) != 1 {
				t.Fatalf("got %v, want one unsafe line", err)
			}
			l := ue.Lines[0]
			if l.Line != 5 || l.Text != tc.line || !strings.Contains(l.Reason, tc.reason) {
				t.Errorf("refused %+v, want line 5 %q because %q", l, tc.line, tc.reason)
			}
			if !strings.Contains(err.Error(), "line 5 ") {
				t.Errorf("the message does not name the line: %v", err)
			}
			// The rest is still read, and nothing of the refused line.
			if c == nil || c.Hostname != "web" || c.Arch != "amd64" || len(c.Raw) != 0 || len(c.MountPoints) != 0 || len(c.Options) != 0 {
				t.Errorf("kept config %+v", c)
			}
		})
	}
}

// Everything convert writes is accepted: a template nexcage made always
// deploys.
func TestParseTemplateConfigAcceptsNexcageOutput(t *testing.T) {
	spec := &rspec.Spec{
		Hostname: "web",
		Process:  &rspec.Process{Args: []string{"/srv/run", "a b"}, Env: []string{"A=1", "B=x=y z"}, Cwd: "/srv", User: rspec.User{UID: 1000, GID: 100, AdditionalGids: []uint32{10, 18}}},
		Mounts: []rspec.Mount{
			{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind", "ro"}},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=64m", "mode=1777", "nosuid", "nodev", "noexec", "rprivate", "uid=5", "gid=6"}},
		},
		Annotations: map[string]string{AnnotationStopSignal: "SIGQUIT"},
	}
	c, err := FromSpec(spec, false)
	if err != nil {
		t.Fatal(err)
	}
	c.Arch, c.OSType, c.Unprivileged, c.Description = "amd64", "unmanaged", true, "nexcage template x\nfrom docker://x"
	text := c.Render()
	if !strings.Contains(text, "\nlxc.init.groups: 10,18\n") {
		t.Errorf("no lxc.init.groups for the supplementary groups:\n%s", text)
	}
	back, err := ParseTemplateConfig(text)
	if err != nil {
		t.Fatalf("convert's own config refused: %v\n%s", err, text)
	}
	if back.Render() != text {
		t.Errorf("read back differently:\n%s\nwant:\n%s", back.Render(), text)
	}
}

// Finding 6: tmpfs options are an allow-list, no tmpfs on "/", and a
// bundle's bind sources get deploy's checks.
func TestFromSpecRefusesHostileMounts(t *testing.T) {
	for _, tc := range []struct {
		m          rspec.Mount
		field, msg string
	}{
		{rspec.Mount{Destination: "/srv", Type: "tmpfs", Options: []string{"size=1m,bind"}}, "options", `tmpfs option "size=1m,bind"`},
		{rspec.Mount{Destination: "/srv", Type: "tmpfs", Options: []string{"rbind,rw"}}, "options", `tmpfs option "rbind,rw"`},
		{rspec.Mount{Destination: "/srv", Type: "tmpfs", Options: []string{"move"}}, "options", `tmpfs option "move"`},
		{rspec.Mount{Destination: "/srv", Type: "tmpfs", Options: []string{"rshared"}}, "options", `tmpfs option "rshared"`},
		{rspec.Mount{Destination: "/srv", Type: "tmpfs", Options: []string{"size=lots"}}, "options", `tmpfs option "size=lots"`},
		{rspec.Mount{Destination: "/", Type: "tmpfs"}, "destination", "hide the rootfs"},
		{rspec.Mount{Destination: "/", Type: "bind", Source: "/srv"}, "destination", "hide the rootfs"},
		{rspec.Mount{Destination: "/x", Type: "bind", Source: "/"}, "source", "the host's root directory"},
		{rspec.Mount{Destination: "/x", Type: "bind", Source: "/etc/pve"}, "source", "/etc/pve"},
		{rspec.Mount{Destination: "/x", Type: "bind", Source: "/etc"}, "source", "host system directory"},
		{rspec.Mount{Destination: "/x", Type: "bind", Source: "/srv/a=b"}, "source", "'='"},
		{rspec.Mount{Destination: "/x=y", Type: "bind", Source: "/srv"}, "destination", "'='"},
	} {
		_, err := FromSpec(&rspec.Spec{Mounts: []rspec.Mount{tc.m}}, true)
		var me *MountError
		if !errors.As(err, &me) || me.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: got %v, want a MountError on %s saying %q", tc.m, err, tc.field, tc.msg)
		}
	}
}

// Finding 7: a container path (an image VOLUME, a --mount destination) is
// absolute, clean and holds nothing a property string splits on.
func TestCheckContainerPath(t *testing.T) {
	for in, want := range map[string]string{"/data": "/data", "/var/lib/db/": "/var/lib/db", "//x//y": "/x/y"} {
		if got, err := CheckContainerPath(in); err != nil || got != want {
			t.Errorf("CheckContainerPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"data", "", "/", "/data\nmp1: /", "/a,mp=/etc", "/a=b", "/a b", "/a/../etc", "/a/./b", "/x\x7f", `/a\012b`} {
		if _, err := CheckContainerPath(bad); err == nil {
			t.Errorf("CheckContainerPath(%q) accepted", bad)
		}
	}
}

// Finding 11b: a long line is no reason to fail; the whole config is
// bounded instead, at what pmxcfs stores.
func TestConfigSize(t *testing.T) {
	long := "lxc.environment.runtime: BIG=" + strings.Repeat("x", 1<<20+10) + "\n"
	c, err := Parse("arch: amd64\n" + long)
	if err != nil || len(c.Env) != 1 || len(c.Env[0]) != 1<<20+14 {
		t.Fatalf("Parse of a %d-byte line: %v", len(long), err)
	}
	if _, err := ParseTemplateConfig("arch: amd64\n" + long); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ParseTemplateConfig of %d bytes: %v, want ErrTooLarge", len(long), err)
	}
	dir := t.TempDir()
	big, fits := filepath.Join(dir, "big.conf"), filepath.Join(dir, "fits.conf")
	os.WriteFile(big, []byte(long), 0o644)
	os.WriteFile(fits, []byte("lxc.environment.runtime: BIG="+strings.Repeat("x", MaxConfigSize-100)+"\n"), 0o644)
	if _, err := ReadConfig(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadConfig of %d bytes: %v, want ErrTooLarge", len(long), err)
	}
	text, err := ReadConfig(fits)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := ParseTemplateConfig(text); err != nil || len(c.Env) != 1 {
		t.Errorf("a config just under the limit: %v", err)
	}
}

// lxc.init.groups only for a non-root user of an application container:
// umoci gives an image without USER root's groups, and a system
// container's init sets its own.
func TestFromSpecGroupsOnlyForAppUser(t *testing.T) {
	for _, tc := range []struct {
		name   string
		uid    uint32
		system bool
		want   bool
	}{{"app user", 1000, false, true}, {"app root", 0, false, false}, {"system user", 1000, true, false}} {
		spec := &rspec.Spec{Process: &rspec.Process{Args: []string{"/srv/run"}, Cwd: "/", User: rspec.User{UID: tc.uid, AdditionalGids: []uint32{10, 18}}}}
		c, err := FromSpec(spec, tc.system)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(c.Render(), "lxc.init.groups: 10,18\n"); got != tc.want {
			t.Errorf("%s: lxc.init.groups written %v, want %v:\n%s", tc.name, got, tc.want, c.Render())
		}
	}
}
