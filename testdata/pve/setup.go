package main

// What PVE::LXC::Setup does to a freshly extracted rootfs: detect the
// distribution and architecture, then write hostname, hosts, network, DNS
// and ssh keys into it (proxmox.md §3).
//
// PVE does this chrooted into the rootfs so that symlinks in an untrusted
// template resolve inside it. The stand-in gets the same effect without a
// chroot by opening every path with openat2(RESOLVE_IN_ROOT).

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/pvetest"
)

// rootfs is an extracted container root seen from the host.
type rootfs struct {
	dir          string
	uid, gid     int // the container's root as seen from the host
	unprivileged bool
}

func newRootfs(dir string, unprivileged bool) *rootfs {
	r := &rootfs{dir: dir, unprivileged: unprivileged}
	if unprivileged {
		r.uid, r.gid = pvetest.IDMapBase, pvetest.IDMapBase
	}
	return r
}

// open opens a path of the container, resolving symlinks inside it.
func (r *rootfs) open(p string, flags int, mode uint32) (*os.File, error) {
	dirfd, err := unix.Open(r.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirfd)
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path.Join(r.dir, p)), nil
}

func (r *rootfs) stat(p string) (os.FileInfo, error) {
	f, err := r.open(p, unix.O_PATH, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Stat()
}

// isFile is Perl's -f inside the container.
func (r *rootfs) isFile(p string) bool {
	st, err := r.stat(p)
	return err == nil && st.Mode().IsRegular()
}

func (r *rootfs) isDir(p string) bool {
	st, err := r.stat(p)
	return err == nil && st.IsDir()
}

func (r *rootfs) read(p string, limit int64) ([]byte, error) {
	f, err := r.open(p, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

func (r *rootfs) firstLine(p string) (string, bool) {
	b, err := r.read(p, 4096)
	if err != nil {
		return "", false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line, true
}

// write is PVE::Tools::file_set_contents inside the container: a
// temporary file beside the target, renamed over it. A missing parent
// directory fails, as it does on PVE.
func (r *rootfs) write(p string, data []byte, perm uint32) error {
	dir, base := path.Split(path.Clean("/" + p))
	tmp := fmt.Sprintf("%s%s.tmp.%d", dir, base, os.Getpid())
	parent, err := r.open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("unable to open file '%s' - %s", tmp, errnoText(err))
	}
	defer parent.Close()
	pfd := int(parent.Fd())
	fd, err := unix.Openat(pfd, base+fmt.Sprintf(".tmp.%d", os.Getpid()), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return fmt.Errorf("unable to open file '%s' - %s", tmp, errnoText(err))
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chown(r.uid, r.gid)
	}
	if werr == nil {
		werr = f.Chmod(os.FileMode(perm))
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(pfd, base+fmt.Sprintf(".tmp.%d", os.Getpid()), pfd, base)
	}
	if werr != nil {
		unix.Unlinkat(pfd, base+fmt.Sprintf(".tmp.%d", os.Getpid()), 0)
		return fmt.Errorf("error writing '%s' - %s", p, errnoText(werr))
	}
	return nil
}

// mkdirAll is ct_make_path.
func (r *rootfs) mkdirAll(p string, perm uint32) error {
	cur := "/"
	for _, part := range strings.Split(strings.Trim(path.Clean(p), "/"), "/") {
		next := path.Join(cur, part)
		if !r.isDir(next) {
			parent, err := r.open(cur, unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				return fmt.Errorf("unable to create directory '%s' - %s", next, errnoText(err))
			}
			err = unix.Mkdirat(int(parent.Fd()), part, perm)
			if err == nil {
				err = unix.Fchownat(int(parent.Fd()), part, r.uid, r.gid, unix.AT_SYMLINK_NOFOLLOW)
			}
			parent.Close()
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("unable to create directory '%s' - %s", next, errnoText(err))
			}
		}
		cur = next
	}
	return nil
}

// errnoText renders an errno as Perl's $! does ("No such file or
// directory").
func errnoText(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		s := errno.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}

// ---- OS detection ----

// setupPlugins are the distributions PVE::LXC::Setup manages.
var setupPlugins = map[string]bool{
	"alpine": true, "archlinux": true, "centos": true, "debian": true, "devuan": true,
	"fedora": true, "gentoo": true, "openeuler": true, "opensuse": true, "ubuntu": true, "nixos": true,
}

// pluginAlias maps os-release IDs of related distributions.
var pluginAlias = map[string]string{
	"arch": "archlinux", "sles": "opensuse", "opensuse-leap": "opensuse",
	"opensuse-tumbleweed": "opensuse", "almalinux": "centos", "rocky": "centos",
}

// osRelease reads /etc/os-release, or /usr/lib/os-release, as
// get_ct_os_release does. ok is false when neither exists.
func (r *rootfs) osRelease() (vars map[string]string, ok bool) {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if r.isFile(p) {
			b, _ := r.read(p, 1<<20)
			return parseOSRelease(string(b)), true
		}
	}
	return map[string]string{}, false
}

var (
	osrAssignRE  = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)=(.*)$`)
	osrSingleRE  = regexp.MustCompile(`^'([^']*)'`)
	osrDoubleRE  = regexp.MustCompile(`^"((?:[^"\\]|\\.)*)"`)
	osrBareRE    = regexp.MustCompile(`^([A-Za-z0-9]*)`)
	osrUnescapRE = regexp.MustCompile(`\\(["'` + "`" + `nt$\\])`)
)

// parseOSRelease is PVE's parser, quirks included: an unquoted value stops
// at the first character outside [A-Za-z0-9].
func parseOSRelease(data string) map[string]string {
	vars := map[string]string{}
	for _, line := range strings.Split(data, "\n") {
		m := osrAssignRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		content := m[2]
		if s := osrSingleRE.FindStringSubmatch(content); s != nil {
			vars[m[1]] = s[1]
		} else if s := osrDoubleRE.FindStringSubmatch(content); s != nil {
			vars[m[1]] = osrUnescapRE.ReplaceAllStringFunc(s[1], func(e string) string {
				switch e[1] {
				case 'n':
					return "\n"
				case 't':
					return "\t"
				}
				return e[1:]
			})
		} else if s := osrBareRE.FindStringSubmatch(content); s != nil {
			vars[m[1]] = s[1]
		}
	}
	return vars
}

// detectOS is $autodetect_type: os-release ID, its aliases, then marker
// files. warn receives PVE's warnings.
func (r *rootfs) detectOS(warn func(string)) (string, error) {
	osr, haveOSRelease := r.osRelease()
	if id := osr["ID"]; id != "" {
		if setupPlugins[id] {
			return id, nil
		}
		if a := pluginAlias[id]; a != "" {
			return a, nil
		}
		warn(fmt.Sprintf("unknown ID '%s' in /etc/os-release file, trying fallback detection", id))
	}
	if b, err := r.read("/etc/lsb-release", 1<<20); err == nil && regexp.MustCompile(`(?im)^DISTRIB_ID=Ubuntu$`).Match(b) {
		return "ubuntu", nil
	}
	markers := []struct {
		files []string
		os    string
	}{
		{[]string{"/etc/debian_version"}, "debian"},
		{[]string{"/etc/devuan_version"}, "devuan"},
		{[]string{"/etc/SuSE-brand", "/etc/SuSE-release"}, "opensuse"},
		{[]string{"/etc/fedora-release"}, "fedora"},
		{[]string{"/etc/centos-release", "/etc/redhat-release"}, "centos"},
		{[]string{"/etc/arch-release"}, "archlinux"},
		{[]string{"/etc/alpine-release"}, "alpine"},
		{[]string{"/etc/gentoo-release"}, "gentoo"},
	}
	for _, m := range markers {
		for _, p := range m.files {
			if r.isFile(p) {
				return m.os, nil
			}
		}
	}
	if r.isDir("/nix/store") {
		return "nixos", nil
	}
	if haveOSRelease {
		return "", errors.New("unable to detect OS distribution")
	}
	warn("/etc/os-release file not found and autodetection failed, falling back to 'unmanaged'")
	return "unmanaged", nil
}

// checkPlugin is what the distribution plugins' constructors insist on.
func (r *rootfs) checkPlugin(ostype string) error {
	switch ostype {
	case "debian":
		v, ok := r.firstLine("/etc/debian_version")
		if !ok {
			return errors.New("unable to read version info")
		}
		testing := map[string]string{"buster/sid": "10", "bullseye/sid": "11", "bookworm/sid": "12", "trixie/sid": "13", "forky/sid": "14"}
		if t, ok := testing[v]; ok {
			v = t
		}
		m := regexp.MustCompile(`^(\d+(\.\d+)?)(\.\d+)?`).FindStringSubmatch(v)
		if m == nil {
			return fmt.Errorf("unable to parse version info '%s'", v)
		}
		if n, _ := strconv.ParseFloat(m[1], 64); n < 4 || n >= 15 {
			return fmt.Errorf("unsupported debian version '%s'", m[1])
		}
	case "ubuntu":
		b, err := r.read("/etc/lsb-release", 1<<20)
		if err != nil {
			return fmt.Errorf("unable to open file '/etc/lsb-release' - %s", errnoText(err))
		}
		if !regexp.MustCompile(`(?im)^DISTRIB_ID=Ubuntu$`).Match(b) {
			return errors.New("got unknown DISTRIB_ID")
		}
		if !regexp.MustCompile(`(?im)^DISTRIB_RELEASE=(\d+\.\d+)$`).Match(b) {
			return errors.New("unable to read version info")
		}
	}
	return nil
}

// ---- architecture ----

// elfMachines are the ELF machines PVE knows (detect_architecture).
var elfMachines = map[uint16]string{0x03: "i386", 0x3e: "amd64", 0x28: "armhf", 0xb7: "arm64", 0xf3: "riscv"}

// detectArch reads the ELF header of /bin/sh, resolved inside the
// container.
func (r *rootfs) detectArch() (string, error) {
	const elf = "/bin/sh"
	b, err := r.read(elf, 64)
	if err != nil {
		return "", fmt.Errorf("open '%s' failed: %s", elf, errnoText(err))
	}
	if len(b) < 20 {
		return "", fmt.Errorf("file '%s' too short (%d < 20)", elf, len(b))
	}
	if !bytes.Equal(b[:4], []byte("\x7fELF")) {
		return "", fmt.Errorf("'%s' does not resolve to an ELF!", elf)
	}
	class := b[4]
	var machine uint16
	if b[5] == 2 { // big endian
		machine = uint16(b[18])<<8 | uint16(b[19])
	} else {
		machine = uint16(b[19])<<8 | uint16(b[18])
	}
	arch, ok := elfMachines[machine]
	if !ok {
		return "", fmt.Errorf("'%s' has unknown ELF machine '%d'!", elf, machine)
	}
	if arch == "riscv" {
		switch class {
		case 1:
			arch = "riscv32"
		case 2:
			arch = "riscv64"
		default:
			return "", fmt.Errorf("'%s' has unknown ELF class '%d'!", elf, class)
		}
	}
	return arch, nil
}

// ---- post-create / pre-start setup ----

// setupRootfs writes what the distribution plugin writes after creation
// (post_create_hook) and before every start (pre_start_hook): hostname,
// /etc/hosts, network configuration and resolv.conf; after creation also
// root's ssh keys. Unmanaged containers are left alone.
func (r *rootfs) setupRootfs(c *ctConf, ostype, sshKeys string, create bool) error {
	if ostype == "unmanaged" || ostype == "" {
		return nil
	}
	// protected_call needs /dev to chroot into the container.
	if !r.isDir("/dev") {
		if err := r.mkdirAll("/dev", 0o755); err != nil {
			return fmt.Errorf("failed to create temporary /dev directory: %v", err)
		}
	}
	if !create {
		// Skip fsck on boot.
		if err := r.write("/fastboot", nil, 0o644); err != nil {
			return err
		}
	}
	if err := r.setupNetwork(c, ostype); err != nil {
		return err
	}
	if err := r.setHostname(c); err != nil {
		return err
	}
	if err := r.setDNS(c); err != nil {
		return err
	}
	if create && sshKeys != "" {
		if err := r.mkdirAll("/root/.ssh", 0o700); err != nil {
			return err
		}
		data := "# --- BEGIN PVE ---\n" + strings.TrimRight(sshKeys, "\n") + "\n# --- END PVE ---\n"
		if err := r.write("/root/.ssh/authorized_keys", []byte(data), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// netConf is a parsed netN value.
type netConf map[string]string

func (c *ctConf) nets() []netConf {
	var out []netConf
	for i := 0; i <= maxNet; i++ {
		v, ok := c.keys["net"+itoa(i)]
		if !ok {
			continue
		}
		n := netConf{}
		for _, part := range strings.Split(v, ",") {
			k, val, _ := strings.Cut(part, "=")
			n[k] = val
		}
		out = append(out, n)
	}
	return out
}

// pveSection replaces or prepends the "# --- BEGIN PVE ---" block PVE
// maintains in files it shares with the container's owner.
func pveSection(old, section string) string {
	block := "# --- BEGIN PVE ---\n" + section + "# --- END PVE ---\n"
	re := regexp.MustCompile(`(?ms)^# --- BEGIN PVE ---\n.*?^# --- END PVE ---\n`)
	if re.MatchString(old) {
		return re.ReplaceAllLiteralString(old, block)
	}
	return block + old
}

func (r *rootfs) setHostname(c *ctConf) error {
	hostname := c.keys["hostname"]
	if hostname == "" {
		hostname = "localhost"
	}
	namepart, _, _ := strings.Cut(hostname, ".")
	hosts, _ := r.read("/etc/hosts", 1<<20)
	all := hostname
	if !strings.Contains(hostname, ".") {
		var withDomains []string
		for _, d := range splitList(c.keys["searchdomain"]) {
			withDomains = append(withDomains, hostname+"."+d)
		}
		all = strings.Join(append(withDomains, hostname), " ")
	} else {
		all = hostname + " " + namepart
	}
	var section string
	if !regexp.MustCompile(`(?m)^\s*127.0.0.1\s`).Match(hosts) {
		section += "127.0.0.1 localhost.localnet localhost\n"
	}
	if !regexp.MustCompile(`(?m)^\s*::1\s`).Match(hosts) {
		section += "::1 localhost.localnet localhost\n"
	}
	hostIP := ""
	if nets := c.nets(); len(nets) > 0 {
		if ip, _, err := net.ParseCIDR(nets[0]["ip"]); err == nil {
			hostIP = ip.String()
		}
	}
	switch {
	case hostIP != "":
		section += hostIP + " " + all + "\n"
	case namepart != "localhost":
		section += "127.0.1.1 " + all + "\n"
	default:
		section += "127.0.1.1 " + namepart + "\n"
	}
	if err := r.write("/etc/hostname", []byte(namepart+"\n"), 0o644); err != nil {
		return err
	}
	return r.write("/etc/hosts", []byte(pveSection(string(hosts), section)), 0o644)
}

// setDNS writes resolv.conf from the CT's nameserver/searchdomain, or the
// host's own settings (lookup_dns_conf).
func (r *rootfs) setDNS(c *ctConf) error {
	search, servers := c.keys["searchdomain"], c.keys["nameserver"]
	if search == "" && servers == "" {
		host, _ := os.ReadFile("/etc/resolv.conf")
		var ns []string
		for _, line := range strings.Split(string(host), "\n") {
			fields := strings.Fields(line)
			if len(fields) >= 2 && fields[0] == "search" {
				search = strings.Join(fields[1:], " ")
			} else if len(fields) >= 2 && fields[0] == "nameserver" && len(ns) < 3 {
				ns = append(ns, fields[1])
			}
		}
		servers = strings.Join(ns, " ")
	}
	var data string
	if search != "" {
		data += "search " + strings.Join(splitList(search), " ") + "\n"
	}
	for _, ns := range splitList(servers) {
		data += "nameserver " + ns + "\n"
	}
	return r.write("/etc/resolv.conf", []byte(data), 0o644)
}

// setupNetwork writes /etc/network/interfaces for the distributions that
// use ifupdown (Debian's plugin, which Alpine and Devuan share).
func (r *rootfs) setupNetwork(c *ctConf, ostype string) error {
	nets := c.nets()
	if len(nets) == 0 || (ostype != "debian" && ostype != "devuan" && ostype != "alpine") {
		return nil
	}
	sort.SliceStable(nets, func(i, j int) bool { return nets[i]["name"] < nets[j]["name"] })
	var b strings.Builder
	b.WriteString("auto lo\niface lo inet loopback\n")
	for _, n := range nets {
		name := n["name"]
		if v4 := n["ip"]; v4 != "" {
			method := v4
			if n["host-managed"] == "1" {
				method = "manual"
			}
			if method != "dhcp" && method != "manual" {
				method = "static"
			}
			fmt.Fprintf(&b, "\nauto %s\niface %s inet %s\n", name, name, method)
			if method == "static" {
				fmt.Fprintf(&b, "\taddress %s\n", v4)
				if gw := n["gw"]; gw != "" {
					fmt.Fprintf(&b, "\tgateway %s\n", gw)
				}
			}
		}
		if v6 := n["ip6"]; v6 != "" {
			method := v6
			if method != "dhcp" && method != "manual" && method != "auto" {
				method = "static"
			}
			fmt.Fprintf(&b, "\niface %s inet6 %s\n", name, method)
			if method == "static" {
				fmt.Fprintf(&b, "\taddress %s\n", v6)
				if gw := n["gw6"]; gw != "" {
					fmt.Fprintf(&b, "\tgateway %s\n", gw)
				}
			}
		}
	}
	return r.write("/etc/network/interfaces", []byte(b.String()), 0o644)
}

// setRootPassword is set_user_password for root with a password given: a
// SHA-512 crypt hash (openssl's, as PVE's crypt() with a "$6$" salt) in
// /etc/shadow, with the day of the change, or in /etc/passwd without one.
func (r *rootfs) setRootPassword(pw string) error {
	cmd := exec.Command("openssl", "passwd", "-6", "-stdin")
	cmd.Stdin = strings.NewReader(pw + "\n")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("crypt: %v", err)
	}
	hash := strings.TrimSpace(string(out))
	file, shadow := "/etc/passwd", r.isFile("/etc/shadow")
	if shadow {
		file = "/etc/shadow"
	}
	old, err := r.read(file, 1<<20)
	if err != nil {
		return nil // no such file: PVE leaves it alone
	}
	lines := strings.SplitAfter(string(old), "\n")
	for i, l := range lines {
		f := strings.SplitN(l, ":", 4)
		if len(f) < 3 || f[0] != "root" {
			continue
		}
		f[1] = hash
		if shadow {
			f[2] = strconv.FormatInt(time.Now().Unix()/86400, 10)
		}
		lines[i] = strings.Join(f, ":")
	}
	perm := uint32(0o640)
	if fi, err := r.stat(file); err == nil {
		perm = uint32(fi.Mode().Perm())
	}
	return r.write(file, []byte(strings.Join(lines, "")), perm)
}
