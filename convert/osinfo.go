package convert

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"github.com/nexcage/nexcage/tartree"
	"strings"
)

// OSInfo is what PVE will see in the rootfs (proxmox.md §3).
type OSInfo struct {
	ID        string `json:"id,omitempty"`         // os-release ID
	VersionID string `json:"version_id,omitempty"` // os-release VERSION_ID
	// OSType is the ostype PVE will use: a distribution it manages, or
	// "unmanaged" when it would refuse the image or there is no OS at all.
	OSType string `json:"ostype"`
	// Why explains an unmanaged OSType.
	Why string `json:"why,omitempty"`
}

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
func DetectOS(t *tartree.Tree) OSInfo {
	var raw []byte
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if b, err := t.ReadFile(p, 64<<10); err == nil {
			raw = b
			break
		}
	}
	if raw == nil {
		return OSInfo{OSType: "unmanaged", Why: "the rootfs has no /etc/os-release: PVE falls back to unmanaged"}
	}
	fields := parseOSRelease(raw)
	info := OSInfo{ID: fields["ID"], VersionID: fields["VERSION_ID"]}
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

// DebianArch maps an OCI architecture (and variant) to the Debian name PVE
// uses in template names and --arch.
func DebianArch(arch, variant string) (string, error) {
	switch arch {
	case "amd64", "arm64", "i386", "riscv64", "armhf":
		return arch, nil
	case "386":
		return "i386", nil
	case "arm":
		if variant == "" || variant == "v7" || variant == "v6" {
			return "armhf", nil
		}
	}
	return "", fmt.Errorf("architecture %s%s cannot run on Proxmox VE (it knows amd64, i386, arm64, armhf, riscv64)", arch, map[bool]string{true: "/" + variant, false: ""}[variant != ""])
}

// ArchFromELF reads the machine of /bin/sh, as PVE does when --arch is not
// given; "" when there is no readable ELF shell.
func ArchFromELF(t *tartree.Tree) string {
	b, err := t.ReadFile("bin/sh", 64)
	if err != nil || len(b) < 20 {
		return ""
	}
	// The machine field is all we need: offset 18, in the file's byte order.
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return ""
	}
	var order binary.ByteOrder = binary.LittleEndian
	if b[5] == 2 {
		order = binary.BigEndian
	}
	switch elf.Machine(order.Uint16(b[18:20])) {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_386:
		return "i386"
	case elf.EM_ARM:
		return "armhf"
	case elf.EM_RISCV:
		return "riscv64"
	}
	return ""
}

// hasInit reports whether the rootfs can boot as a system container.
func hasInit(t *tartree.Tree) bool {
	n, _ := t.Resolve("sbin/init")
	return n != nil && n.Type == tar.TypeReg
}
