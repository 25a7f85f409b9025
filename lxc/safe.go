package lxc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
)

// MaxConfigSize bounds a CT config: pmxcfs, where PVE keeps
// /etc/pve/lxc/<vmid>.conf, stores no file larger than 1 MiB, so a bigger
// config can never be a container's.
const MaxConfigSize = 1 << 20

// ErrTooLarge is a config over MaxConfigSize.
var ErrTooLarge = errors.New("larger than the 1 MiB PVE's cluster filesystem stores for a CT config")

// ReadConfig reads a CT config file, refusing one over MaxConfigSize
// before it is all in memory.
func ReadConfig(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return "", err
	}
	if len(raw) > MaxConfigSize {
		return "", fmt.Errorf("%s: %w", p, ErrTooLarge)
	}
	return string(raw), nil
}

// UnsafeLine is a line of a template's .conf that nexcage does not write
// itself, or writes only with other values.
type UnsafeLine struct {
	Line   int
	Text   string
	Reason string
}

func (u UnsafeLine) String() string {
	return fmt.Sprintf("line %d %q: %s", u.Line, u.Text, u.Reason)
}

// UnsafeConfigError lists every refused line of a template's .conf.
type UnsafeConfigError struct {
	Lines []UnsafeLine
}

func (e *UnsafeConfigError) Error() string {
	parts := make([]string, len(e.Lines))
	for i, l := range e.Lines {
		parts[i] = l.String()
	}
	return strings.Join(parts, "; ")
}

// ParseTemplateConfig reads a template's .conf as untrusted data: only the
// keys nexcage's convert writes are accepted, each with a value that passes
// the checks convert applies (and those a bind mount from a template needs).
// A raw lxc.* key could run hooks as root on the host, drop the AppArmor
// profile or the capability bounding set; an mpN could bind the host's /.
// The config of the accepted lines is always returned; the refused ones
// come as an *UnsafeConfigError beside it, so a caller may refuse the
// template or go on without them.
func ParseTemplateConfig(text string) (*Config, error) {
	if len(text) > MaxConfigSize {
		return nil, ErrTooLarge
	}
	var kept strings.Builder
	var bad []UnsafeLine
lines:
	for n, line := range strings.Split(text, "\n") {
		line = strings.ReplaceAll(line, "\r", "")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			continue
		case strings.HasPrefix(trimmed, "["):
			// A snapshot section ends the main section, for PVE as for
			// Parse; deploy never reads past it.
			break lines
		case strings.HasPrefix(line, "#"):
			// A comment becomes the container's description: one that
			// looks like nexcage's ownership marker would claim a
			// template and image it is not, and control characters
			// would reach the terminal through --dry-run's preview.
			// Decoded too: a line PVE stores encoded, or one the API
			// reports decoded, must not become a marker either.
			if !strings.Contains(DecodeText(line), "nexcage:") && !hasControl(line) {
				kept.WriteString(line + "\n")
			}
			continue
		}
		key, value, err := splitLine(trimmed)
		if err == nil {
			err = vetTemplateLine(key, value)
		}
		if err != nil {
			bad = append(bad, UnsafeLine{Line: n + 1, Text: line, Reason: err.Error()})
			continue
		}
		kept.WriteString(key + ": " + value + "\n")
	}
	c, err := Parse(kept.String())
	if err != nil {
		// Every kept line passed a check stricter than Parse's.
		return nil, err
	}
	if len(bad) > 0 {
		return c, &UnsafeConfigError{Lines: bad}
	}
	return c, nil
}

// pveArchs and pveOSTypes are the values of PVE's arch and ostype keys.
var pveArchs = map[string]bool{"amd64": true, "i386": true, "arm64": true, "armhf": true, "riscv32": true, "riscv64": true}

var pveOSTypes = map[string]bool{
	"debian": true, "devuan": true, "ubuntu": true, "centos": true, "fedora": true, "opensuse": true,
	"archlinux": true, "alpine": true, "gentoo": true, "nixos": true, "unmanaged": true,
}

// vetTemplateLine is the allow-list of a template's .conf: exactly the
// keys FromSpec and convert produce.
func vetTemplateLine(key, value string) error {
	ctl := hasControl(value)
	if key == envKey || key == "lxc.environment" {
		ctl = controlRE.MatchString(value) // a tab, as CheckEnv lets through
	}
	if hasControl(key) || ctl {
		return errors.New("contains control characters")
	}
	if known, err := vetPVEKey(key, value); known {
		return err
	}
	if known, err := vetProcessKey(key, value); known {
		return err
	}
	if key == "lxc.mount.entry" {
		return vetTmpfsEntry(value)
	}
	// As Parse: mp01 is not mp1 (PVE's keys are mp0 to mp255).
	if prefix, idx := splitIndex(key); prefix == "mp" && idx >= 0 && key == "mp"+strconv.Itoa(idx) {
		return vetTemplateMountPoint(idx, value)
	}
	if strings.HasPrefix(key, "lxc.") {
		return fmt.Errorf("raw key %s is not one nexcage writes: a template may not set it (it could run commands or lift confinement on the host)", key)
	}
	return fmt.Errorf("key %s is not one nexcage writes in a template's config", key)
}

// vetPVEKey vets the PVE keys a template's .conf holds (known says key
// is one of them).
func vetPVEKey(key, value string) (known bool, err error) {
	switch key {
	case "arch":
		if !pveArchs[value] {
			return true, fmt.Errorf("arch %q is not one PVE knows", value)
		}
	case "ostype":
		if !pveOSTypes[value] {
			return true, fmt.Errorf("ostype %q is not one PVE knows", value)
		}
	case "hostname":
		if !ValidDNSName(value) {
			return true, fmt.Errorf("hostname %q is not a valid DNS name", value)
		}
	case "unprivileged":
		if value != "0" && value != "1" {
			return true, fmt.Errorf("unprivileged must be 0 or 1")
		}
	case "cmode":
		if value != "console" && value != "shell" && value != "tty" {
			return true, fmt.Errorf("cmode %q is not console, shell or tty", value)
		}
	default:
		return false, nil
	}
	return true, nil
}

// vetProcessKey vets the keys that describe the container's process:
// entrypoint, environment, lxc.init.* and the stop signal (known says
// key is one of them).
func vetProcessKey(key, value string) (known bool, err error) {
	switch key {
	case "entrypoint":
		if value == "" {
			return true, errors.New("empty entrypoint")
		}
	case envKey:
		if k, _, ok := strings.Cut(value, "="); !ok || k == "" || strings.ContainsAny(k, " \t") {
			return true, fmt.Errorf("%q is not NAME=VALUE", value)
		} else if !ValidEnvName(k) {
			return true, fmt.Errorf("%q: %s", k, envNameMsg)
		}
	case "lxc.init.cwd":
		if !path.IsAbs(value) {
			return true, fmt.Errorf("%q is not an absolute path", value)
		}
	case "lxc.init.uid", "lxc.init.gid":
		if _, err := strconv.ParseUint(value, 10, 32); err != nil {
			return true, fmt.Errorf("%q is not a numeric id", value)
		}
	case "lxc.init.groups":
		for _, g := range strings.Split(value, ",") {
			if _, err := strconv.ParseUint(g, 10, 32); err != nil {
				return true, fmt.Errorf("%q is not a comma-separated list of numeric group ids", value)
			}
		}
	case "lxc.signal.halt":
		if value == "" || strings.ContainsAny(value, " \t") {
			return true, fmt.Errorf("%q is not a signal name", value)
		}
	default:
		return false, nil
	}
	return true, nil
}

// vetTemplateMountPoint accepts what FromSpec writes for a bind mount: a
// host path that passes CheckTemplateBindSource, mp= and ro=1.
func vetTemplateMountPoint(idx int, value string) error {
	m, err := ParseMountPoint(idx, value)
	if err != nil {
		return err
	}
	for i, part := range strings.Split(value, ",") {
		k, _, hasEq := strings.Cut(part, "=")
		if i == 0 && !hasEq {
			continue
		}
		switch k {
		case "volume", "mp", "ro", "backup":
		default:
			return fmt.Errorf("mount point property %q is not one nexcage writes", k)
		}
	}
	if !m.IsBind() {
		return fmt.Errorf("volume %q is not a host directory: nexcage writes only bind mounts in a template's config (image volumes come from the .json)", m.Volume)
	}
	if err := CheckTemplateBindSource(m.Volume); err != nil {
		return err
	}
	_, err = CheckContainerPath(m.Path)
	return err
}

// vetTmpfsEntry accepts only the lxc.mount.entry FromSpec writes for a
// tmpfs mount: "tmpfs DEST tmpfs OPTIONS 0 0".
func vetTmpfsEntry(value string) error {
	f := strings.Fields(value)
	if len(f) != 6 || f[0] != "tmpfs" || f[2] != "tmpfs" || f[4] != "0" || f[5] != "0" {
		return fmt.Errorf("only tmpfs mounts (\"tmpfs DEST tmpfs OPTIONS 0 0\") are accepted, not %q", value)
	}
	if _, err := CheckContainerPath("/" + f[1]); err != nil || strings.HasPrefix(f[1], "/") {
		return fmt.Errorf("tmpfs destination %q is not a clean path relative to the container's root", f[1])
	}
	for _, o := range strings.Split(f[3], ",") {
		if err := checkTmpfsOption(o); err != nil {
			return err
		}
	}
	return nil
}

// tmpfsFlags are the mount flags a tmpfs may carry; bind, rbind, move,
// remount and the propagation flags change what is mounted, or where
// mounts propagate, and are refused.
var tmpfsFlags = map[string]bool{
	"ro": true, "rw": true, "nosuid": true, "suid": true, "nodev": true, "dev": true,
	"noexec": true, "exec": true, "noatime": true, "atime": true, "relatime": true,
	"norelatime": true, "strictatime": true, "nostrictatime": true, "nodiratime": true,
	"diratime": true, "sync": true, "async": true, "lazytime": true, "nolazytime": true,
}

// tmpfsValues are tmpfs's own options, with what their values may be.
var tmpfsValues = map[string]func(string) bool{
	"size":      func(v string) bool { return sizeValue(v, true) },
	"nr_blocks": func(v string) bool { return sizeValue(v, false) },
	"nr_inodes": func(v string) bool { return sizeValue(v, false) },
	"mode":      func(v string) bool { _, err := strconv.ParseUint(v, 8, 32); return err == nil && len(v) <= 5 },
	"uid":       func(v string) bool { _, err := strconv.ParseUint(v, 10, 32); return err == nil },
	"gid":       func(v string) bool { _, err := strconv.ParseUint(v, 10, 32); return err == nil },
	"huge":      func(v string) bool { return v == "never" || v == "always" || v == "within_size" || v == "advise" },
}

func sizeValue(v string, percent bool) bool {
	if v == "" {
		return false
	}
	last := v[len(v)-1]
	switch {
	case strings.ContainsRune("kKmMgGtTpPeE", rune(last)), percent && last == '%':
		v = v[:len(v)-1]
	}
	_, err := strconv.ParseUint(v, 10, 64)
	return err == nil
}

// TmpfsOptionError is a tmpfs mount option nexcage does not pass on.
type TmpfsOptionError struct{ Option string }

func (e *TmpfsOptionError) Error() string {
	return fmt.Sprintf("tmpfs option %q is not accepted (allowed: size=, mode=, uid=, gid=, nr_inodes=, nr_blocks=, huge= and the flags ro, rw, nosuid, nodev, noexec, the atime flags; bind, rbind, move, remount and propagation flags are refused)", e.Option)
}

func checkTmpfsOption(o string) error {
	if tmpfsFlags[o] {
		return nil
	}
	if k, v, ok := strings.Cut(o, "="); ok {
		if check := tmpfsValues[k]; check != nil && check(v) {
			return nil
		}
	}
	return &TmpfsOptionError{o}
}

// PathError is a path that cannot go into a PVE property string or an
// LXC mount entry, or that a template may not name.
type PathError struct {
	Path string
	Msg  string
}

func (e *PathError) Error() string { return fmt.Sprintf("%q %s", e.Path, e.Msg) }

// CheckContainerPath checks a path inside the container (a mount point's
// mp=, a tmpfs destination, an image VOLUME) and returns it cleaned of
// trailing and doubled slashes: absolute, without "." or ".." parts, not
// "/" itself, and free of what a property string or mount entry splits on
// (commas, '=', blanks, control characters).
func CheckContainerPath(p string) (string, error) {
	switch {
	case !path.IsAbs(p):
		return "", &PathError{p, "is not an absolute path"}
	case hasControl(p) || strings.ContainsAny(p, ", \t="):
		return "", &PathError{p, "contains a comma, '=', a blank or a control character, which a PVE property string cannot hold"}
	case strings.Contains(p, "\\"):
		// LXC reads mount entries with getmntent, which turns \012,
		// \040 and the like into newlines and blanks.
		return "", &PathError{p, "contains a backslash, which an LXC mount entry would decode as an escape"}
	case hasDotDot(p) || strings.Contains(p+"/", "/./"):
		return "", &PathError{p, "contains '.' or '..' parts"}
	}
	c := path.Clean(p)
	if c == "/" {
		return "", &PathError{p, "is the container's root: a mount there would hide the rootfs"}
	}
	return c, nil
}

// CheckBindSource checks a host directory to bind into a container, from
// whoever asks: an absolute, clean path without characters a property
// string splits on, and neither "/" nor PVE's cluster filesystem.
func CheckBindSource(p string) error {
	switch {
	case !path.IsAbs(p):
		return &PathError{p, "is not an absolute host path"}
	case p != path.Clean(p) || strings.Contains(p+"/", "/./") || hasDotDot(p):
		return &PathError{p, "is not a clean path (no '.', '..', '//' or trailing '/')"}
	case hasControl(p) || strings.ContainsAny(p, ", \t="):
		return &PathError{p, "contains a comma, '=', a blank or a control character, which a PVE property string cannot hold"}
	case p == "/":
		return &PathError{p, "is the host's root directory"}
	case p == "/etc/pve" || strings.HasPrefix(p, "/etc/pve/"):
		return &PathError{p, "is in /etc/pve, the cluster's configuration"}
	}
	return nil
}

// hostSystemDirs are host directories a template's bind mount may not name,
// be inside, or contain: the system, its configuration and state, users'
// homes (and SSH keys), and the shared scratch directories.
var hostSystemDirs = []string{
	"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
	"/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var",
}

// CheckTemplateBindSource is CheckBindSource for a bind mount a template
// asks for (its .conf, or its bundle's config.json): whoever wrote the
// template chooses the host path, so the host's system directories are
// refused too. A user binds those explicitly at deploy time (--mount).
func CheckTemplateBindSource(p string) error {
	if err := CheckBindSource(p); err != nil {
		return err
	}
	for _, d := range hostSystemDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return &PathError{p, "is in " + d + ", a host system directory a template may not mount (bind it at deploy time instead)"}
		}
	}
	return nil
}

// CheckTemplateLine applies ParseTemplateConfig's allow-list to one
// key and value, for a config that did not come from a file.
func CheckTemplateLine(key, value string) error { return vetTemplateLine(key, value) }
