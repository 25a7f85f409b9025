package lxc_test

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/pveoracle"
	"github.com/nexcage/nexcage/lxc"
)

// pveWrittenConfigs are CT configs as PVE's write_pct_config writes them
// (TestPVERoundTripOfConfigs has PVE itself confirm it): a PVE-made system
// container with a sized volume, an old privileged one without an
// unprivileged key and with the mount point properties nexcage does not
// act on, and an application container deployed from a nexcage template.
var pveWrittenConfigs = map[string]string{
	"system": `arch: amd64
cores: 2
features: nesting=1
hostname: web1
memory: 2048
mp0: local-lvm:vm-101-disk-1,mp=/var/lib/data,backup=1,size=32G
mp1: /mnt/shared,mp=/shared,ro=1
net0: name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:5E:6F:70,ip=dhcp,type=veth
onboot: 1
ostype: debian
rootfs: local-lvm:vm-101-disk-0,size=8G
swap: 512
unprivileged: 1
`,
	"legacy": `#Legacy CT
#  migrated from OpenVZ
arch: amd64
hostname: legacy
memory: 512
mp0: local:101/vm-101-disk-1.raw,mp=/srv,acl=1,quota=1,replicate=0,size=4G
mp1: /mnt/backup,mp=/backup,mountoptions=noatime;nodev,shared=1
ostype: centos
rootfs: local:101/vm-101-disk-0.raw,size=8G
`,
	// PVE writes a description percent-encoded (encode_text: ':' and '%'
	// among others), so a marker line reads back like this after any
	// change PVE makes to the config.
	"app": `#nexcage%3A template=local%3Avztmpl/app.tar.zst image=docker.io/library/nginx
arch: amd64
cmode: console
entrypoint: /docker-entrypoint.sh nginx -g 'daemon off;'
hostname: app
mp0: /srv/www,mp=/usr/share/nginx/html,ro=1,backup=0
mp1: local-lvm:vm-102-disk-1,mp=/var/cache/nginx,size=1G
ostype: unmanaged
rootfs: local-lvm:vm-102-disk-0,size=2G
unprivileged: 0
lxc.environment.runtime: PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
lxc.environment.runtime: NGINX_VERSION=1.27.0
lxc.init.cwd: /
`,
}

// TestParseRenderKeepsWhatPVEKeeps: a config PVE wrote renders back from
// Parse byte for byte, as PVE writes it back after reading it: no mount
// point property (size=) lost, no unprivileged key made up.
func TestParseRenderKeepsWhatPVEKeeps(t *testing.T) {
	for name, conf := range pveWrittenConfigs {
		t.Run(name, func(t *testing.T) {
			c, err := lxc.Parse(conf)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Render(); got != conf {
				t.Errorf("Parse then Render changed the config:\n%s\n--- want ---\n%s", got, conf)
			}
		})
	}
}

// TestPVERoundTripOfConfigs has PVE's own parse_pct_config and
// write_pct_config read and write back each config, in every release, so
// that TestParseRenderKeepsWhatPVEKeeps compares with what PVE keeps.
func TestPVERoundTripOfConfigs(t *testing.T) {
	o := pveoracle.Require(t)
	for _, v := range pveoracle.Versions {
		for name, conf := range pveWrittenConfigs {
			if _, err := lxc.ParseFor(conf, oracleRelease[v.PVE]); err != nil {
				// An older release without a key (entrypoint before
				// 9.1): TestConfigModelAgreesWithPVE covers the refusal.
				t.Logf("PVE %s refuses config %s: %v", v.PVE, name, err)
				continue
			}
			if got := o.RoundTrip(t, v, conf); got != conf {
				t.Errorf("PVE %s writes config %s back as:\n%s\n--- not as ---\n%s", v.PVE, name, got, conf)
			}
		}
	}
}

// FuzzParseRenderKeepsContent: whatever Parse accepts renders to a config
// that means the same to PVE: the same keys with the same values, mount
// point properties compared one by one (booleans as PVE reads them), the
// same environment, raw lines and description.
func FuzzParseRenderKeepsContent(f *testing.F) {
	for _, conf := range pveWrittenConfigs {
		f.Add(conf)
	}
	f.Add("mp0: volume=/srv/a,mp=/a,,size=1G,ro=0\nunprivileged: yes\nlxc.init.cwd = /x\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := lxc.Parse(text)
		if err != nil {
			return
		}
		out := c.Render()
		want, got := meaning(text), meaning(out)
		if !want.equal(got) {
			t.Fatalf("Parse then Render changed what the config says:\n%q\n->\n%q\nwant %+v\ngot  %+v", text, out, want, got)
		}
	})
}

// configMeaning is what PVE takes from a config's main section.
type configMeaning struct {
	desc []string
	keys map[string]string // last one wins, as in PVE's hash
	env  []string
	raw  []string
}

func (a configMeaning) equal(b configMeaning) bool {
	return slices.Equal(a.desc, b.desc) && maps.Equal(a.keys, b.keys) && slices.Equal(a.env, b.env) && slices.Equal(a.raw, b.raw)
}

// The line patterns of parse_pct_config.
var (
	rawLine = regexp.MustCompile(`^(lxc\.[a-z0-9_\-.]+)(?::|\s*=)\s*(.*?)\s*$`)
	keyLine = regexp.MustCompile(`^([a-z][a-z_]*\d*):\s*(.+?)\s*$`)
	mpKey   = regexp.MustCompile(`^mp\d+$`)
)

func meaning(text string) configMeaning {
	m := configMeaning{keys: map[string]string{}}
lines:
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r", ""), "\n") {
		switch {
		case strings.TrimSpace(l) == "":
			continue
		case strings.HasPrefix(l, "["):
			break lines
		case strings.HasPrefix(l, "#"):
			m.desc = append(m.desc, l[1:])
		case rawLine.MatchString(l):
			r := rawLine.FindStringSubmatch(l)
			if r[1] == "lxc.environment.runtime" {
				m.env = append(m.env, r[2])
			} else {
				m.raw = append(m.raw, r[1]+"="+r[2])
			}
		case keyLine.MatchString(l):
			k := keyLine.FindStringSubmatch(l)
			switch {
			case k[1] == "unprivileged":
				m.keys[k[1]] = boolValue(k[2])
			case mpKey.MatchString(k[1]):
				m.keys[k[1]] = mountMeaning(k[2])
			default:
				m.keys[k[1]] = k[2]
			}
		}
	}
	// write_pct_config writes no empty description lines at the end.
	for len(m.desc) > 0 && m.desc[len(m.desc)-1] == "" {
		m.desc = m.desc[:len(m.desc)-1]
	}
	return m
}

// mountMeaning lists a mount point's properties sorted, booleans as
// parse_boolean reads them; ro=0 and keepattrs=0 are the defaults and
// count as unset. Blanks around a value do not count: parse_pct_config
// trims the line, so they cannot survive on the property written last,
// whatever the order (PVE's own print_ct_mountpoint included).
func mountMeaning(v string) string {
	var props []string
	for _, part := range strings.Split(v, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, val, hasEq := strings.Cut(part, "=")
		if !hasEq {
			k, val = "volume", part
		}
		switch k {
		case "ro", "keepattrs", "backup", "acl", "quota", "replicate", "shared":
			val = boolValue(val)
			if val == "0" && (k == "ro" || k == "keepattrs") {
				continue
			}
		}
		props = append(props, k+"="+strings.TrimSpace(val))
	}
	slices.Sort(props)
	return strings.Join(props, ",")
}

func boolValue(s string) string {
	switch strings.ToLower(s) {
	case "1", "on", "yes", "true":
		return "1"
	case "0", "off", "no", "false":
		return "0"
	}
	return s
}
