package rootfs

import (
	"bytes"
	"github.com/nexcage/nexcage/internal/errkind"
	"sort"

	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/apex/log"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/umoci/oci/cas/dir"
	"github.com/opencontainers/umoci/oci/layer"
	"github.com/opencontainers/umoci/pkg/fseval"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/annotation"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/progress"
)

// UnpackOptions configure Unpack.
type UnpackOptions struct {
	// Force replaces a non-empty bundle directory.
	Force bool
	// Rootless unpacks as an ordinary user: the caller's ids stand for
	// root, other owners are kept in the user.rootlesscontainers xattr.
	Rootless bool
	Progress progress.Reporter
	// MaxLayerSize bounds the file content one layer may unpack to
	// (default DefaultMaxLayerSize), as for Flatten.
	MaxLayerSize int64
	// MaxEntries bounds the members of all the image's layers together
	// (default DefaultMaxEntries), as for Flatten.
	MaxEntries int64
}

// UnpackResult says what Unpack wrote.
type UnpackResult struct {
	Bundle   string `json:"bundle"`
	Rootfs   string `json:"rootfs"`
	Config   string `json:"config"`
	Image    Image  `json:"image"`
	Rootless bool   `json:"rootless"`
	Layers   int    `json:"layers"`
	Entries  int    `json:"entries"`
	// Warnings repeats what was reported, for --json users.
	Warnings []string `json:"warnings,omitempty"`
}

// ErrHostileLayer marks a layer entry that tries to reach outside the
// rootfs.
var ErrHostileLayer = errors.New("hostile layer entry")

// errCorruptBlob marks layer failures that mean the stored blob is bad.
var errCorruptBlob = errors.New("corrupt blob")

// ErrBundleExists means the bundle directory is not empty (and Force was
// not set) or is not a directory. It is generate.ErrBundleExists too.
var ErrBundleExists = atomicfile.ErrExists

// Unpack writes img as an OCI runtime bundle: BUNDLE/rootfs and
// BUNDLE/config.json, with umoci's extractor. The bundle is assembled under
// a temporary name beside BUNDLE and renamed into place, so a failure or an
// interrupt leaves no half-made bundle and never damages an existing one.
func (s *Store) Unpack(ctx context.Context, img Image, bundle string, opts UnpackOptions) (res UnpackResult, err error) {
	rep := opts.Progress
	if rep == nil {
		rep = progress.Discard
	}
	bundle, err = filepath.Abs(bundle)
	if err != nil {
		return res, err
	}
	out, err := atomicfile.NewDir(bundle, opts.Force)
	if err != nil {
		return res, err
	}
	if atomicfile.Within(s.Dir, bundle) || atomicfile.Within(bundle, s.Dir) {
		return res, fmt.Errorf("bundle %s and the image store %s overlap: unpacking there would destroy the store; choose a bundle path outside it", bundle, s.Dir)
	}
	manifest, config, err := s.manifestAndConfig(img)
	if err != nil {
		return res, err
	}

	if err := out.Create(); err != nil {
		return res, err
	}
	defer out.Cleanup(&err)
	tmp := out.Path
	mapOpts := mapOptions(opts.Rootless)
	rootfsDir := filepath.Join(tmp, layer.RootfsName)
	if err := os.Mkdir(rootfsDir, 0o755); err != nil {
		return res, err
	}
	if err := os.Chmod(rootfsDir, 0o755); err != nil { // whatever the umask
		return res, err
	}
	// Layers rarely carry an entry for the root directory, so give it a
	// fixed time instead of "now": unpacks of one image stay identical.
	epoch := []unix.Timespec{{}, {}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, rootfsDir, epoch, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return res, err
	}

	restoreLog := routeUmociLog(rep)
	defer restoreLog()
	// Every path nexcage itself touches in the rootfs goes through r: what
	// the layers leave there (symlinks to the host) cannot redirect it.
	r, err := saferoot.Open(rootfsDir)
	if err != nil {
		return res, err
	}
	defer r.Close()
	u := &unpacker{
		limit:    opts.MaxLayerSize,
		budget:   newEntryBudget(opts.MaxEntries, rootfsDir),
		root:     rootfsDir,
		r:        r,
		mapOpts:  mapOpts,
		rootless: opts.Rootless,
		safeDirs: map[string]struct{}{},
		implicit: map[string]struct{}{},
		fakeDevs: map[string]struct{}{},
	}
	rep.Step("unpacking %s into %s", img.Ref, bundle)
	for i, l := range manifest.Layers {
		label := fmt.Sprintf("layer %d/%d %s", i+1, len(manifest.Layers), shortDigest(l.Digest))
		c := rep.Bytes(label, l.Size)
		if err := u.layer(ctx, s, l, config.RootFS.DiffIDs[i], c); err != nil {
			c.Done("failed")
			if errors.Is(err, errCorruptBlob) {
				err = fmt.Errorf("%w: the stored blob is corrupt; pull the image again (a pull replaces corrupt blobs)", err)
			}
			return res, fmt.Errorf("unpack %s: layer %d (%s): %w", img.Ref, i+1, l.Digest, err)
		}
		c.Done("unpacked")
	}
	if err := u.dropFakeDevices(); err != nil {
		return res, fmt.Errorf("unpack %s: %w", img.Ref, err)
	}
	if err := u.normalise(); err != nil {
		return res, fmt.Errorf("unpack %s: %w", img.Ref, err)
	}
	var warnings []string
	if u.devices > 0 {
		// Worded as build's warning: both now drop them.
		w := fmt.Sprintf("rootless unpack: %d device node(s) were not created (e.g. /%s): only root can create them; run as root to keep them (templates drop them anyway: PVE creates /dev itself)", u.devices, u.firstDev)
		rep.Warn("%s", w)
		warnings = append(warnings, w)
	}
	if u.fakeLeft > 0 {
		w := fmt.Sprintf("rootless unpack: %d device node(s) in read-only directories were left as empty files", u.fakeLeft)
		rep.Warn("%s", w)
		warnings = append(warnings, w)
	}

	// umoci reads the account files by their host path, following a
	// symlink to the host's /etc/passwd; give it copies read inside the
	// rootfs, as build gives it copies from its tree.
	accounts := filepath.Join(tmp, ".nexcage-accounts")
	mini, err := accountFiles(r, filepath.Join(accounts, layer.RootfsName))
	if err == nil {
		err = s.writeRuntimeConfig(ctx, filepath.Join(tmp, "config.json"), mini, manifest, mapOpts, imageAnnotations(img, config))
	}
	if rerr := os.RemoveAll(accounts); err == nil {
		err = rerr
	}
	if err != nil {
		return res, fmt.Errorf("unpack %s: %w", img.Ref, err)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if err := out.Commit(); err != nil {
		return res, err
	}
	return UnpackResult{
		Bundle:   bundle,
		Rootfs:   filepath.Join(bundle, layer.RootfsName),
		Config:   filepath.Join(bundle, "config.json"),
		Image:    img,
		Rootless: opts.Rootless,
		Layers:   len(manifest.Layers),
		Entries:  u.entries,
		Warnings: warnings,
	}, nil
}

// RemoveBundle deletes a bundle; as an ordinary user it also removes
// directories a rootless rootfs made read-only (0555 /proc and the like).
func RemoveBundle(dir string) error {
	if os.Geteuid() != 0 {
		return fseval.Rootless.RemoveAll(dir)
	}
	return os.RemoveAll(dir)
}

func mapOptions(rootless bool) layer.MapOptions {
	if !rootless {
		return layer.MapOptions{}
	}
	return layer.MapOptions{
		Rootless:    true,
		UIDMappings: []rspec.LinuxIDMapping{{HostID: uint32(os.Geteuid()), ContainerID: 0, Size: 1}},
		GIDMappings: []rspec.LinuxIDMapping{{HostID: uint32(os.Getegid()), ContainerID: 0, Size: 1}},
	}
}

// manifestAndConfig reads an image's manifest and config from the store,
// both checked against their digests, and refuses a config whose diff_ids
// do not match the layers one for one.
func (s *Store) manifestAndConfig(img Image) (ispec.Manifest, ispec.Image, error) {
	manifest, err := s.ociManifest(img.Digest)
	if err != nil {
		return manifest, ispec.Image{}, err
	}
	config, err := s.imageConfig(manifest)
	if err != nil {
		return manifest, config, err
	}
	if len(config.RootFS.DiffIDs) != len(manifest.Layers) {
		return manifest, config, fmt.Errorf("image %s: the config lists %d diff_ids for %d layers: the image is corrupt", img.Ref, len(config.RootFS.DiffIDs), len(manifest.Layers))
	}
	return manifest, config, nil
}

func (s *Store) ociManifest(digestStr string) (ispec.Manifest, error) {
	var m ispec.Manifest
	d, err := digest.Parse(digestStr)
	if err != nil {
		return m, fmt.Errorf("bad manifest digest %q: %w", digestStr, err)
	}
	b, err := s.readBlob(d, -1, MaxMetadataSize, "manifest "+d.String())
	if _, over := limits.As(err); over {
		return m, err
	}
	if err != nil {
		return m, blobMissing(err, "manifest "+d.String(), s)
	}
	if digest.FromBytes(b) != d {
		return m, errkind.Errorf(ErrDigestMismatch, "manifest %s in the store %s is corrupt: pull the image again (a pull replaces corrupt blobs)", d, s.Dir)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("manifest %s is not valid JSON (%v): pull the image again", d, err)
	}
	return m, nil
}

func (s *Store) imageConfig(m ispec.Manifest) (ispec.Image, error) {
	var img ispec.Image
	b, err := s.readBlob(m.Config.Digest, m.Config.Size, MaxMetadataSize, "image config "+m.Config.Digest.String())
	if _, over := limits.As(err); over {
		return img, err
	}
	if err != nil {
		return img, blobMissing(err, "image config "+m.Config.Digest.String(), s)
	}
	if digest.FromBytes(b) != m.Config.Digest {
		return img, errkind.Errorf(ErrDigestMismatch, "image config %s in the store %s is corrupt: pull the image again (a pull replaces corrupt blobs)", m.Config.Digest, s.Dir)
	}
	if err := json.Unmarshal(b, &img); err != nil {
		return img, fmt.Errorf("image config %s is not valid JSON: %w", m.Config.Digest, err)
	}
	if img.RootFS.Type != "layers" {
		return img, fmt.Errorf("image config %s: unsupported rootfs type %q (only \"layers\" exists)", m.Config.Digest, img.RootFS.Type)
	}
	return img, nil
}

// writeRuntimeConfig generates config.json the way `umoci unpack` does,
// plus nexcage's annotations.
func (s *Store) writeRuntimeConfig(ctx context.Context, path, rootfsDir string, m ispec.Manifest, mapOpts layer.MapOptions, extra map[string]string) error {
	engine, err := dir.Open(s.Dir)
	if err != nil {
		return fmt.Errorf("open the store %s for umoci: %w", s.Dir, err)
	}
	defer engine.Close()
	var buf bytes.Buffer
	// umoci's own errors already start with "generate config.json".
	if err := layer.UnpackRuntimeJSON(ctx, engine, &buf, rootfsDir, m, &mapOpts); err != nil {
		return err
	}
	var spec rspec.Spec
	if err := json.Unmarshal(buf.Bytes(), &spec); err != nil {
		return fmt.Errorf("read back config.json: %w", err)
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	for k, v := range extra {
		if v != "" {
			spec.Annotations[k] = v
		}
	}
	out, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(out, '\n'), 0o644)
}

func imageAnnotations(img Image, config ispec.Image) map[string]string {
	vols := make([]string, 0, len(config.Config.Volumes))
	for v := range config.Config.Volumes {
		vols = append(vols, v)
	}
	sort.Strings(vols)
	// process.args is Entrypoint+Cmd; convert's --cmd replaces only Cmd.
	ep, _ := json.Marshal(append([]string{}, config.Config.Entrypoint...))
	a := map[string]string{
		annotation.Reference:    img.Ref,
		annotation.Digest:       img.Digest,
		annotation.SourceDigest: img.SourceDigest,
		annotation.Volumes:      strings.Join(vols, ","),
		annotation.Entrypoint:   string(ep),
	}
	if img.Name != "" {
		a[annotation.Name] = img.Name
	}
	return a
}

// accountFiles writes dir/etc/passwd and dir/etc/group with the rootfs's
// account files, resolved the way the container resolves them (symlinks
// followed inside the rootfs only), and returns dir: a rootfs holding only
// what umoci's user lookup reads. A file that is missing, escapes, or is
// not a regular file is left out, as if the image had none.
func accountFiles(r *saferoot.Root, dir string) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		return "", err
	}
	for _, name := range []string{"passwd", "group"} {
		b, err := r.ReadFile("etc/"+name, 16<<20)
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "etc", name), b, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// unpacker applies layers to one rootfs, refusing hostile entries before
// umoci sees them.
type unpacker struct {
	root     string
	r        *saferoot.Root
	mapOpts  layer.MapOptions
	rootless bool
	// safeDirs caches paths known to be real directories (not symlinks), so
	// the escape check stats each directory once rather than per entry.
	safeDirs map[string]struct{}
	limit    int64
	// implicit holds directories the extractor creates because an entry
	// lacks its parents; umoci gives them the umask's mode and the current
	// time, which normalise sets to fixed values.
	implicit map[string]struct{}
	// fakeDevs holds the paths where a rootless unpack's umoci wrote an
	// empty file for a device node (or a hard link to one): build drops
	// device nodes, so the unpack deletes them at the end.
	fakeDevs map[string]struct{}
	devices  int
	firstDev string
	fakeLeft int
	entries  int
	budget   *entryBudget
	// whited holds the paths this layer's whiteouts have already cleared
	// of lower layers' files: umoci walks a whiteout's whole target each
	// time, so N repeats over N files would cost N² (see skipWhiteout).
	whited *pathSet
}

func (u *unpacker) layer(ctx context.Context, s *Store, d ispec.Descriptor, diffID digest.Digest, c progress.Counter) error {
	f, err := s.OpenBlob(d.Digest, d.Size)
	if err != nil {
		return blobMissing(err, "the layer blob", s)
	}
	defer f.Close()
	raw, err := decompress(&progress.Reader{R: bufio.NewReaderSize(f, 1<<20), C: c}, d.MediaType)
	if err != nil {
		return err
	}
	defer raw.Close()
	// One extractor per layer, as umoci's UnpackLayer does: it remembers
	// the paths this layer wrote so whiteouts spare them, and that memory
	// must not leak into the next layer's whiteouts.
	extract := layer.NewTarExtractor(&layer.UnpackOptions{OnDiskFormat: layer.DirRootfs{MapOptions: u.mapOpts}})
	u.whited = &pathSet{}
	limit, written := u.limit, int64(0)
	if limit <= 0 {
		limit = DefaultMaxLayerSize
	}
	digester := digest.SHA256.Digester()
	tr := tar.NewReader(io.TeeReader(raw, digester.Hash()))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return errkind.Errorf(errCorruptBlob, "the layer is not a valid tar stream (%v)", err)
		}
		if err := u.budget.add(hdr.Name); err != nil {
			return err
		}
		keep, skip, err := u.check(hdr)
		if err != nil {
			return err
		}
		if skip {
			u.entries++
			continue
		}
		if u.rootless {
			u.trackFakeDevice(hdr, keep)
		}
		// A sparse entry's size is what it unpacks to, whatever the layer's
		// size: check before a byte is written.
		if hdr.Typeflag == tar.TypeReg {
			if written += hdr.Size; written > limit {
				return limits.Errorf(ErrTooLarge, limits.LayerSize, written, limit, "the layer unpacks to more than %s of file content (entry %s claims %d bytes): refusing what looks like a decompression bomb", progress.HumanBytes(limit), quoteName(hdr.Name), hdr.Size)
			}
			if err := u.budget.reserve(hdr.Size, hdr.Name); err != nil {
				return err
			}
		}
		name := hdr.Name
		if err := extract.UnpackEntry(u.root, hdr, tr); err != nil {
			if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
				return errkind.Errorf(errCorruptBlob, "entry %s: %w", quoteName(name), err)
			}
			return fmt.Errorf("entry %s: %w", quoteName(name), err)
		}
		if err := keep.restore(); err != nil {
			return err
		}
		u.entries++
	}
	// Like umoci: tar writers may pad past the end-of-archive marker, and
	// the diff_id covers those bytes too.
	if _, err := io.Copy(io.Discard, io.TeeReader(raw, digester.Hash())); err != nil {
		return errkind.Errorf(errCorruptBlob, "read the rest of the layer: %w", err)
	}
	if got := digester.Digest(); got != diffID {
		return errkind.Errorf(errCorruptBlob, "%w: the uncompressed layer hashes to %s, but the image config says its diff_id is %s", ErrDigestMismatch, got, diffID)
	}
	return nil
}

type nopCloser struct{ io.Reader }

func (nopCloser) Close() error { return nil }

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

func decompress(r io.Reader, mt string) (io.ReadCloser, error) {
	switch {
	case strings.HasSuffix(mt, "+gzip") || mt == "application/vnd.docker.image.rootfs.diff.tar.gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, errkind.Errorf(errCorruptBlob, "the layer is not valid gzip (%v)", err)
		}
		return zr, nil
	case strings.HasSuffix(mt, "+zstd"):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return zstdCloser{zr}, nil
	case mt == ispec.MediaTypeImageLayer || mt == "application/vnd.docker.image.rootfs.diff.tar":
		return nopCloser{r}, nil
	}
	return nil, fmt.Errorf("unsupported layer media type %q", mt)
}

// check refuses entries that would reach outside the rootfs: absolute or
// climbing names, writes through a symlink whose target climbs above the
// root, and hard links to such places. umoci itself would confine these
// (it resolves paths inside the root), but an image that tries is hostile
// and its author should hear about it rather than get a silently different
// tree. Absolute symlink targets are read as the container reads them,
// relative to the rootfs: /var/run -> /run is normal in real images.
//
// skip says the entry is a whiteout this layer has already applied, which
// the caller leaves out (see whited).
func (u *unpacker) check(hdr *tar.Header) (_ checked, skip bool, _ error) {
	clean, err := cleanEntryName(hdr.Name)
	if err != nil {
		return checked{}, false, err
	}
	if err := checkLinkTarget(hdr); err != nil {
		return checked{}, false, err
	}
	base := filepath.Base(clean)
	target, isWhiteout := strings.CutPrefix(base, ".wh.")
	if isWhiteout {
		// ".wh.." would delete the parent directory, ".wh..." the one
		// above it: outside the rootfs when the entry is at its top.
		if target == "" || target == "." || target == ".." {
			return checked{}, false, errkind.Errorf(ErrHostileLayer, "entry %s is a whiteout of %q, which would delete a directory instead of a file in it", quoteName(hdr.Name), target)
		}
	} else if hdr.Typeflag != tar.TypeDir {
		// Any non-directory may replace a cached directory, and not only
		// under its cached name: through a symlink (l -> . then l/d) it
		// replaces d, which must be checked again.
		clear(u.safeDirs)
	}
	if clean == "." && hdr.Typeflag != tar.TypeDir {
		return checked{}, false, errkind.Errorf(ErrHostileLayer, "entry %s would replace the root directory with a non-directory", quoteName(hdr.Name))
	}
	parent, created, err := u.checkParents(hdr.Name, filepath.Dir(clean))
	if err != nil {
		return checked{}, false, err
	}
	if isWhiteout {
		if u.whited.applied(parent, target) {
			return checked{}, true, nil
		}
		clear(u.safeDirs) // the tree is about to shrink under cached paths
	}
	keep := checked{path: joinRel(parent, base)}
	if !strings.HasPrefix(base, ".wh.") {
		for _, d := range created {
			u.implicit[d] = struct{}{}
		}
		if len(created) > 0 {
			// Creating the first missing directory bumps its existing
			// parent's mtime to "now"; umoci restores only the entry's own
			// parent. Keep the existing one's time as it was.
			keep.keptTimes = u.keepTimes(filepath.Dir(created[0]))
		}
		if hdr.Typeflag == tar.TypeDir {
			delete(u.implicit, filepath.Join(parent, base))
		}
	}
	if hdr.Typeflag == tar.TypeLink {
		target, err := cleanEntryName(hdr.Linkname)
		if err != nil {
			return checked{}, false, errkind.Errorf(ErrHostileLayer, "hard link %s -> %s points outside the root", quoteName(hdr.Name), quoteName(hdr.Linkname))
		}
		// link(2) does not follow a symlink in the last component, so only
		// the target's directories matter.
		tparent, _, err := u.checkParents(hdr.Name, filepath.Dir(target))
		if err != nil {
			return checked{}, false, err
		}
		keep.linkTarget = joinRel(tparent, filepath.Base(target))
	}
	return keep, false, nil
}

// checked is what check learnt of an entry: where it lands, where a hard
// link's target is (both resolved), and a directory's times to restore.
type checked struct {
	keptTimes
	path, linkTarget string
}

func joinRel(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}

// keptTimes remembers a directory's times to put them back.
type keptTimes struct {
	r    *saferoot.Root
	path string // resolved, relative to the rootfs
	ts   []unix.Timespec
}

func (u *unpacker) keepTimes(p string) keptTimes {
	st, err := u.r.Lstat(p)
	if err != nil {
		return keptTimes{}
	}
	return keptTimes{u.r, p, []unix.Timespec{st.Atim, st.Mtim}}
}

func (k keptTimes) restore() error {
	if k.path == "" {
		return nil
	}
	err := k.r.Utimes(k.path, k.ts)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil // the entry replaced it
	}
	return err
}

// trackFakeDevice follows which paths hold umoci's empty stand-ins for
// device nodes in a rootless unpack: a device entry (or a hard link to
// one) makes one, any other entry at the path replaces it.
func (u *unpacker) trackFakeDevice(hdr *tar.Header, c checked) {
	_, linksDev := u.fakeDevs[c.linkTarget]
	switch {
	case hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock || (hdr.Typeflag == tar.TypeLink && linksDev):
		u.fakeDevs[c.path] = struct{}{}
	case !strings.HasPrefix(filepath.Base(c.path), ".wh."):
		delete(u.fakeDevs, c.path)
	}
}

// dropFakeDevices deletes the stand-ins that are still there, keeping
// their directories' times, so a rootless unpack holds what build's
// template holds: no device node at all.
func (u *unpacker) dropFakeDevices() error {
	paths := make([]string, 0, len(u.fakeDevs))
	for p := range u.fakeDevs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		keep := u.keepTimes(filepath.Dir(p))
		removed, err := u.r.RemoveFile(p, func(st *unix.Stat_t) bool {
			return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0
		})
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			continue // removed or replaced by a later layer
		}
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			u.fakeLeft++ // in a directory a rootless unpack may not write
			continue
		}
		if err != nil {
			return err
		}
		if !removed {
			continue
		}
		if u.devices++; u.firstDev == "" {
			u.firstDev = p
		}
		if err := keep.restore(); err != nil {
			return err
		}
	}
	return nil
}

// quoteName quotes an entry name for a message, shortening names that
// would flood the terminal (PAX names can be megabytes).
func quoteName(name string) string {
	if len(name) > 200 {
		name = name[:100] + "..." + name[len(name)-60:]
	}
	return fmt.Sprintf("%q", name)
}

// pathMax is Linux's PATH_MAX: no longer name can be created, or
// extracted by PVE's tar.
const pathMax = saferoot.PathMax

func cleanEntryName(name string) (string, error) {
	if len(name) >= pathMax {
		return "", limits.Errorf(ErrHostileLayer, limits.PathLength, int64(len(name)), pathMax-1, "entry %s is %d bytes long, more than Linux's PATH_MAX (%d): no file system can hold it", quoteName(name), len(name), pathMax)
	}
	if strings.HasPrefix(name, "/") {
		return "", errkind.Errorf(ErrHostileLayer, "entry %s has an absolute name: layer members must be relative to the root", quoteName(name))
	}
	clean := filepath.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", errkind.Errorf(ErrHostileLayer, "entry %s climbs out of the root with '..'", quoteName(name))
	}
	if err := checkComponents(name, clean); err != nil {
		return "", err
	}
	return clean, nil
}

// checkParents resolves the directory rel inside the rootfs as umoci's
// SecureJoin will, following symlinks, and fails if a relative link climbs
// above the root. It returns the resolved path and the directories that do
// not exist yet: the extractor creates them (a file in the way is replaced).
func (u *unpacker) checkParents(entry, rel string) (string, []string, error) {
	if rel == "." || rel == "" {
		return ".", nil, nil
	}
	if _, ok := u.safeDirs[rel]; ok {
		return rel, nil, nil
	}
	var created []string
	resolved, _, err := saferoot.Resolve(rel, saferoot.Lookup(u.lookup), saferoot.Options[string]{Missing: func(dir, name string) (string, error) {
		p := saferoot.Join(dir, name)
		created = append(created, p)
		return p, nil
	}})
	if err != nil {
		return "", nil, entryResolveError(entry, err)
	}
	return resolved, created, nil
}

// entryResolveError words a saferoot refusal for the layer entry that
// met it; refusals over the kernel's bounds stay LimitErrors.
func entryResolveError(entry string, err error) error {
	return saferoot.Refusal(ErrHostileLayer, "entry "+quoteName(entry), err)
}

// lookup is the rootfs on disk as checkParents sees it, with the
// directories already seen cached.
func (u *unpacker) lookup(p string) (saferoot.Kind, string, error) {
	if _, ok := u.safeDirs[p]; ok {
		return saferoot.Dir, "", nil
	}
	k, target, err := u.r.Lookup(p)
	if errors.Is(err, unix.EACCES) {
		// A rootless unpack below a directory its owner may not search
		// (mode 0600): umoci's rootless evaluator gets in, the check cannot
		// look. Taken as missing, as umoci's SecureJoin does.
		return saferoot.Missing, "", nil
	}
	switch k {
	case saferoot.Dir:
		u.safeDirs[p] = struct{}{}
	case saferoot.Other:
		k = saferoot.Missing // the extractor replaces it with a directory
	}
	return k, target, err
}

// normalise gives directories the extractor created implicitly fixed
// metadata (0755, root, mtime 0) instead of the umask and the clock, so an
// unpack is reproducible and matches the streaming flattener.
//
// A later entry may have replaced one of these directories, or one above
// it, by a symlink, perhaps to the host: each is opened without following
// any symlink, and skipped when it is no longer a directory at that path.
func (u *unpacker) normalise() error {
	epoch := []unix.Timespec{{}, {}}
	for d := range u.implicit {
		err := u.r.SetDir(d, 0o755, epoch)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			continue // removed or replaced by a later entry
		}
		if err != nil {
			return err
		}
	}
	return nil
}

var umociLogMu sync.Mutex

// routeUmociLog sends umoci's warnings to the progress reporter instead of
// apex/log's default stderr handler, whose format clashes with ours.
func routeUmociLog(rep progress.Reporter) func() {
	umociLogMu.Lock()
	log.SetLevel(log.WarnLevel)
	seen := map[string]bool{}
	log.SetHandler(log.HandlerFunc(func(e *log.Entry) error {
		// Per-file rootless notes ("rootless{dev/null} ...") are summed up
		// once by Unpack instead.
		if strings.HasPrefix(e.Message, "rootless{") {
			return nil
		}
		if !seen[e.Message] {
			seen[e.Message] = true
			rep.Warn("umoci: %s", e.Message)
		}
		return nil
	}))
	return func() {
		log.SetHandler(log.HandlerFunc(func(*log.Entry) error { return nil }))
		umociLogMu.Unlock()
	}
}
