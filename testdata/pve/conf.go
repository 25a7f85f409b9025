package main

import (
	"regexp"
	"sort"
	"strings"

	"github.com/nexcage/nexcage/lxc"
)

// ctConf is a CT config file as pve-container reads and writes it
// (PVE::LXC::Config parse_pct_config / write_pct_config). The stand-in
// keeps its own model rather than nexcage's lxc.Config so that properties
// nexcage does not model (size= on mount points, unusedN, lock) survive a
// rewrite exactly as PVE keeps them. lxc.Parse is used where PVE would
// refuse a config: when the container starts.
type ctConf struct {
	// desc is PVE's description: each "#" line decoded (decode_text)
	// and ended by a newline, as parse_pct_config reads it.
	desc string
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
			c.desc += lxc.DecodeText(d) + "\n"
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
			if m[1] == "description" {
				// An old "description:" key joins the comment lines,
				// decoded, with no newline of its own.
				c.desc += lxc.DecodeText(m[2])
				continue
			}
			c.keys[m[1]] = m[2]
		}
		// PVE warns about and drops anything else; so do we (on rewrite).
	}
	return c
}

// render writes the config the way write_pct_config does: description as
// leading comments, each line encode_text'ed (':' is %3A, '%' is %25),
// keys in Perl's string sort order, then the env lines
// (lxc.environment.runtime), then the other raw lxc.* keys in their order,
// then the other sections.
func (c *ctConf) render() string {
	var b strings.Builder
	for _, d := range c.descLines() {
		b.WriteString("#" + lxc.EncodeText(d) + "\n")
	}
	keys := make([]string, 0, len(c.keys))
	for k := range c.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k + ": " + c.keys[k] + "\n")
	}
	for _, e := range c.env() {
		b.WriteString(envKey + ": " + e + "\n")
	}
	for _, kv := range c.lxc {
		if kv[0] != envKey {
			b.WriteString(kv[0] + ": " + kv[1] + "\n")
		}
	}
	if c.tail != "" {
		b.WriteString("\n" + c.tail)
	}
	return b.String()
}

// setDescription keeps s as PVE's update_vm does; render splits it into
// lines.
func (c *ctConf) setDescription(s string) { c.desc = s }

// descLines are the description's lines as Perl's split(/\n/) makes them:
// trailing empty lines dropped.
func (c *ctConf) descLines() []string {
	d := strings.TrimRight(c.desc, "\n")
	if d == "" {
		return nil
	}
	return strings.Split(d, "\n")
}

// env is the runtime environment, kept as lxc.environment.runtime lines
// (proxmox.md §5).
const envKey = "lxc.environment.runtime"

// env are the values of the lxc.environment.runtime lines, in order.
func (c *ctConf) env() []string {
	var out []string
	for _, kv := range c.lxc {
		if kv[0] == envKey {
			out = append(out, kv[1])
		}
	}
	return out
}

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
