package lxc_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/lxc"
)

// oracleRelease is the pve-container release each oracle version holds.
var oracleRelease = map[string]lxc.PVEContainer{"9.0": lxc.PVE90, "9.1": lxc.PVE91, "9.2": lxc.PVE92}

// issue17Lines are the lines on which nexcage's config model disagreed
// with PVE (issue 17), both ways.
var issue17Lines = []string{
	// accepted by nexcage, refused by PVE
	"lxc.hook.foo: x", "lxc.signal.foo: SIGTERM", "lxc.sysctl.net.ipv4.ip_forward: 1", "lxc.tty.dir: lxc",
	"lxc.environmentX: A=1", "pool: x", "digest: abc", "mp0: /srv/a,mp=/a/../b", "mp0: /srv/a,mp=/a/.",
	"ostype: foo", "tty: 9", "hostname: bad_name", "lxc.environment.runtime: B C=1",
	"lxc.environment.runtime: my-var=1", "lxc.environment.runtime: APP.MODE=prod", "mp0: /srv/a", "mp0: /srv/../a,mp=/a",
	"entrypoint: /bin/sh -c \x01x", "memory: 8", "cores: 0", "arch: sparc", "cmode: bogus", "unprivileged: maybe",
	"net0: bridge=vmbr0", "net0: name=eth0,bogus=1", "net32: name=eth0", "mp256: /srv,mp=/x", "features: nesting=2",
	// refused by nexcage, accepted by PVE
	"lxc.init.groups: 1 2", "lxc.rootfs.mount: /x", "lxc.net.0.type: veth", "lxc.include: /usr/share/lxc/config/common.conf",
	"lxc.uts.name: x", "mp0: /srv/a,mp=/a,idmap=u:0:100000:65536", "mp0: /srv/a,mp=/a,keepattrs=1",
	"lxc.cgroup.devices.allow: a", "lxc.cgroup2.devices.allow: c 1:3 rwm", "lxc.prlimit.nofile: 1024",
	"lxc.limit.nofile: 1024", "lxc.haltsignal: SIGTERM", "lxc.environment.hooks: A=1",
	"lxc.mount.entry = tmpfs run tmpfs mode=1777,create=dir 0 0", "dev0: /dev/fuse", "unused0: local-lvm:vm-100-disk-1",
	"lock: create", "lxc.apparmor.raw: deny /x rw,",
}

// propertyStringLines are property strings on which nexcage's reading
// disagreed with parse_property_string (a key with a leading zero, an
// empty value, the default key not first, a blank part).
var propertyStringLines = []string{
	"mp00: /a,mp=/b", "mp01: /a,mp=/b", "net00: name=eth0", "mp0: /a,mp=", "mp0: /a,mp=/b,size=", "mp0: /a,mp=/b,=1",
	"mp0: mp=/b,/a", "mp0: /a,mp=/b, ,ro=1", "mp0: /a,mp=/b,/c", "features: nesting=1,,keyctl=1",
	// mountoptions against pve-container's pattern.
	"mp0: /a,mp=/b,mountoptions=noatime=x", "mp0: /a,mp=/b,mountoptions=bogus", "mp0: /a,mp=/b,mountoptions=noatime;",
	"mp0: /a,mp=/b,mountoptions=noatime;nodev;discard",
}

// everyKeyLines are a valid value for each PVE key and each raw lxc.* key
// PVE knows, in any release.
func everyKeyLines() []string {
	lines := []string{
		"arch: amd64", "cmode: console", "console: 1", "cores: 2", "cpulimit: 1.5", "cpuunits: 100", "debug: 0",
		"description: hello", "entrypoint: /app/run.sh", "env: A=1", "features: nesting=1,keyctl=1",
		"hookscript: local:snippets/hook.pl", "hostname: ct1.example", "lock: backup", "memory: 512",
		"nameserver: 192.0.2.1", "onboot: 1", "ostype: alpine", "protection: 0", "rootfs: local-lvm:vm-100-disk-0,size=8G",
		"searchdomain: example.com", "startup: order=1", "swap: 0", "tags: a;b", "template: 0", "timezone: UTC", "tty: 2",
		"unprivileged: 1", "mp0: local-lvm:vm-100-disk-1,mp=/data,backup=1,size=8G", "mp255: /srv/a,mp=/a,ro=1",
		"net0: name=eth0,bridge=vmbr0,ip=dhcp", "net31: name=eth1,bridge=vmbr0,host-managed=1,ip=dhcp",
		"dev255: path=/dev/null,mode=0666", "unused255: local-lvm:vm-100-disk-2",
		"lxc.init.uid: 1000", "lxc.init.gid: 1000", "lxc.environment.runtime: A=1", "lxc.init.cmd: /sbin/init",
		"rootfs: local-lvm:vm-100-disk-0,idmap=u:0:100000:65536",
	}
	for _, k := range lxc.RawKeyNames() {
		lines = append(lines, k+": 1")
	}
	return lines
}

// negConfLines are the oracle's negative control, line by line.
func negConfLines(t *testing.T) []string {
	raw, err := os.ReadFile(filepath.Join(os.Getenv(pveoracle.Env), "controls", "neg.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestConfigModelAgreesWithPVE has each PVE release's own parser and
// schema judge every key, the oracle's negative control and the lines of
// issue 17 one at a time, and lxc.ParseFor that release must give the same
// verdict on each.
func TestConfigModelAgreesWithPVE(t *testing.T) {
	o := pveoracle.Require(t)
	lines := append(append(append(everyKeyLines(), issue17Lines...), propertyStringLines...), negConfLines(t)...)
	sort.Strings(lines)
	for _, v := range pveoracle.Versions {
		rel := oracleRelease[v.PVE]
		accepted := 0
		for _, verdict := range o.LineVerdicts(t, v, lines) {
			_, err := lxc.ParseFor(verdict.Line+"\n", rel)
			if verdict.Accepted {
				accepted++
			}
			switch {
			case verdict.Accepted && err != nil:
				t.Errorf("PVE %s accepts %q, lxc.ParseFor(%s) refuses it: %v", v.PVE, verdict.Line, rel, err)
			case !verdict.Accepted && err == nil:
				t.Errorf("PVE %s refuses %q, lxc.ParseFor(%s) accepts it:\n%s", v.PVE, verdict.Line, rel, verdict.Output)
			}
		}
		if accepted == 0 || accepted == len(lines) {
			t.Errorf("PVE %s accepted %d of %d lines: the table does not tell accepting from refusing", v.PVE, accepted, len(lines))
		}
		t.Logf("PVE %s: %d lines, %d accepted; lxc agrees on all but the errors above", v.PVE, len(lines), accepted)
	}
}
