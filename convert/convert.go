// Package convert turns a container rootfs into a Proxmox VE template: a
// PAX tar in one canonical order, compressed, with the CT config and a
// .json sidecar beside it.
package convert

import (
	"github.com/nexcage/nexcage/internal/annotation"
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"

	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/progress"
)

// Options control a conversion. The zero value converts to a zstd template
// named by convention in the current directory.
type Options struct {
	// Output is the template file, or a directory (existing, or ending in
	// "/") to write the conventionally named template into.
	Output      string
	Compression template.Compression // "" = from Output's suffix, else zstd
	Level       int                  // 0 = the compressor's default
	Name        string               // overrides the name part of the conventional name
	Version     string               // overrides the version part
	// Privileged marks the template privileged-only and keeps ids above
	// 65535; SquashHighIDs maps those ids to 65534 instead.
	Privileged    bool
	SquashHighIDs bool
	// Process overrides the image's process (nil: the image's).
	Process *template.ProcessOverrides
	// SourceDateEpoch clamps mtimes (SOURCE_DATE_EPOCH); zero = no clamp.
	SourceDateEpoch time.Time
	// ToolVersion is recorded in the .json sidecar.
	ToolVersion string
	Progress    progress.Reporter
}

// ErrHighIDs means the rootfs has owners an unprivileged container cannot
// map.
var ErrHighIDs = errors.New("ids above 65535")

// maxUnprivilegedID is the largest id PVE's default 65536-id map covers.
const maxUnprivilegedID = 65535

// Result says what was written.
type Result struct {
	Template string `json:"template"`
	Config   string `json:"config"`
	// SidecarJSON is the path of the .json sidecar, and Sidecar what it
	// holds (the keys keep their first names, "manifest" and "metadata").
	SidecarJSON string           `json:"manifest"`
	Sidecar     template.Sidecar `json:"metadata"`
	// Precompressed is how many bytes of the archive were compressed
	// before it was written, while build read the layers (see
	// internal/zframe); the rest was compressed by the writer.
	Precompressed int64 `json:"precompressed_bytes,omitempty"`
	// AddedVolumeDirs are the image's volumes the rootfs lacked, added to
	// the template as empty directories (root:root 0755) so that PVE
	// and LXC have a mount point, as docker and podman create them.
	AddedVolumeDirs []string `json:"added_volume_dirs,omitempty"`
}

// Convert writes the template, NAME.conf and NAME.json for a bundle.
func Convert(ctx context.Context, b *Bundle, opts Options) (*Result, error) {
	rep := opts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	rep.Step("reading the rootfs %s", b.Rootfs)
	tree, err := TreeFromDir(b.Rootfs, b.idMap())
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", b.Dir, err)
	}
	return Write(ctx, tree, b.Spec, opts)
}

func sourceFromAnnotations(a map[string]string) template.Source {
	s := template.Source{Reference: a[annotation.Reference], Digest: a[annotation.Digest], SourceDigest: a[annotation.SourceDigest], Name: a[annotation.Name]}
	if a[annotation.OS] != "" && a[annotation.Arch] != "" {
		s.Platform = a[annotation.OS] + "/" + a[annotation.Arch]
		if a[annotation.Variant] != "" {
			s.Platform += "/" + a[annotation.Variant]
		}
	}
	return s
}

// plan is everything decided about a template before a byte is written.
type plan struct {
	opts        Options
	compression template.Compression
	target      string
	os          template.OSInfo
	arch        string
	system      bool
	config      *lxc.Config
	meta        template.Sidecar
	// addedVolumes are the volume directories prepareTree added.
	addedVolumes []string
}

// Write turns a tree plus its runtime config into a template and sidecars.
// It is shared by every source of trees (a bundle's rootfs, flattened
// layers), which is what makes their output byte-identical.
func Write(ctx context.Context, tree *tartree.Tree, spec *runtimeSpec, opts Options) (*Result, error) {
	src := sourceFromAnnotations(spec.Annotations)
	rep := opts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	p, err := makePlan(tree, spec, src, opts, rep)
	if err != nil {
		return nil, err
	}
	rep.Step("writing %s", p.target)
	res, err := p.write(ctx, tree, rep)
	if err != nil {
		return nil, err
	}
	res.AddedVolumeDirs = p.addedVolumes
	rep.Step("wrote %s (%s, sha256 %s)", res.Template, progress.HumanBytes(res.Sidecar.Template.Size), res.Sidecar.Template.SHA256[:12])
	return res, nil
}

func makePlan(tree *tartree.Tree, spec *runtimeSpec, src template.Source, opts Options, rep progress.Reporter) (*plan, error) {
	if opts.Privileged && opts.SquashHighIDs {
		return nil, fmt.Errorf("Privileged and SquashHighIDs exclude each other: a privileged template keeps high ids, squashing drops them")
	}
	p := &plan{opts: opts}
	if err := p.chooseOutput(); err != nil {
		return nil, err
	}
	if err := checkVolumes(spec); err != nil {
		return nil, err
	}
	var err error
	if p.addedVolumes, err = prepareTree(tree, spec, opts, rep); err != nil {
		return nil, err
	}

	p.os = DetectOS(tree)
	arch, variant := spec.Annotations[annotation.Arch], spec.Annotations[annotation.Variant]
	if arch == "" {
		arch = template.ArchFromELF(tree)
	}
	if arch == "" {
		return nil, fmt.Errorf("cannot tell the rootfs's architecture: config.json has no %s annotation and /bin/sh is not an ELF binary; set the annotation (an unpack of an image does)", annotation.Arch)
	}
	if p.arch, err = template.DebianArch(arch, variant); err != nil {
		return nil, err
	}
	if p.os.OSType == "unmanaged" && p.os.Why != "" {
		rep.Step("ostype unmanaged: %s", p.os.Why)
	}

	if spec, err = processSpec(tree, spec, opts, rep); err != nil {
		return nil, err
	}
	var args []string
	if spec.Process != nil {
		args = spec.Process.Args
	}
	p.system = lxc.IsSystemContainer(args, hasInit(tree))
	if p.system {
		dropUmociTerm(spec, opts.Process)
	}
	if p.config, err = lxc.FromSpec(specForLXC(spec), p.system); err != nil {
		if !opts.Process.IsZero() {
			return nil, fmt.Errorf("the process (the image's, with the overrides): %w", err)
		}
		return nil, fmt.Errorf("the image's process (config.json): %w", err)
	}
	if err := tmpfsDirs(tree, p.config, rep); err != nil {
		return nil, err
	}
	entrypointNote(p.config, args, rep)
	p.config.Arch = p.arch
	// An application container keeps the detected ostype too, as PVE's
	// own OCI import does (the OS setup then writes /etc/resolv.conf and
	// /etc/hosts, which an app with a host-managed network needs).
	p.config.OSType = p.os.OSType
	p.config.Unprivileged = !opts.Privileged
	if p.config.Entrypoint != "" {
		if n, _ := tree.Resolve(strings.TrimPrefix(args[0], "/")); strings.HasPrefix(args[0], "/") && n == nil {
			return nil, fmt.Errorf("the entrypoint %s does not exist in the rootfs: fix process.args in config.json", args[0])
		}
	}

	// Only a directory output needs a name made up: an explicit file is
	// named, whatever the bundle records.
	if p.target == "" || strings.HasSuffix(p.target, string(os.PathSeparator)) {
		name, err := p.templateName(spec, src)
		if err != nil {
			return nil, err
		}
		p.target = filepath.Join(p.target, name)
	}
	p.config.Description = "nexcage template " + filepath.Base(p.target)
	if src.Reference != "" {
		p.config.Description += " from " + src.Reference
		if src.Digest != "" {
			p.config.Description += "@" + src.Digest
		}
	}
	p.meta = p.sidecar(spec, src)
	// deploy and check read at most lxc.MaxConfigSize (what PVE's cluster
	// filesystem stores): a bigger .conf would be a template nothing can use.
	if n := len(p.config.Render()); n > lxc.MaxConfigSize {
		return nil, fmt.Errorf("the container config would be %s, over the %s PVE stores for a CT config (a very large environment value in config.json?): shrink process.env", progress.HumanBytes(int64(n)), progress.HumanBytes(lxc.MaxConfigSize))
	}
	return p, nil
}

// PrecompressLevel is the zstd level a template for opts is written at, or
// 0 when it will not be zstd: given to rootfs.FlattenOptions, it has large
// files compressed while the layers are read, for Write to reuse.
func PrecompressLevel(opts Options) int {
	p := &plan{opts: opts}
	if err := p.chooseOutput(); err != nil || p.compression != template.Zstd {
		return 0
	}
	return p.opts.Level
}

// chooseOutput settles the compression and whether Output names a file or
// a directory.
func (p *plan) chooseOutput() error {
	out := p.opts.Output
	fromName, hasSuffix := template.CompressionFromName(out)
	if fi, err := os.Stat(out); out == "" || (err == nil && fi.IsDir()) || strings.HasSuffix(out, "/") {
		if out != "" && !strings.HasSuffix(out, "/") {
			out += "/"
		}
		hasSuffix = false
	} else if !hasSuffix {
		return fmt.Errorf("-o %s: a template must end in .tar.zst, .tar.gz or .tar.xz (PVE refuses other names), or name a directory (end it with /)", out)
	}
	p.compression = p.opts.Compression
	switch {
	case p.compression == "" && hasSuffix:
		p.compression = fromName
	case p.compression == "":
		p.compression = template.Zstd
	case hasSuffix && fromName != p.compression:
		return fmt.Errorf("output %s ends in %s but the compression is %s: make them agree", out, fromName.Suffix(), p.compression)
	}
	if err := checkLevel(p.compression, p.opts.Level); err != nil {
		return err
	}
	if p.opts.Level == 0 {
		p.opts.Level = p.compression.DefaultLevel()
	}
	if out != "" && !strings.HasSuffix(out, "/") {
		abs, err := filepath.Abs(out)
		if err != nil {
			return err
		}
		p.target = abs
		return nil
	}
	if out == "" {
		out = "."
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	p.target = abs + string(os.PathSeparator)
	return nil
}

// prepareTree applies what a template must be: /dev empty, no device
// nodes, image volumes present as directories, ids mappable. It returns
// the volume directories it added (absolute container paths), each also
// announced on rep: the template then holds a directory the image did not.
func prepareTree(tree *tartree.Tree, spec *runtimeSpec, opts Options, rep progress.Reporter) (added []string, err error) {
	if tree.Root.Type != tar.TypeDir {
		return nil, fmt.Errorf("the rootfs root is not a directory")
	}
	if dev := tree.Get("dev"); dev != nil && dev.Type == tar.TypeDir {
		dev.ClearChildren()
	} else {
		tree.Put("dev", &tartree.Node{Type: tar.TypeDir, Mode: 0o755, ModTime: tree.Root.ModTime})
	}
	var devices []string
	tree.Walk(func(p string, n *tartree.Node) error {
		if n.Type == tar.TypeChar || n.Type == tar.TypeBlock {
			devices = append(devices, p)
		}
		return nil
	})
	for _, d := range devices {
		tree.Remove(d)
	}
	if len(devices) > 0 {
		rep.Warn("dropped %d device node(s) outside /dev (e.g. /%s): PVE does not extract device nodes; containers get theirs from LXC", len(devices), devices[0])
	}
	for _, v := range volumes(spec) {
		rel := strings.TrimPrefix(path.Clean(v), "/")
		if rel == "" || rel == "." {
			continue
		}
		if n, _ := tree.Resolve(rel); n != nil {
			if n.Type != tar.TypeDir {
				return nil, fmt.Errorf("image volume %s is not a directory in the rootfs: fix the image's VOLUME or the file at that path", v)
			}
			continue
		}
		tree.Put(rel, &tartree.Node{Type: tar.TypeDir, Mode: 0o755, ModTime: tree.Root.ModTime})
		added = append(added, "/"+rel)
		rep.Step("image volume /%s is not in the rootfs: added as an empty directory (root:root 0755) to mount it on", rel)
	}
	return added, checkIDs(tree, opts)
}

func checkIDs(tree *tartree.Tree, opts Options) error {
	var high []string
	tree.Walk(func(p string, n *tartree.Node) error {
		if n.UID > maxUnprivilegedID || n.GID > maxUnprivilegedID {
			if opts.SquashHighIDs {
				if n.UID > maxUnprivilegedID {
					n.UID = 65534
				}
				if n.GID > maxUnprivilegedID {
					n.GID = 65534
				}
				return nil
			}
			high = append(high, fmt.Sprintf("/%s (%d:%d)", strings.TrimPrefix(p, "."), n.UID, n.GID))
		}
		return nil
	})
	if len(high) == 0 || opts.Privileged {
		return nil
	}
	shown := high
	if len(shown) > 10 {
		shown = append(shown[:10:10], fmt.Sprintf("and %d more", len(high)-10))
	}
	return errkind.Errorf(ErrHighIDs, "%d path(s) are owned by ids above 65535, which an unprivileged container cannot map (PVE's extraction would fail): %s; a privileged-only template keeps them, squashing gives them to 65534 (nobody)",
		len(high), strings.Join(shown, ", "))
}

// specForLXC removes what umoci puts in every config.json but the image
// never asked for: the tmpfs mounts it makes for VOLUMEs (a volume is
// persistent data, which deploy gives real storage, not a tmpfs that
// forgets everything at every restart) and its placeholder hostname.
func specForLXC(spec *runtimeSpec) *runtimeSpec {
	out := *spec
	if out.Hostname == umociDefaultHostname {
		out.Hostname = ""
	}
	vols := map[string]bool{}
	for _, v := range volumes(spec) {
		vols[path.Clean(v)] = true
	}
	out.Mounts = nil
	for _, m := range spec.Mounts {
		switch {
		case m.Type == "tmpfs" && vols[path.Clean(m.Destination)]:
		case m.Destination == "/etc/resolv.conf" && m.Source == "/etc/resolv.conf":
			// umoci's rootless config binds the host's resolv.conf; PVE
			// writes the container's own.
		default:
			out.Mounts = append(out.Mounts, m)
		}
	}
	return &out
}

const umociDefaultHostname = "umoci-default"

func volumes(spec *runtimeSpec) []string {
	v := spec.Annotations[annotation.Volumes]
	if v == "" {
		return nil
	}
	out := strings.Split(v, ",")
	for i, x := range out {
		if c, err := lxc.CheckContainerPath(x); err == nil {
			out[i] = c
		}
	}
	sort.Strings(out)
	return out
}

// checkVolumes refuses image VOLUMEs that deploy could not turn into an
// mpN's mp= (checkVolumes runs before anything else uses them): each
// becomes storage mounted at that path.
func checkVolumes(spec *runtimeSpec) error {
	for _, v := range volumes(spec) {
		if _, err := lxc.CheckContainerPath(v); err != nil {
			return fmt.Errorf("image volume %w: fix the image's VOLUME (or the %s annotation)", err, annotation.Volumes)
		}
	}
	return nil
}

// write produces the three files under temporary names and renames them
// into place only when all are complete.
func (p *plan) write(ctx context.Context, tree *tartree.Tree, rep progress.Reporter) (res *Result, err error) {
	dir := filepath.Dir(p.target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create the output directory %s: %w", dir, err)
	}
	tmpl, err := atomicfile.Create(p.target, 0o644)
	if err != nil {
		return nil, err
	}
	defer tmpl.Abort()
	h := sha256.New()
	counted := &countWriter{w: tmpl}
	zw, err := compressor(counted, h, p.compression, p.opts.Level)
	if err != nil {
		return nil, err
	}
	bar := rep.Bytes("template "+string(p.compression), contentSize(tree))
	raw := &countWriter{w: zw, progress: bar}
	fr, _ := zw.(framer)
	if err := writeTar(ctx, raw, fr, raw.skip, tree, p.opts.SourceDateEpoch); err != nil {
		zw.Close()
		bar.Done("failed")
		return nil, p.writeError(err)
	}
	if err := zw.Close(); err != nil {
		bar.Done("failed")
		return nil, p.writeError(err)
	}
	bar.Done(fmt.Sprintf("written, compressed %.1f:1", float64(raw.n)/float64(max(counted.n, 1))))
	p.meta.Template.SHA256 = hex.EncodeToString(h.Sum(nil))
	p.meta.Template.Size = counted.n

	base := strings.TrimSuffix(p.target, p.compression.Suffix())
	confFile, err := atomicfile.Create(base+".conf", 0o644)
	if err != nil {
		return nil, err
	}
	defer confFile.Abort()
	if _, err := io.WriteString(confFile, p.config.Render()); err != nil {
		return nil, p.writeError(err)
	}
	jsonFile, err := atomicfile.Create(base+".json", 0o644)
	if err != nil {
		return nil, err
	}
	defer jsonFile.Abort()
	enc := json.NewEncoder(jsonFile)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p.meta); err != nil {
		return nil, p.writeError(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, f := range []*atomicfile.File{tmpl, confFile, jsonFile} {
		if err := f.Commit(); err != nil {
			return nil, err
		}
	}
	res = &Result{Template: p.target, Config: base + ".conf", SidecarJSON: base + ".json", Sidecar: p.meta}
	if fw, ok := zw.(*frameWriter); ok {
		res.Precompressed = fw.reused
	}
	return res, nil
}

func (p *plan) writeError(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("write %s: %w: free space in %s (the old template, if any, is untouched)", p.target, err, filepath.Dir(p.target))
	}
	return fmt.Errorf("write %s: %w", p.target, err)
}

type countWriter struct {
	w        io.Writer
	n        int64
	progress progress.Counter
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.skip(int64(n))
	return n, err
}

// skip counts bytes that were not written through c.
func (c *countWriter) skip(n int64) {
	c.n += n
	if c.progress != nil {
		c.progress.Add(int(n))
	}
}

// contentSize is about the tar's size, for the progress bar's total.
func contentSize(t *tartree.Tree) int64 {
	var total int64
	t.Walk(func(_ string, n *tartree.Node) error {
		total += 512 + n.Size
		return nil
	})
	return total
}

// tmpfsDirs makes each tmpfs mount's destination a real directory in the
// rootfs. LXC mounts these before pivot_root, and creating a missing
// destination there (create=dir) follows the rootfs's symlinks on the
// host: run -> /etc/x would make a directory on the host. So the template
// carries the directory itself, and a destination reached through a
// symlink is refused.
func tmpfsDirs(tree *tartree.Tree, c *lxc.Config, rep progress.Reporter) error {
	for _, o := range c.Raw {
		if o.Key != "lxc.mount.entry" {
			continue
		}
		f := strings.Fields(o.Value)
		if len(f) < 3 || f[0] != "tmpfs" || f[2] != "tmpfs" {
			continue
		}
		rel := strings.Trim(path.Clean("/"+f[1]), "/")
		if rel == "" {
			continue
		}
		parts := strings.Split(rel, "/")
		for i := range parts {
			sub := strings.Join(parts[:i+1], "/")
			n := tree.Get(sub)
			switch {
			case n == nil:
				tree.Put(sub, &tartree.Node{Type: tar.TypeDir, Mode: 0o755, ModTime: tree.Root.ModTime})
				if i == len(parts)-1 {
					rep.Step("tmpfs mount point /%s is not in the rootfs: added as an empty directory (root:root 0755)", rel)
				}
			case n.Type == tar.TypeSymlink:
				return fmt.Errorf("tmpfs mount /%s goes through the symlink /%s in the rootfs: LXC would follow it on the host to create the mount point; make /%s a directory or mount the tmpfs elsewhere", rel, sub, sub)
			case n.Type != tar.TypeDir:
				return fmt.Errorf("tmpfs mount /%s: /%s is not a directory in the rootfs", rel, sub)
			}
		}
	}
	return nil
}
