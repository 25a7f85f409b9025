// Package lxc models a Proxmox VE container configuration: the text of
// /etc/pve/lxc/<vmid>.conf, its PVE keys (arch, ostype, mpN, entrypoint,
// ...) and the raw lxc.* lines PVE passes through to LXC.
package lxc

import (
	"fmt"
	"regexp"
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
	// UnprivilegedUnset: the parsed config has no unprivileged key, and
	// renders without one while Unprivileged is false, as PVE keeps such a
	// config. A config made in code says 0 (see Render); code that
	// decides the container's mode for PVE clears it.
	UnprivilegedUnset bool
	Cmode             string
	Entrypoint        string
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
	// KeepAttrs (keepattrs=1, pve-container 6.1.0 on): PVE gives the
	// volume's root the owner and mode of the directory it is mounted on.
	KeepAttrs bool
	// Extra are the properties nexcage does not act on (size, acl, quota,
	// replicate, shared, mountoptions, idmap), in the order read, kept so
	// that a parsed config renders back with them as PVE keeps them.
	Extra []Option
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
	if m.KeepAttrs {
		v += ",keepattrs=1"
	}
	for _, o := range m.Extra {
		v += "," + o.Key + "=" + o.Value
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
	// Explicit unless a parsed config had no key: PVE 9 creates
	// unprivileged containers when the key is absent, so a privileged-only
	// template must say 0.
	switch {
	case c.Unprivileged:
		add("unprivileged", "1")
	case !c.UnprivilegedUnset:
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

// Parse reads the main section of a CT config as the newest PVE nexcage
// knows (LatestPVE) would; ParseFor names the release.
func Parse(text string) (*Config, error) { return ParseFor(text, LatestPVE) }

// ParseFor reads the main section of a CT config. Snapshot sections
// ("[name]") end it. A line pve-container v does not parse (an unknown
// key, a raw lxc.* key not on its list, a value its schema rejects) is an
// error, as PVE refuses the whole file.
func ParseFor(text string, v PVEContainer) (*Config, error) {
	c := &Config{UnprivilegedUnset: true}
	var desc []string
	// No line-length limit: a long environment value is one line, and the
	// whole config is bounded instead (MaxConfigSize, by its readers).
	for i, l := range strings.Split(text, "\n") {
		n := i + 1
		line := strings.ReplaceAll(l, "\r", "")
		switch {
		case strings.TrimSpace(line) == "":
			continue
		case strings.HasPrefix(line, "["):
			return c.finish(desc), nil
		case strings.HasPrefix(line, "#"):
			desc = append(desc, strings.TrimPrefix(line, "#"))
			continue
		}
		key, value, err := splitLine(line)
		if err != nil {
			return nil, &ParseError{n, line, err.Error()}
		}
		if err := c.set(key, value, v); err != nil {
			return nil, &ParseError{n, line, err.Error()}
		}
	}
	return c.finish(desc), nil
}

func (c *Config) finish(desc []string) *Config {
	c.Description = strings.Join(desc, "\n")
	return c
}

// parse_pct_config's line patterns: a raw LXC key may also be written
// LXC-style, "key = value"; a PVE key is lower-case letters and '_' with
// an optional index, directly followed by ':' and a value.
var (
	rawLineRE = regexp.MustCompile(`^(lxc\.[a-z0-9_\-.]+)(?::|\s*=)\s*(.*?)\s*$`)
	keyLineRE = regexp.MustCompile(`^([a-z][a-z_]*\d*):\s*(.+?)\s*$`)
)

func splitLine(line string) (string, string, error) {
	if m := rawLineRE.FindStringSubmatch(line); m != nil {
		return m[1], m[2], nil
	}
	if m := keyLineRE.FindStringSubmatch(line); m != nil {
		return m[1], m[2], nil
	}
	return "", "", fmt.Errorf("not a \"key: value\" line PVE parses")
}

func (c *Config) set(key, value string, v PVEContainer) error {
	if strings.HasPrefix(key, "lxc.") {
		if err := CheckRawKeyFor(key, v); err != nil {
			return err
		}
		if key == envKey {
			// PVE reads these lines into its env key, which its schema
			// then checks.
			if err := CheckEnvVar(value); err != nil {
				return err
			}
			c.Env = append(c.Env, value)
		} else {
			c.Raw = append(c.Raw, Option{key, value})
		}
		return nil
	}
	// "mp01" is not mp1: PVE knows only the keys mp0 to mp255.
	if prefix, idx := splitIndex(key); prefix == "mp" && idx >= 0 && key == "mp"+strconv.Itoa(idx) {
		m, err := parseMountPoint(idx, value, v)
		if err != nil {
			return err
		}
		c.MountPoints = append(c.MountPoints, m)
		return nil
	}
	if err := CheckKeyFor(key, value, v); err != nil {
		return err
	}
	switch key {
	case "arch":
		c.Arch = value
	case "ostype":
		c.OSType = value
	case "hostname":
		c.Hostname = value
	case "unprivileged":
		c.Unprivileged = isTrue(value)
		c.UnprivilegedUnset = false
	case "cmode":
		c.Cmode = value
	case "entrypoint":
		c.Entrypoint = value
	default:
		c.Options = append(c.Options, Option{key, value})
	}
	return nil
}

// ParseMountPoint parses the value of an mpN key (as LatestPVE does).
func ParseMountPoint(idx int, value string) (MountPoint, error) {
	return parseMountPoint(idx, value, LatestPVE)
}

func parseMountPoint(idx int, value string, v PVEContainer) (MountPoint, error) {
	m := MountPoint{Index: idx}
	if idx > 255 {
		return m, fmt.Errorf("mp%d: PVE allows mp0 to mp255", idx)
	}
	if !strings.Contains(value, "mp=") {
		return m, fmt.Errorf("mp%d: needs a volume and mp=PATH", idx)
	}
	if err := mpSpec.validate(value, v); err != nil {
		return m, fmt.Errorf("mp%d: %v", idx, err)
	}
	for _, part := range strings.Split(value, ",") {
		if strings.TrimSpace(part) == "" {
			continue // PVE's parse_property_string skips empty parts
		}
		k, val, hasEq := strings.Cut(part, "=")
		if !hasEq {
			k, val = "volume", part
		}
		switch k {
		case "mp":
			m.Path = val
		case "ro":
			m.RO = isTrue(val)
		case "backup":
			b := isTrue(val)
			m.Backup = &b
		case "volume":
			m.Volume = val
		case "keepattrs":
			m.KeepAttrs = isTrue(val)
		default:
			m.Extra = append(m.Extra, Option{k, val})
		}
	}
	return m, nil
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}
