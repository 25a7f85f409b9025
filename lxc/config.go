// Package lxc models a Proxmox VE container configuration: the text of
// /etc/pve/lxc/<vmid>.conf, its PVE keys (arch, ostype, mpN, entrypoint,
// ...) and the raw lxc.* lines PVE passes through to LXC.
package lxc

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Option is one "key: value" line.
type Option struct {
	Key, Value string
}

// Config is the main section of a CT config. Typed fields hold the keys
// nexcage reasons about; Options keeps every other PVE key in file order so
// a parsed config renders back unchanged.
type Config struct {
	Description  string // the leading "#" comment lines
	Arch         string
	OSType       string
	Hostname     string
	Unprivileged bool
	Cmode        string
	Entrypoint   string
	// Env is the container's runtime environment; PVE keeps it as
	// lxc.environment.runtime lines.
	Env         []string
	MountPoints []MountPoint
	Options     []Option
	// Raw holds lxc.* keys other than lxc.environment.runtime, in order.
	Raw []Option
}

// MountPoint is an mpN key.
type MountPoint struct {
	Index int
	// Volume is a host path for a bind mount, or STORAGE:SIZE_GIB for a new
	// storage-backed volume.
	Volume string
	Path   string // mp=, inside the container
	RO     bool
	// Backup is nil when unset; bind mounts are never backed up anyway.
	Backup *bool
}

// Key is "mpN".
func (m MountPoint) Key() string { return "mp" + strconv.Itoa(m.Index) }

// Value renders the mount point's property string.
func (m MountPoint) Value() string {
	v := m.Volume + ",mp=" + m.Path
	if m.RO {
		v += ",ro=1"
	}
	if m.Backup != nil {
		if *m.Backup {
			v += ",backup=1"
		} else {
			v += ",backup=0"
		}
	}
	return v
}

// IsBind reports whether the volume is a host path (a bind mount) rather
// than storage.
func (m MountPoint) IsBind() bool { return strings.HasPrefix(m.Volume, "/") }

const envKey = "lxc.environment.runtime"

// Render writes the config in /etc/pve/lxc/<vmid>.conf syntax: PVE keys
// first (sorted, as PVE writes them), then raw lxc.* lines in order.
func (c *Config) Render() string {
	var b strings.Builder
	// Carriage returns do not survive a line-based file: drop them here as
	// Parse does, so a config renders the same after a round trip.
	if d := strings.TrimRight(strings.ReplaceAll(c.Description, "\r", ""), "\n"); d != "" {
		for _, l := range strings.Split(d, "\n") {
			b.WriteString("#" + l + "\n")
		}
	}
	var opts []Option
	add := func(k, v string) {
		if v != "" {
			opts = append(opts, Option{k, v})
		}
	}
	add("arch", c.Arch)
	add("cmode", c.Cmode)
	add("entrypoint", c.Entrypoint)
	add("hostname", c.Hostname)
	add("ostype", c.OSType)
	// Always explicit: PVE 9 creates unprivileged containers when the key
	// is absent, so a privileged-only template must say 0.
	if c.Unprivileged {
		add("unprivileged", "1")
	} else {
		add("unprivileged", "0")
	}
	for _, m := range c.MountPoints {
		add(m.Key(), m.Value())
	}
	opts = append(opts, c.Options...)
	sort.SliceStable(opts, func(i, j int) bool { return keyLess(opts[i].Key, opts[j].Key) })
	for _, o := range opts {
		fmt.Fprintf(&b, "%s: %s\n", o.Key, o.Value)
	}
	for _, e := range c.Env {
		fmt.Fprintf(&b, "%s: %s\n", envKey, e)
	}
	for _, o := range c.Raw {
		fmt.Fprintf(&b, "%s: %s\n", o.Key, o.Value)
	}
	return b.String()
}

// keyLess sorts like PVE: alphabetically, with numbered keys (mp2 < mp10)
// in numeric order.
func keyLess(a, b string) bool {
	pa, na := splitIndex(a)
	pb, nb := splitIndex(b)
	if pa == pb && na >= 0 && nb >= 0 {
		return na < nb
	}
	return a < b
}

func splitIndex(k string) (string, int) {
	i := len(k)
	for i > 0 && k[i-1] >= '0' && k[i-1] <= '9' {
		i--
	}
	if i == len(k) || i == 0 {
		return k, -1
	}
	n, _ := strconv.Atoi(k[i:])
	return k[:i], n
}

// ParseError is a line of a CT config that PVE would not accept.
type ParseError struct {
	Line int
	Text string
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("line %d: %s (%q)", e.Line, e.Msg, e.Text)
}

// Parse reads the main section of a CT config. Snapshot sections
// ("[name]") end it. Keys PVE does not know, and raw lxc.* keys it refuses,
// are errors, as they make PVE refuse the whole file.
func Parse(text string) (*Config, error) {
	c := &Config{}
	var desc []string
	// No line-length limit: a long environment value is one line, and the
	// whole config is bounded instead (MaxConfigSize, by its readers).
	for i, l := range strings.Split(text, "\n") {
		n := i + 1
		line := strings.ReplaceAll(l, "\r", "")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			continue
		case strings.HasPrefix(trimmed, "["):
			return c.finish(desc), nil
		case strings.HasPrefix(line, "#"):
			desc = append(desc, strings.TrimPrefix(line, "#"))
			continue
		}
		key, value, err := splitLine(trimmed)
		if err != nil {
			return nil, &ParseError{n, line, err.Error()}
		}
		if err := c.set(key, value); err != nil {
			return nil, &ParseError{n, line, err.Error()}
		}
	}
	return c.finish(desc), nil
}

func (c *Config) finish(desc []string) *Config {
	c.Description = strings.Join(desc, "\n")
	return c
}

func splitLine(line string) (string, string, error) {
	// Raw LXC keys may also be written LXC-style, "key = value".
	if strings.HasPrefix(line, "lxc.") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.Contains(k, ":") {
			return strings.TrimSpace(k), strings.TrimSpace(v), nil
		}
	}
	k, v, ok := strings.Cut(line, ":")
	if !ok {
		return "", "", fmt.Errorf("not a \"key: value\" line")
	}
	return strings.TrimSpace(k), strings.TrimSpace(v), nil
}

func (c *Config) set(key, value string) error {
	if strings.HasPrefix(key, "lxc.") {
		if err := CheckRawKey(key); err != nil {
			return err
		}
		if key == envKey {
			c.Env = append(c.Env, value)
		} else {
			c.Raw = append(c.Raw, Option{key, value})
		}
		return nil
	}
	switch key {
	case "arch":
		c.Arch = value
	case "ostype":
		c.OSType = value
	case "hostname":
		c.Hostname = value
	case "unprivileged":
		c.Unprivileged = value == "1"
	case "cmode":
		c.Cmode = value
	case "entrypoint":
		c.Entrypoint = value
	default:
		prefix, idx := splitIndex(key)
		if prefix == "mp" && idx >= 0 {
			m, err := ParseMountPoint(idx, value)
			if err != nil {
				return err
			}
			c.MountPoints = append(c.MountPoints, m)
			return nil
		}
		if !knownKey(key) {
			return fmt.Errorf("unknown key %q: PVE refuses the whole config", key)
		}
		c.Options = append(c.Options, Option{key, value})
	}
	return nil
}

// ParseMountPoint parses the value of an mpN key.
func ParseMountPoint(idx int, value string) (MountPoint, error) {
	m := MountPoint{Index: idx}
	if idx > 255 {
		return m, fmt.Errorf("mp%d: PVE allows mp0 to mp255", idx)
	}
	for i, part := range strings.Split(value, ",") {
		k, v, hasEq := strings.Cut(part, "=")
		if i == 0 && (!hasEq || k == "volume") {
			if !hasEq {
				v = part
			}
			m.Volume = v
			continue
		}
		switch k {
		case "mp":
			m.Path = v
		case "ro":
			m.RO = v == "1"
		case "backup":
			b := v == "1"
			m.Backup = &b
		case "volume":
			m.Volume = v
		case "acl", "quota", "replicate", "shared", "size", "mountoptions":
			// Accepted by PVE; nexcage does not act on them.
		default:
			return m, fmt.Errorf("mp%d: unknown property %q", idx, k)
		}
	}
	if m.Volume == "" || m.Path == "" {
		return m, fmt.Errorf("mp%d: needs a volume and mp=PATH", idx)
	}
	return m, nil
}

// knownKeys are the PVE keys of a CT config's main section (pve-container
// PVE::LXC::Config's confdesc), other than the typed ones.
var knownKeys = map[string]bool{
	"cores": true, "cpulimit": true, "cpuunits": true, "memory": true, "swap": true,
	"rootfs": true, "onboot": true, "startup": true, "template": true, "console": true,
	"tty": true, "description": true, "nameserver": true, "searchdomain": true,
	"timezone": true, "protection": true, "features": true, "hookscript": true,
	"tags": true, "lock": true, "digest": true, "parent": true, "snaptime": true,
	"debug": true, "env": true, "pool": true,
}

var indexedKeys = map[string]int{"net": 31, "mp": 255, "unused": 255, "dev": 255}

func knownKey(k string) bool {
	if knownKeys[k] {
		return true
	}
	p, n := splitIndex(k)
	max, ok := indexedKeys[p]
	return ok && n >= 0 && n <= max
}

// rawKeyPrefixes are the lxc.* keys PVE accepts in a CT config
// (proxmox.md §5, pve-container's valid_lxc_conf_keys). lxc.rootfs.* is
// deliberately absent: PVE manages the rootfs itself.
var rawKeyPrefixes = []string{
	"lxc.init.cmd", "lxc.init.cwd", "lxc.init.uid", "lxc.init.gid",
	"lxc.environment", "lxc.mount.entry", "lxc.mount.auto", "lxc.mount.fstab",
	"lxc.signal.", "lxc.cap.drop", "lxc.cap.keep", "lxc.apparmor.", "lxc.seccomp.",
	"lxc.idmap", "lxc.cgroup.", "lxc.cgroup2.", "lxc.prlimit.", "lxc.hook.",
	"lxc.log.", "lxc.start.", "lxc.group", "lxc.sysctl.", "lxc.console.",
	"lxc.tty.", "lxc.pty.", "lxc.autodev", "lxc.apparmor",
}

// CheckRawKey returns an error for a raw key PVE refuses.
func CheckRawKey(key string) error {
	if strings.HasPrefix(key, "lxc.rootfs") {
		return fmt.Errorf("%s is refused by PVE: it manages the rootfs itself (use mpN or lxc.mount.entry for extra mounts)", key)
	}
	for _, p := range rawKeyPrefixes {
		if key == p || strings.HasPrefix(key, p) {
			return nil
		}
	}
	return fmt.Errorf("raw key %s is not one PVE accepts: PVE refuses the whole config", key)
}
