package generate

import (
	"archive/tar"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/annotation"
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/template"
)

// ErrUnsafeMember marks a template member that would land outside the
// bundle (absolute, "..", through a symlink that climbs out, a hard link
// to such a place).
var ErrUnsafeMember = errors.New("unsafe template member")

// ErrCorruptTemplate marks a template that is not a (compressed) tar, or
// is truncated or damaged.
var ErrCorruptTemplate = errors.New("corrupt template")

const templateFix = "build or download the template again"

// openTemplate returns the decompressed tar stream of a template, its
// compression told from the content (the name may lie).
func openTemplate(file string, r io.Reader) (io.Reader, func(), error) {
	zr, _, err := template.NewTarReader(r)
	var fe *template.FormatError
	switch {
	case errors.Is(err, template.ErrEmpty):
		return nil, nil, errkind.Errorf(ErrCorruptTemplate, "template %s is empty: %s", file, templateFix)
	case errors.Is(err, template.ErrUnknownFormat):
		return nil, nil, errkind.Errorf(ErrCorruptTemplate, "%s is not a template: it is neither a zstd, gzip or xz compressed tar nor a plain tar; give a .tar.zst, .tar.gz or .tar.xz template (what convert writes, or a PVE template)", file)
	case errors.As(err, &fe):
		return nil, nil, errkind.Errorf(ErrCorruptTemplate, "template %s is %v: %s", file, fe, templateFix)
	case err != nil:
		return nil, nil, err
	}
	return zr, func() { zr.Close() }, nil
}

// extractStats says what an extraction did.
type extractStats struct {
	sha256 string // of the template file
}

// extract unpacks a template into root safely: no member lands outside
// root, whatever its name, its link target or the symlinks before it.
func (w *writer) extract(ctx context.Context, file string, rep progress.Reporter) (*extractStats, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open the template: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("template %s is not a regular file: give a .tar.zst, .tar.gz or .tar.xz template", file)
	}
	h := sha256.New()
	bar := rep.Bytes("extracting "+filepath.Base(file), fi.Size())
	counted := &progress.Reader{R: io.TeeReader(f, h), C: bar}
	raw, closeZ, err := openTemplate(file, counted)
	if err != nil {
		bar.Done("failed")
		return nil, err
	}
	defer closeZ()
	if err := w.extractTar(ctx, file, raw); err != nil {
		bar.Done("failed")
		return nil, err
	}
	// The compression's own checksums (zstd frames, gzip's trailer) are
	// checked only when the stream is read to its end.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		bar.Done("failed")
		return nil, errkind.Errorf(ErrCorruptTemplate, "template %s is corrupt after its last member (%v): %s", file, err, templateFix)
	}
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	bar.Done(fmt.Sprintf("%d entries", w.entries))
	return &extractStats{sha256: hex.EncodeToString(h.Sum(nil))}, nil
}

func (w *writer) extractTar(ctx context.Context, file string, r io.Reader) error {
	tr := tar.NewReader(r)
	buf := make([]byte, 1<<20)
	last := ""
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if w.entries == 0 {
				return errkind.Errorf(ErrCorruptTemplate, "%s is not a template: it does not hold a tar archive (%v); give a .tar.zst, .tar.gz or .tar.xz template", file, err)
			}
			return errkind.Errorf(ErrCorruptTemplate, "template %s is truncated or corrupt after member %s (%v): %s", file, quoteName(last), err, templateFix)
		}
		last = hdr.Name
		if err := w.member(hdr, readErrors{tr}, buf); err != nil {
			var re *readError
			switch {
			case errors.As(err, &re):
				return errkind.Errorf(ErrCorruptTemplate, "template %s is truncated or corrupt in member %s (%v): %s", file, quoteName(hdr.Name), re.err, templateFix)
			case errors.Is(err, ErrUnsafeMember) || errors.Is(err, ErrCorruptTemplate):
				return fmt.Errorf("template %s: %w", file, err)
			}
			return fmt.Errorf("template %s: member %s: %w", file, quoteName(hdr.Name), err)
		}
	}
	if w.entries == 0 {
		return errkind.Errorf(ErrCorruptTemplate, "template %s holds no files: %s", file, templateFix)
	}
	return nil
}

// readError is a failure to read the template itself (the decompressor,
// the tar stream), as opposed to one writing the rootfs.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

type readErrors struct{ r io.Reader }

func (r readErrors) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}

// quoteName quotes a member name for a message, shortening huge ones.
func quoteName(name string) string {
	if len(name) > 200 {
		name = name[:100] + "..." + name[len(name)-60:]
	}
	return fmt.Sprintf("%q", name)
}

// memberPath turns a member name into a clean relative path ("." for the
// root), refusing names that are absolute or contain "..": GNU tar refuses
// those too.
func memberPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", errkind.Errorf(ErrUnsafeMember, "member %s has an absolute name: template members must be relative to the root (./etc/...)", quoteName(name))
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", errkind.Errorf(ErrUnsafeMember, "member %s contains '..', which could climb out of the bundle", quoteName(name))
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", errkind.Errorf(ErrUnsafeMember, "member %s contains a NUL byte", quoteName(name))
	}
	return path.Clean("./" + name), nil
}

func headerMeta(hdr *tar.Header) meta {
	m := meta{mode: uint32(hdr.Mode & 0o7777), uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if ok && keepXattr(name) {
			if m.xattrs == nil {
				m.xattrs = map[string]string{}
			}
			m.xattrs[name] = v
		}
	}
	return m
}

// member applies one tar member.
func (w *writer) member(hdr *tar.Header, r io.Reader, buf []byte) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return errkind.Errorf(ErrCorruptTemplate, "member %s has type %q, which a template cannot hold", quoteName(hdr.Name), hdr.Typeflag)
	}
	rel, err := memberPath(hdr.Name)
	if err != nil {
		return err
	}
	m := headerMeta(hdr)
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return errkind.Errorf(ErrUnsafeMember, "member %s would replace the root directory with a non-directory", quoteName(hdr.Name))
		}
		w.dirs["."] = m
		w.entries++
		return nil
	}
	parent, err := w.parentDir(hdr.Name, path.Dir(rel))
	if err != nil {
		return err
	}
	target := path.Join(parent, path.Base(rel))
	p := filepath.Join(w.root, target)

	if done, err := w.replace(target, hdr.Typeflag == tar.TypeDir, m); done || err != nil {
		return err
	}
	w.entries++
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		w.dirs[target] = m
		return nil
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		n, err := io.CopyBuffer(f, r, buf)
		w.bytes += n
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeLink:
		return w.hardlink(hdr, p)
	case tar.TypeSymlink:
		return w.symlink(target, hdr.Linkname, m)
	case tar.TypeChar:
		return w.special(target, unix.S_IFCHR, unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)), m)
	case tar.TypeBlock:
		return w.special(target, unix.S_IFBLK, unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)), m)
	case tar.TypeFifo:
		return w.special(target, unix.S_IFIFO, 0, m)
	}
	return w.apply(target, m, false)
}

// replace makes way for a member at target, as tar does: what is there
// is removed, except that a directory over a directory only changes its
// metadata, which done reports.
func (w *writer) replace(target string, dir bool, m meta) (done bool, err error) {
	p := filepath.Join(w.root, target)
	fi, err := os.Lstat(p)
	if err != nil {
		return false, nil
	}
	if fi.IsDir() && dir {
		w.dirs[target] = m
		w.entries++
		return true, nil
	}
	if err := atomicfile.RemoveTree(p); err != nil {
		return false, err
	}
	for d := range w.dirs {
		if d == target || strings.HasPrefix(d, target+"/") {
			delete(w.dirs, d)
		}
	}
	return false, nil
}

// hardlink links p to the file an earlier member made, its name resolved
// inside the root as the member's own.
func (w *writer) hardlink(hdr *tar.Header, p string) error {
	lrel, err := memberPath(hdr.Linkname)
	if err != nil || lrel == "." {
		return errkind.Errorf(ErrUnsafeMember, "hard link %s -> %s points outside the root", quoteName(hdr.Name), quoteName(hdr.Linkname))
	}
	lparent, err := w.parentDir(hdr.Name, path.Dir(lrel))
	if err != nil {
		return err
	}
	src := filepath.Join(w.root, lparent, path.Base(lrel))
	fi, err := os.Lstat(src)
	if err != nil || fi.IsDir() {
		return errkind.Errorf(ErrCorruptTemplate, "hard link %s -> %s: the target is not a file that an earlier member made", quoteName(hdr.Name), quoteName(hdr.Linkname))
	}
	// link(2) copies nothing from the header: a hard link is the inode it
	// points to.
	return os.Link(src, p)
}

// parentDir resolves a member's parent directory inside root the way the
// container sees it (absolute symlinks start at root), creating missing
// directories as tar does, and refuses a relative symlink that climbs
// above root. It returns the resolved slash path.
func (w *writer) parentDir(member, rel string) (string, error) {
	if rel == "." || rel == "" {
		return ".", nil
	}
	lookup := saferoot.Lookup(func(rp string) (saferoot.Kind, string, error) {
		k, target, err := w.r.Lookup(rp)
		if err == nil && k == saferoot.Other {
			return k, "", errkind.Errorf(ErrCorruptTemplate, "member %s: /%s is not a directory", quoteName(member), rp)
		}
		return k, target, err
	})
	resolved, _, err := saferoot.Resolve(rel, lookup, saferoot.Options[string]{Missing: func(dir, name string) (string, error) {
		// A missing parent: tar makes it. It gets fixed metadata (0755,
		// root, mtime 0) unless a member for it follows.
		rp := saferoot.Join(dir, name)
		if err := w.r.Mkdir(rp, 0o700); err != nil {
			return "", err
		}
		w.dirs[rp] = meta{mode: 0o755, mtime: time.Unix(0, 0)}
		return rp, nil
	}})
	return resolved, saferoot.Refusal(ErrUnsafeMember, "member "+quoteName(member), err)
}

// sidecars are a template's .conf and .json, when they exist.
type sidecars struct {
	confPath, jsonPath string
	conf               *lxc.Config
	sidecar            *template.Sidecar
}

func readSidecars(file string) (*sidecars, error) {
	s := &sidecars{}
	s.confPath, s.jsonPath = template.SidecarPaths(file)
	if _, err := os.Stat(s.jsonPath); err == nil {
		m, err := template.ReadSidecar(s.jsonPath)
		if err != nil {
			return nil, fmt.Errorf("%v: fix it, or move it away to generate from the template alone", err)
		}
		s.sidecar = m
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read the template's .json sidecar: %w", err)
	} else {
		s.jsonPath = ""
	}
	if raw, err := os.ReadFile(s.confPath); err == nil {
		c, err := lxc.Parse(string(raw))
		if err != nil {
			return nil, fmt.Errorf("%s is not a valid CT config: %v: fix it, or move it away to generate from the template alone", s.confPath, err)
		}
		s.conf = c
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read the template's CT config: %w", err)
	} else {
		s.confPath = ""
	}
	return s, nil
}

var dateVersion = regexp.MustCompile(`^[0-9]{8}$`)

// spec rebuilds the runtime config convert read when it wrote the
// template: every field that shapes the template's name, its .conf and its
// .json comes back, so converting the bundle gives the same three files.
func (s *sidecars) spec(facts rootfsFacts, file string) (*rspec.Spec, bool) {
	spec := BaseSpec()
	haveProcess := false
	if m := s.sidecar; m != nil {
		haveProcess = sidecarSpec(spec, m, file)
	}
	if c := s.conf; c != nil {
		if confSpec(spec, c, s.sidecar == nil) {
			haveProcess = true
		}
	}
	for k, v := range spec.Annotations {
		if v == "" {
			delete(spec.Annotations, k)
		}
	}
	if !haveProcess {
		spec.Process.Args = facts.defaultArgs()
	}
	archUnlessSet(spec.Annotations, facts.arch, facts.variant)
	return spec, haveProcess
}

// sidecarSpec sets spec's process, mounts and annotations from the .json
// sidecar m of the template file; it reports whether m gave a process.
func sidecarSpec(spec *rspec.Spec, m *template.Sidecar, file string) (haveProcess bool) {
	if m.Process != nil && len(m.Process.Args) > 0 {
		spec.Process.Args = m.Process.Args
		spec.Process.Env = m.Process.Env
		spec.Process.Cwd = m.Process.Cwd
		spec.Process.User = rspec.User{UID: m.Process.UID, GID: m.Process.GID, AdditionalGids: m.Process.Groups}
		haveProcess = true
	}
	spec.Mounts = nil
	for _, mt := range m.Mounts {
		spec.Mounts = append(spec.Mounts, rspec.Mount{Destination: mt.Destination, Type: mt.Type, Source: mt.Source, Options: mt.Options})
	}
	sidecarAnnotations(spec.Annotations, m)
	createdFromName(spec.Annotations, m, file)
	return haveProcess
}

// sidecarAnnotations gives back the image annotations m records: its
// labels, source, volumes, ports and platform.
func sidecarAnnotations(a map[string]string, m *template.Sidecar) {
	for k, v := range m.Labels {
		a[k] = v
	}
	a[annotation.Reference] = m.Source.Reference
	a[annotation.Digest] = m.Source.Digest
	a[annotation.SourceDigest] = m.Source.SourceDigest
	if m.Source.Name != "" {
		a[annotation.Name] = m.Source.Name
	}
	if len(m.Volumes) > 0 {
		a[annotation.Volumes] = strings.Join(m.Volumes, ",")
	}
	if len(m.ExposedPorts) > 0 {
		a[annotation.ExposedPorts] = strings.Join(m.ExposedPorts, ",")
	}
	if parts := strings.Split(m.Source.Platform, "/"); len(parts) >= 2 {
		a[annotation.OS], a[annotation.Arch] = parts[0], parts[1]
		if len(parts) > 2 {
			a[annotation.Variant] = parts[2]
		}
	}
}

// createdFromName: a conventional name whose version is a date came from
// the image's creation time, which the .json sidecar does not keep: give
// it back, so convert names the template the same. (Any version convert
// prefers, from options, labels or the tag, still wins.)
func createdFromName(a map[string]string, m *template.Sidecar, file string) {
	name := m.Template.File
	if name == "" {
		name = filepath.Base(file)
	}
	if c, ok := template.CompressionFromName(name); ok {
		name = strings.TrimSuffix(name, c.Suffix())
	}
	if parts := strings.Split(name, "_"); len(parts) == 3 && dateVersion.MatchString(parts[1]) {
		if t, err := time.Parse("20060102", parts[1]); err == nil {
			a[annotation.Created] = t.UTC().Format(time.RFC3339)
		}
	}
}

// confSpec sets spec's hostname, stop signal and arch from the .conf c,
// and, when there is no .json sidecar (alone), its process and mounts; it
// reports whether c gave a process.
func confSpec(spec *rspec.Spec, c *lxc.Config, alone bool) (haveProcess bool) {
	spec.Hostname = c.Hostname
	for _, o := range c.Raw {
		if o.Key == "lxc.signal.halt" {
			spec.Annotations[lxc.AnnotationStopSignal] = o.Value
		}
	}
	if alone {
		if c.Entrypoint != "" {
			confProcess(spec.Process, c)
			haveProcess = true
		}
		spec.Mounts = append(spec.Mounts, confMounts(c)...)
	}
	if spec.Annotations[annotation.Arch] == "" && c.Arch != "" {
		if a, v, err := ociArch(c.Arch); err == nil {
			archUnlessSet(spec.Annotations, a, v)
		}
	}
	return haveProcess
}

// confProcess is the process the .conf's lxc.init.* keys describe.
func confProcess(p *rspec.Process, c *lxc.Config) {
	p.Args = lxc.SplitCommand(c.Entrypoint)
	p.Env = c.Env
	for _, o := range c.Raw {
		switch o.Key {
		case "lxc.init.cwd":
			p.Cwd = o.Value
		case "lxc.init.uid":
			fmt.Sscan(o.Value, &p.User.UID)
		case "lxc.init.gid":
			fmt.Sscan(o.Value, &p.User.GID)
		case "lxc.init.groups":
			for _, g := range strings.Split(o.Value, ",") {
				var gid uint32
				if _, err := fmt.Sscan(g, &gid); err == nil {
					p.User.AdditionalGids = append(p.User.AdditionalGids, gid)
				}
			}
		}
	}
}

// archUnlessSet sets the architecture annotations unless one is set
// already.
func archUnlessSet(a map[string]string, arch, variant string) {
	if a[annotation.Arch] == "" && arch != "" {
		a[annotation.Arch] = arch
		if variant != "" {
			a[annotation.Variant] = variant
		}
	}
}

// confMounts turns a CT config's bind mount points and tmpfs mount
// entries back into runtime-spec mounts.
func confMounts(c *lxc.Config) []rspec.Mount {
	var out []rspec.Mount
	for _, mp := range c.MountPoints {
		if !mp.IsBind() {
			continue // storage-backed: nothing a bundle can name
		}
		opts := []string{"rbind"}
		if mp.RO {
			opts = append(opts, "ro")
		}
		out = append(out, rspec.Mount{Type: "bind", Source: mp.Volume, Destination: mp.Path, Options: opts})
	}
	for _, o := range c.Raw {
		if o.Key != "lxc.mount.entry" {
			continue
		}
		f := strings.Fields(o.Value)
		if len(f) < 4 || f[2] != "tmpfs" {
			continue
		}
		var opts []string
		for _, x := range strings.Split(f[3], ",") {
			if x != "create=dir" && x != "" {
				opts = append(opts, x)
			}
		}
		out = append(out, rspec.Mount{Type: "tmpfs", Source: "tmpfs", Destination: "/" + strings.TrimPrefix(f[1], "/"), Options: opts})
	}
	return out
}

// convertRecipe is the part of the recipe the .json sidecar records that
// convert's options take to give the template's bytes again, defaults
// left zero (Result.ConvertRecipe).
func (s *sidecars) convertRecipe() *template.Recipe {
	if s.sidecar == nil {
		return nil
	}
	o := s.sidecar.Recipe
	r := &template.Recipe{Privileged: o.Privileged, SquashHighIDs: o.SquashHighIDs, Name: o.Name, Version: o.Version}
	if o.Compression != string(template.Zstd) {
		r.Compression = o.Compression
	}
	if o.Level != template.Compression(cmp.Or(o.Compression, string(template.Zstd))).DefaultLevel() {
		r.Level = o.Level
	}
	return r
}
