package pct

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/nexcage/nexcage/lxc"
)

// markerPrefix starts the description line nexcage writes into every
// container it creates, so `list --containers` needs no state file.
const markerPrefix = "nexcage:"

// Marker is what nexcage records about a container it created.
type Marker struct {
	Template string `json:"template"`
	Image    string `json:"image,omitempty"`
	Digest   string `json:"digest,omitempty"`
}

func (m Marker) line() string {
	s := markerPrefix + " template=" + m.Template
	if m.Image != "" {
		s += " image=" + m.Image
	}
	if m.Digest != "" {
		s += " digest=" + m.Digest
	}
	return s
}

// parseMarker reads the last marker line: nexcage appends its own after
// whatever description the template brought. The description may be as
// the config file holds it, where PVE wrote the marker percent-encoded
// ("nexcage%3A template=local%3Avztmpl/..."), or decoded as the API
// reports it; the marker's values hold no '%' (markerValueOK), so
// decoding either way reads it. A line whose decoded text has a control
// or other non-printable rune, or a value outside its grammar, is not a
// marker: anyone allowed to edit the description can write one, and its
// values are printed to terminals and used to rebuild the image.
func parseMarker(description string) (Marker, bool) {
	lines := strings.Split(description, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		m, ok := parseMarkerLine(lines[i])
		if ok {
			return m, true
		}
	}
	return Marker{}, false
}

// parseMarkerLine reads one description line as a marker.
func parseMarkerLine(line string) (Marker, bool) {
	l := lxc.DecodeText(line)
	rest, ok := strings.CutPrefix(strings.TrimSpace(l), markerPrefix)
	if !ok || strings.ContainsFunc(rest, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }) {
		return Marker{}, false
	}
	var m Marker
	for _, f := range strings.Fields(rest) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "template":
			m.Template = v
		case "image":
			m.Image = v
		case "digest":
			m.Digest = v
		}
	}
	if !markerValueOK("template", m.Template) || !markerValueOK("image reference", m.Image) || !markerValueOK("digest", m.Digest) {
		return Marker{}, false
	}
	return m, true
}

// Managed is a container nexcage created.
type Managed struct {
	Name   string `json:"name"`
	VMID   int    `json:"vmid"`
	Node   string `json:"node"`
	Status string `json:"status"`
	Marker
}

// ListManaged lists the cluster's containers that carry nexcage's marker,
// reading each one's config (from the cluster file system on the host,
// through the API remotely).
func (h *Host) ListManaged(ctx context.Context) ([]Managed, error) {
	res, err := h.Resources(ctx)
	if err != nil {
		return nil, err
	}
	var out []Managed
	for _, r := range res {
		if r.Type != "lxc" {
			continue
		}
		desc, err := h.description(ctx, r)
		if err != nil {
			return nil, err
		}
		m, ok := parseMarker(desc)
		if !ok {
			continue
		}
		out = append(out, Managed{Name: r.Name, VMID: r.VMID, Node: r.Node, Status: r.Status, Marker: m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	return out, nil
}

// description is the description of CT r, "" when its config is gone
// (destroyed meanwhile) or, on the host, unreadable.
func (h *Host) description(ctx context.Context, r Resource) (string, error) {
	if h.api != nil {
		return h.remoteDescription(ctx, r)
	}
	raw, err := os.ReadFile(filepath.Join(h.Root, "etc/pve/nodes", r.Node, "lxc", strconv.Itoa(r.VMID)+".conf"))
	if err != nil {
		return "", nil
	}
	c, err := lxc.Parse(string(raw))
	if err != nil {
		return "", nil
	}
	return c.Description, nil
}

// FindByName returns the cluster's container with this hostname.
func (h *Host) FindByName(ctx context.Context, name string) (*Resource, error) {
	res, err := h.Resources(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range res {
		if r.Name == name {
			return &r, nil
		}
	}
	return nil, nil
}

// markerGrammar is what each marker value may be: a volume id
// (STORAGE:NAME), an image reference, an OCI digest (ALGORITHM:ENCODED).
// None holds a blank (which would inject another key= field), a control
// character (which reaches terminals) or '%' (markers are read
// percent-decoded: %20 would be a blank).
var markerGrammar = map[string]*regexp.Regexp{
	"template":        regexp.MustCompile(`^(?:[A-Za-z][A-Za-z0-9._-]*:[A-Za-z0-9._+@/~,-]+)?$`),
	"image reference": regexp.MustCompile(`^[A-Za-z0-9._+@:/~,-]*$`),
	"digest":          regexp.MustCompile(`^(?:[a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]+)?$`),
}

// markerValueOK reports whether v can be the marker's field ("template",
// "image reference" or "digest"); "" is allowed (not recorded).
func markerValueOK(field, v string) bool {
	return markerGrammar[field].MatchString(v)
}

// describe adds nexcage's marker to a description.
func describe(description string, m Marker) string {
	if description == "" {
		return m.line()
	}
	return description + "\n" + m.line()
}
