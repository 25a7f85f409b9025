package main

import (
	"regexp"
	"sort"
	"strings"
)

// ctConf is a CT config file as pve-container reads and writes it
// (PVE::LXC::Config parse_pct_config / write_pct_config). The stand-in
// keeps its own model rather than nexcage's lxc.Config so that properties
// nexcage does not model (size= on mount points, unusedN, lock) survive a
// rewrite exactly as PVE keeps them. lxc.Parse is used where PVE would
// refuse a config: when the container starts.
type ctConf struct {
	desc []string          // "#" comment lines: the description
	keys map[string]string // PVE keys of the main section
	lxc  [][2]string       // raw lxc.* keys, in file order
	tail string            // snapshot and [pve:pending] sections, verbatim
}

var (
	lxcLineRE = regexp.MustCompile(`^(lxc\.[a-z0-9_\-.]+)(?::|\s*=)\s*(.*?)\s*$`)
	keyLineRE = regexp.MustCompile(`^(\S+)\s*:\s*(.*\S)\s*$`)
)

func parseCTConf(text string) *ctConf {
	c := &ctConf{keys: map[string]string{}}
	lines := strings.SplitAfter(text, "\n")
	for i, raw := range lines {
		line := strings.TrimRight(raw, "\r\n")
		if strings.HasPrefix(line, "[") {
			c.tail = strings.Join(lines[i:], "")
			break
		}
		if d, ok := strings.CutPrefix(line, "#"); ok {
			c.desc = append(c.desc, d)
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		if m := lxcLineRE.FindStringSubmatch(line); m != nil {
			c.lxc = append(c.lxc, [2]string{m[1], m[2]})
			continue
		}
		if m := keyLineRE.FindStringSubmatch(line); m != nil {
			c.keys[m[1]] = m[2]
		}
		// PVE warns about and drops anything else; so do we (on rewrite).
	}
	return c
}

// render writes the config the way write_pct_config does: description as
// leading comments, keys in Perl's string sort order, then raw lxc.* keys
// in their order, then the other sections.
func (c *ctConf) render() string {
	var b strings.Builder
	for _, d := range c.desc {
		b.WriteString("#" + d + "\n")
	}
	keys := make([]string, 0, len(c.keys))
	for k := range c.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k + ": " + c.keys[k] + "\n")
	}
	for _, kv := range c.lxc {
		b.WriteString(kv[0] + ": " + kv[1] + "\n")
	}
	if c.tail != "" {
		b.WriteString("\n" + c.tail)
	}
	return b.String()
}

// mainSection is the config's text up to its first other section, as
// stored.
func mainSection(text string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		if strings.HasPrefix(line, "[") {
			break
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

func (c *ctConf) setDescription(s string) {
	c.desc = nil
	if s == "" {
		return
	}
	c.desc = strings.Split(strings.TrimRight(s, "\n"), "\n")
}

// env is the runtime environment, kept as lxc.environment.runtime lines
// (proxmox.md §5).
const envKey = "lxc.environment.runtime"

func (c *ctConf) setEnv(vars []string) {
	var keep [][2]string
	for _, kv := range c.lxc {
		if kv[0] != envKey {
			keep = append(keep, kv)
		}
	}
	for _, v := range vars {
		keep = append(keep, [2]string{envKey, v})
	}
	c.lxc = keep
}

// mountKeys are rootfs and the mpN keys, in numeric order.
func (c *ctConf) mountKeys() []string {
	var out []string
	if _, ok := c.keys["rootfs"]; ok {
		out = append(out, "rootfs")
	}
	for i := 0; i <= maxMP; i++ {
		k := "mp" + itoa(i)
		if _, ok := c.keys[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

// addUnused records a detached volume as unusedN, as PVE does instead of
// deleting data.
func (c *ctConf) addUnused(volid string) {
	for i := 0; i <= maxMP; i++ {
		k := "unused" + itoa(i)
		if _, ok := c.keys[k]; !ok {
			c.keys[k] = volid
			return
		}
	}
}

// volumes are the storage volumes the CT owns: rootfs, mpN and unusedN.
func (c *ctConf) volumes() []string {
	var out []string
	for k, v := range c.keys {
		if k == "rootfs" || isIndexed(k, "mp") {
			vol := parseMP(v).Volume
			if mpType(vol) == "volume" {
				out = append(out, vol)
			}
		} else if isIndexed(k, "unused") {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}
