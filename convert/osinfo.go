package convert

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"
)

// pveTypes maps os-release IDs to the ostype PVE::LXC::Setup picks.
var pveTypes = map[string]string{
	"alpine": "alpine", "arch": "archlinux", "archlinux": "archlinux",
	"centos": "centos", "rocky": "centos", "almalinux": "centos",
	"debian": "debian", "devuan": "devuan", "fedora": "fedora", "gentoo": "gentoo",
	"openeuler": "openeuler", "opensuse": "opensuse", "opensuse-leap": "opensuse",
	"opensuse-tumbleweed": "opensuse", "sles": "opensuse", "ubuntu": "ubuntu", "nixos": "nixos",
}

// markerFiles is PVE's fallback detection, in its order.
var markerFiles = []struct{ path, ostype string }{
	{"etc/debian_version", "debian"},
	{"etc/devuan_version", "devuan"},
	{"etc/alpine-release", "alpine"},
	{"etc/arch-release", "archlinux"},
	{"etc/gentoo-release", "gentoo"},
	{"etc/fedora-release", "fedora"},
	{"etc/redhat-release", "centos"},
	{"etc/SuSE-brand", "opensuse"},
}

// DetectOS reads os-release the way PVE does and says what PVE will do.
func DetectOS(t *tartree.Tree) template.OSInfo {
	var raw []byte
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if b, err := t.ReadFile(p, 64<<10); err == nil {
			raw = b
			break
		}
	}
	if raw == nil {
		return template.OSInfo{OSType: "unmanaged", Why: "the rootfs has no /etc/os-release: PVE falls back to unmanaged"}
	}
	fields := parseOSRelease(raw)
	info := template.OSInfo{ID: fields["ID"], VersionID: fields["VERSION_ID"]}
	ostype, known := pveTypes[info.ID]
	if !known {
		for _, m := range markerFiles {
			if n, _ := t.Resolve(m.path); n != nil {
				ostype, known = m.ostype, true
				break
			}
		}
	}
	if !known {
		info.OSType = "unmanaged"
		info.Why = fmt.Sprintf("os-release ID %q is not a distribution PVE manages and no marker file matches: PVE would refuse it (\"unable to detect OS distribution\")", info.ID)
		return info
	}
	// PVE's setup for these reads one more file and fails without it.
	switch ostype {
	case "debian":
		if n, _ := t.Resolve("etc/debian_version"); n == nil {
			info.OSType, info.Why = "unmanaged", "Debian without /etc/debian_version: PVE's Debian setup would fail"
			return info
		}
	case "ubuntu":
		b, _ := t.ReadFile("etc/lsb-release", 64<<10)
		if !bytes.Contains(b, []byte("DISTRIB_ID=Ubuntu")) {
			info.OSType, info.Why = "unmanaged", "Ubuntu without DISTRIB_ID=Ubuntu in /etc/lsb-release: PVE's Ubuntu setup would fail"
			return info
		}
	}
	info.OSType = ostype
	return info
}

func parseOSRelease(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out[strings.TrimSpace(k)] = v
	}
	return out
}

// hasInit reports whether the rootfs can boot as a system container.
func hasInit(t *tartree.Tree) bool {
	n, _ := t.Resolve("sbin/init")
	return n != nil && n.Type == tar.TypeReg
}
