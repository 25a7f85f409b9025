package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/xeipuuv/gojsonschema"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/ctxio"
	"github.com/nexcage/nexcage/internal/jsonerr"
	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"
)

type checkList struct {
	target string
	out    []health.Result
}

func (c *checkList) ok(check string) {
	c.out = append(c.out, health.Result{Status: health.OK, Check: check, Target: c.target})
}

// warn adds a warning; fields are the Options fields fix names.
func (c *checkList) warn(check, cause, fix string, fields ...string) {
	c.add(health.Warn, check, cause, fix, fields)
}

// fail adds a failure; fields are the Options fields fix names.
func (c *checkList) fail(check, cause, fix string, fields ...string) {
	c.add(health.Fail, check, cause, fix, fields)
}

// add records a problem; a fix that says rebuildFix has the Remedy
// health.Rebuild, for the front end to name how it rebuilds.
func (c *checkList) add(status, check, cause, fix string, fields []string) {
	r := health.Result{Status: status, Check: check, Target: c.target, Cause: cause, Fix: fix, Fields: strings.Join(fields, ",")}
	if strings.Contains(fix, rebuildFix) {
		r.Remedy = health.Rebuild
	}
	c.out = append(c.out, r)
}

const rebuildFix = "rebuild it"

// CheckTemplate verifies a template the way PVE will use it: it
// decompresses to the end and is a valid tar; every member is "./"-
// prefixed, unique, stays inside the root and is no device node; owners
// fit an unprivileged container unless the template is privileged-only;
// the .json sidecar's sha256 and size match and the .conf parses with
// only the lines nexcage writes (lxc.ParseTemplateConfig); it has /sbin (or is unmanaged); and the OS PVE
// will detect is the ostype recorded. Temporary names a killed writer
// left beside it are reported (removed with Repair). Problems are
// results; the error is only for a cancelled context.
func CheckTemplate(ctx context.Context, file string, opts health.Options) ([]health.Result, error) {
	return checkTemplate(ctx, file, opts, true)
}

func checkTemplate(ctx context.Context, file string, opts health.Options, ownLeftovers bool) ([]health.Result, error) {
	c := &checkList{target: file}
	comp, ok := template.CompressionFromName(file)
	if !ok {
		c.fail("template name", filepath.Base(file)+" does not end in .tar.zst, .tar.gz or .tar.xz", "PVE refuses other names: rename it")
		return c.out, nil
	}
	confPath, jsonPath := template.SidecarPaths(file)
	tail := func() []health.Result {
		if !ownLeftovers {
			return c.out
		}
		return append(c.out, templateLeftovers(opts, file, confPath, jsonPath)...)
	}
	if !c.checkFile(file) {
		return tail(), nil
	}
	meta, metaErr := readSidecarJSON(jsonPath)
	conf, confRaw, confErr := readSidecarConf(confPath)
	sc, err := scanTemplate(ctx, file, comp)
	if err != nil {
		return nil, err
	}
	privileged := privilegedOnly(meta, conf, confRaw)
	complete := c.checkArchive(sc, comp)
	c.checkMembers(sc, complete, privileged)
	c.checkSidecarJSON(file, jsonPath, sc, meta, metaErr, conf)
	c.checkSidecarConf(confPath, conf, confErr, meta)
	// What PVE does with the rootfs: only a rootfs seen whole can say.
	if complete {
		c.checkOS(sc.tree, meta, conf)
	}
	return tail(), nil
}

// templateLeftovers reports the temporary names a killed writer of the
// template or its sidecars left beside them (removed with Repair).
func templateLeftovers(opts health.Options, file string, paths ...string) []health.Result {
	var mine []string
	for _, p := range append([]string{file}, paths...) {
		mine = append(mine, "."+filepath.Base(p)+atomicfile.TempMarker)
	}
	return health.Leftovers(filepath.Dir(file), func(name string) bool {
		for _, m := range mine {
			if strings.HasPrefix(name, m) {
				return true
			}
		}
		return false
	}, false, file, "the template's directory", opts)
}

// checkFile says whether file is a regular file, failing the check when
// it is not.
func (c *checkList) checkFile(file string) bool {
	fi, err := os.Stat(file)
	switch {
	case err != nil:
		c.fail("template file", err.Error(), "give the path of a template file")
		return false
	case !fi.Mode().IsRegular():
		c.fail("template file", file+" is not a regular file", "give the path of a template file")
		return false
	}
	return true
}

// privilegedOnly says whether the sidecars mark the template
// privileged-only: the .json when there is one, else the .conf.
func privilegedOnly(meta *template.Sidecar, conf *lxc.Config, confRaw string) bool {
	switch {
	case meta != nil:
		return meta.Privileged
	case conf != nil:
		return rePrivilegedConf.MatchString(confRaw)
	}
	return false
}

// checkArchive reports whether the file decompresses to the end and is a
// valid tar, and returns true when both hold: every member was seen.
func (c *checkList) checkArchive(sc *templateScan, comp template.Compression) bool {
	if sc.streamErr != nil {
		c.fail(fmt.Sprintf("decompresses (%s) to the end", comp), fmt.Sprintf("%v, after %s of the file", sc.streamErr, progress.HumanBytes(sc.readAt)),
			"the file is truncated or damaged: copy it again, or "+rebuildFix)
		return false
	}
	c.ok(fmt.Sprintf("decompresses (%s) to the end", comp))
	if sc.tarErr != nil {
		c.fail("is a valid tar", fmt.Sprintf("%v after %d members (last %q)", sc.tarErr, sc.members, sc.last), rebuildFix)
		return false
	}
	c.ok(fmt.Sprintf("is a valid tar: %d members, %s", sc.members, progress.HumanBytes(sc.tarBytes)))
	return true
}

// memberCheck reports the members found bad: problems are reported even
// when the stream broke; "ok" only when every member was seen (complete).
func (c *checkList) memberCheck(complete bool, check string, bad []string, status, cause, fix string, fields ...string) {
	switch {
	case len(bad) > 0:
		c.add(status, check, fmt.Sprintf(cause, len(bad), shortList(bad)), fix, fields)
	case complete:
		c.ok(check)
	}
}

// checkMembers reports what the scan found wrong with the members' names,
// links, device nodes and owners, as PVE's extraction would meet them.
func (c *checkList) checkMembers(sc *templateScan, complete, privileged bool) {
	names := append(append([]string{}, sc.unprefixed...), sc.duplicates...)
	if sc.first != "./" && sc.members > 0 {
		names = append([]string{fmt.Sprintf("%q comes first, not \"./\"", sc.first)}, names...)
	}
	c.memberCheck(complete, "member names are ./-prefixed, ./ first, and unique", names, health.Fail,
		"%d problem(s): %s (PVE's anchored --exclude ./dev/* misses unprefixed names, and --skip-old-files keeps only the first of a duplicate)", rebuildFix)
	c.memberCheck(complete, "no member escapes the root", sc.escapes, health.Fail,
		"%d member(s) climb out or are absolute: %s", "do not use this template; "+rebuildFix)
	c.memberCheck(complete, "hard link targets come before their links", sc.linkOrder, health.Fail,
		"%d hard link(s) point at a member not seen before: %s (tar cannot create them)", rebuildFix)
	c.checkDevices(sc.devices, complete, privileged)
	if len(sc.highIDs) > 0 && privileged {
		c.ok(fmt.Sprintf("owners above 65535 on %d path(s): a privileged-only template", len(sc.highIDs)))
		return
	}
	c.memberCheck(complete, "owners within 0..65535", sc.highIDs, health.Fail,
		"%d path(s) owned by ids an unprivileged container cannot map (PVE's extraction fails): %s",
		rebuildFix+" with SquashHighIDs, or with Privileged for a privileged-only template", "SquashHighIDs", "Privileged")
}

// checkDevices reports device nodes: in /dev PVE skips them, elsewhere an
// unprivileged container cannot create them.
func (c *checkList) checkDevices(devices []string, complete, privileged bool) {
	var outside, inDev []string
	for _, d := range devices {
		if strings.HasPrefix(d, "/dev/") {
			inDev = append(inDev, d)
		} else {
			outside = append(outside, d)
		}
	}
	if len(outside) == 0 && len(inDev) > 0 {
		c.warn("no device nodes", fmt.Sprintf("%d device node(s) in /dev: %s (PVE skips them: --exclude ./dev/*)", len(inDev), shortList(inDev)), rebuildFix+": it keeps /dev empty")
		return
	}
	status, cause := health.Fail, "%d device node(s) outside /dev: %s (an unprivileged container cannot create them: PVE's extraction fails)"
	if privileged {
		status, cause = health.Warn, "%d device node(s) outside /dev: %s (created in this privileged-only container)"
	}
	c.memberCheck(complete, "no device nodes", outside, status, cause, rebuildFix+": it drops device nodes")
}

// checkSidecarJSON compares the .json sidecar's size and sha256 with the
// file's.
func (c *checkList) checkSidecarJSON(file, jsonPath string, sc *templateScan, meta *template.Sidecar, metaErr error, conf *lxc.Config) {
	check := "sidecar " + filepath.Base(jsonPath) + ": size and sha256 match"
	switch {
	case metaErr != nil:
		c.fail(check, metaErr.Error(), rebuildFix+" to write it again")
		return
	case meta == nil && conf == nil:
		c.ok("no sidecars (.json, .conf): not built by nexcage; only the archive was checked")
		return
	case meta == nil:
		c.warn(check, filepath.Base(jsonPath)+" is missing: the size and sha256 cannot be verified", rebuildFix+" to get it back")
		return
	}
	var bad []string
	if meta.Template.Size != sc.size {
		bad = append(bad, fmt.Sprintf("the file is %d bytes, the sidecar says %d", sc.size, meta.Template.Size))
	}
	if meta.Template.SHA256 != sc.sha256 {
		bad = append(bad, fmt.Sprintf("the file's sha256 is %s, the sidecar says %s", sc.sha256, meta.Template.SHA256))
	}
	switch {
	case len(bad) > 0:
		c.fail(check, strings.Join(bad, "; "), "the template or its sidecar changed after the build (a partial copy?): copy both again, or "+rebuildFix)
	case meta.Template.File != "" && meta.Template.File != filepath.Base(file):
		c.warn(check, fmt.Sprintf("they match, but the sidecar describes %s", meta.Template.File), "rename the template back, or "+rebuildFix+" under the new name")
	default:
		c.ok(check)
	}
}

// checkSidecarConf checks the .conf sidecar as deploy reads it: only the
// lines nexcage writes, values PVE takes, agreeing with the .json; host
// directories it asks for are warned about.
func (c *checkList) checkSidecarConf(confPath string, conf *lxc.Config, confErr error, meta *template.Sidecar) {
	check := "sidecar " + filepath.Base(confPath) + ": parses, with only lines nexcage writes"
	var unsafe *lxc.UnsafeConfigError
	switch {
	case errors.As(confErr, &unsafe):
		c.fail(check, confErr.Error(), "deploy refuses it: a template's .conf may hold only what nexcage writes (raw lxc.* keys could run commands or lift confinement on the host): remove those lines, or "+rebuildFix)
		return
	case confErr != nil:
		c.fail(check, confErr.Error(), "fix the file, or "+rebuildFix)
		return
	case conf == nil && meta != nil:
		c.warn(check, filepath.Base(confPath)+" is missing: deploy cannot know the ostype, arch and process", rebuildFix+" to get it back")
		return
	case conf == nil:
		return
	}
	if problems := confProblems(conf, meta); len(problems) > 0 {
		c.fail(check, strings.Join(problems, "; "), rebuildFix)
	} else if !hasBind(conf) {
		c.ok(check)
	}
	// Whoever made the template chose these host directories: deploy
	// binds one only when the user asks for it.
	for _, m := range conf.MountPoints {
		if m.IsBind() {
			c.warn(check, fmt.Sprintf("%s: %s asks for host directory %s (at %s in the container)", m.Key(), m.Value(), m.Volume, m.Path),
				"deploy refuses it unless you bind it yourself with Mounts "+m.Volume+":"+m.Path+", or with AllowTemplateMounts", "Mounts", "AllowTemplateMounts")
		}
	}
}

// rePrivilegedConf finds "unprivileged: 0" (a privileged-only template)
// in a .conf when there is no .json to say so.
var rePrivilegedConf = regexp.MustCompile(`(?m)^unprivileged:\s*0\s*$`)

// recordedOSType is the ostype the sidecars say PVE should see, and which
// file says it. (An application container created unmanaged, as recorded,
// is checkOS's own case.)
func recordedOSType(meta *template.Sidecar, conf *lxc.Config) (ostype, source string) {
	switch {
	case conf != nil && conf.OSType != "":
		return conf.OSType, "the .conf"
	case meta != nil:
		return meta.OSType, "the .json"
	}
	return "", ""
}

func (c *checkList) checkOS(tree *tartree.Tree, meta *template.Sidecar, conf *lxc.Config) {
	detected := DetectOS(tree)
	recorded, source := recordedOSType(meta, conf)
	effective := recorded // what the container is created with
	if meta != nil && meta.Application && (conf == nil || conf.OSType == "") {
		// Before nexcage kept the detected ostype (as PVE's OCI import
		// does), an application container's .conf said unmanaged.
		effective = "unmanaged"
	}
	if conf != nil && conf.OSType != "" {
		effective = conf.OSType
	}

	sbin, _ := tree.Resolve("sbin")
	switch {
	case sbin != nil && sbin.Type == tar.TypeDir:
		c.ok("has /sbin")
	case effective == "unmanaged":
		c.ok("no /sbin, which an unmanaged container does not need")
	case meta != nil && meta.Application:
		c.ok("no /sbin, which an application container (PVE never boots /sbin/init) does not need")
	default:
		c.fail("has /sbin", fmt.Sprintf("there is no /sbin, but the container is created as ostype %s: PVE boots /sbin/init and its %s setup expects a complete system", orUnset(effective), orUnset(effective)),
			"rebuild from a complete OS image, or record ostype unmanaged (application images are, automatically)")
	}

	const check = "the OS PVE detects matches the recorded ostype"
	what := detected.OSType
	if detected.ID != "" {
		what = fmt.Sprintf("%s (os-release ID %q)", detected.OSType, detected.ID)
	}
	switch {
	case meta != nil && meta.Application && effective == "unmanaged":
		// PVE creates it unmanaged and detects nothing: what is left to
		// check is that the .json describes this rootfs.
		const appCheck = "the rootfs's OS matches the one the .json records"
		if meta.OS.OSType != detected.OSType {
			c.fail(appCheck, fmt.Sprintf("the rootfs is %s, but the .json's os.ostype records %s", what, orUnset(meta.OS.OSType)),
				"the sidecars belong to another template, or the rootfs changed: "+rebuildFix)
		} else {
			c.ok(fmt.Sprintf("ostype unmanaged, as the .conf records for an application container: PVE runs no OS setup (the rootfs is %s, as the .json records)", what))
		}
	case recorded == "":
		if detected.OSType == "unmanaged" && detected.ID != "" {
			c.warn(check, detected.Why, "keep the .conf, which records ostype unmanaged, beside the template ("+rebuildFix+" to write one), or give pct create --ostype unmanaged yourself")
		} else {
			c.ok(fmt.Sprintf("PVE detects ostype %s (nothing recorded to compare)", what))
		}
	case recorded != detected.OSType:
		why := ""
		if detected.Why != "" {
			why = ": " + detected.Why
		}
		c.fail(check, fmt.Sprintf("PVE detects %s%s, but %s records %s", what, why, source, recorded),
			"the sidecars belong to another template, or the rootfs changed: "+rebuildFix)
	default:
		c.ok(fmt.Sprintf("PVE detects ostype %s, as recorded", what))
	}

	arch := ""
	switch {
	case conf != nil && conf.Arch != "":
		arch = conf.Arch
	case meta != nil:
		arch = meta.Arch
	}
	if elfArch := template.ArchFromELF(tree); elfArch != "" && arch != "" {
		if elfArch != arch {
			c.fail("architecture matches /bin/sh", fmt.Sprintf("/bin/sh is an %s binary, the sidecars say %s", elfArch, arch), rebuildFix+" for the right Platform", "Platform")
		} else {
			c.ok("architecture " + arch + " matches /bin/sh")
		}
	}
}

func orUnset(s string) string {
	if s == "" {
		return "(unset)"
	}
	return s
}

// pveArchs and pveOSTypes are the values PVE's --arch and --ostype take.
var pveArchs = map[string]bool{"amd64": true, "i386": true, "arm64": true, "armhf": true, "riscv32": true, "riscv64": true}

func validOSType(s string) bool {
	if s == "unmanaged" {
		return true
	}
	for _, t := range pveTypes {
		if t == s {
			return true
		}
	}
	return false
}

// confProblems are values PVE would refuse and disagreements with the
// .json (lxc.Parse has already refused unknown keys).
func confProblems(conf *lxc.Config, meta *template.Sidecar) []string {
	var out []string
	if conf.Arch != "" && !pveArchs[conf.Arch] {
		out = append(out, fmt.Sprintf("arch %q is not one PVE knows", conf.Arch))
	}
	if conf.OSType != "" && !validOSType(conf.OSType) {
		out = append(out, fmt.Sprintf("ostype %q is not one PVE knows", conf.OSType))
	}
	if meta != nil {
		if meta.Arch != "" && conf.Arch != "" && meta.Arch != conf.Arch {
			out = append(out, fmt.Sprintf("arch %s, but the .json says %s", conf.Arch, meta.Arch))
		}
		if meta.Privileged && conf.Unprivileged {
			out = append(out, "unprivileged: 1, but the .json says the template is privileged-only")
		}
	}
	return out
}

// readSidecarJSON returns nil, nil when there is no sidecar.
func readSidecarJSON(p string) (*template.Sidecar, error) {
	m, err := template.ReadSidecar(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return m, err
}

func hasBind(c *lxc.Config) bool {
	for _, m := range c.MountPoints {
		if m.IsBind() {
			return true
		}
	}
	return false
}

// readSidecarConf reads the .conf as deploy does; the lines it accepts
// come back with an *lxc.UnsafeConfigError for the others.
func readSidecarConf(p string) (*lxc.Config, string, error) {
	raw, err := lxc.ReadConfig(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	c, err := lxc.ParseTemplateConfig(raw)
	return c, raw, err
}

// shortList shows the first few items of a long list.
func shortList(items []string) string {
	if len(items) <= 5 {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:5], ", ") + fmt.Sprintf(" and %d more", len(items)-5)
}

// templateScan is what one pass over a template found.
type templateScan struct {
	size     int64  // bytes of the file
	sha256   string // of the whole file
	readAt   int64  // compressed bytes read when the stream broke
	tarBytes int64  // uncompressed bytes

	streamErr error // decompression failed
	tarErr    error // the tar is malformed

	members     int
	first, last string
	unprefixed  []string
	duplicates  []string
	escapes     []string
	linkOrder   []string
	devices     []string
	highIDs     []string
	tree        *tartree.Tree
}

// scanTemplate reads the whole file once: hashing it, decompressing it,
// and building a tree of the members' headers (with the few small files
// OS detection reads) the way PVE's tar will see them.
func scanTemplate(ctx context.Context, file string, comp template.Compression) (*templateScan, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := &templateScan{tree: tartree.New()}
	h := sha256.New()
	var rawN ctxio.Counter
	raw := io.TeeReader(ctxio.Reader{Ctx: ctx, R: f}, io.MultiWriter(h, &rawN))
	defer func() {
		// Hash what the decompressor did not read, for the sidecar check
		// (not after Ctrl-C: the result is thrown away then).
		if ctx.Err() == nil {
			io.Copy(io.Discard, ctxio.Reader{Ctx: ctx, R: raw})
		}
		sc.size = rawN.N
		sc.sha256 = hex.EncodeToString(h.Sum(nil))
	}()
	zr, err := template.Decompress(raw, comp)
	if err != nil {
		sc.streamErr, sc.readAt = err, rawN.N
		return sc, nil
	}
	defer zr.Close()
	rec := &errRecorder{r: zr}
	var plainN ctxio.Counter
	plain := io.TeeReader(rec, &plainN)
	tr := tar.NewReader(plain)
	seen := map[string]bool{}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			sc.setErr(rec, &rawN, err)
			return sc, nil
		}
		if err := sc.member(hdr, tr, seen); err != nil {
			sc.setErr(rec, &rawN, err)
			return sc, nil
		}
	}
	// Decompress to the very end: a damaged last frame or checksum shows
	// only there.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		sc.setErr(rec, &rawN, err)
	}
	sc.tarBytes = plainN.N
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return sc, nil
}

func (sc *templateScan) setErr(rec *errRecorder, raw *ctxio.Counter, err error) {
	if rec.err != nil {
		sc.streamErr, sc.readAt = rec.err, raw.N
		return
	}
	sc.tarErr = err
}

// member records one tar header.
func (sc *templateScan) member(hdr *tar.Header, tr *tar.Reader, seen map[string]bool) error {
	sc.members++
	name := hdr.Name
	if sc.members == 1 {
		sc.first = name
	}
	sc.last = name
	shown := "/" + strings.TrimPrefix(strings.TrimPrefix(name, "."), "/")
	if !strings.HasPrefix(name, "./") {
		sc.unprefixed = append(sc.unprefixed, fmt.Sprintf("%q has no ./ prefix", name))
	}
	clean, ok := memberPath(name)
	if !ok {
		sc.escapes = append(sc.escapes, fmt.Sprintf("%q", name))
		return nil
	}
	if seen[clean] {
		sc.duplicates = append(sc.duplicates, fmt.Sprintf("%s appears more than once", shown))
	}
	seen[clean] = true
	if hdr.Uid > maxUnprivilegedID || hdr.Gid > maxUnprivilegedID {
		sc.highIDs = append(sc.highIDs, fmt.Sprintf("%s (%d:%d)", shown, hdr.Uid, hdr.Gid))
	}
	n := &tartree.Node{Type: hdr.Typeflag, Mode: hdr.Mode & 0o7777, UID: hdr.Uid, GID: hdr.Gid, ModTime: hdr.ModTime, Linkname: hdr.Linkname, Devmajor: hdr.Devmajor, Devminor: hdr.Devminor}
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		sc.devices = append(sc.devices, shown)
	case tar.TypeLink:
		target, ok := memberPath(hdr.Linkname)
		switch {
		case !ok:
			sc.escapes = append(sc.escapes, fmt.Sprintf("%s is a hard link to %q", shown, hdr.Linkname))
			return nil
		case !seen[target] || target == clean:
			sc.linkOrder = append(sc.linkOrder, fmt.Sprintf("%s -> %s", shown, hdr.Linkname))
			return nil
		}
		if t := sc.tree.Get(target); t != nil {
			cp := *t
			n = &cp
		}
	case tar.TypeDir, tar.TypeSymlink, tar.TypeFifo:
	default: // regular files, and anything tar extracts as one
		n.Type, n.Size = tar.TypeReg, hdr.Size
		if keep := keepContent(clean); keep > 0 {
			b, err := io.ReadAll(io.LimitReader(tr, keep))
			if err != nil {
				return err
			}
			n.Open = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		} else {
			n.Open = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(nil)), nil }
		}
	}
	sc.tree.Put(clean, n)
	return nil
}

// memberPath cleans a member name; false when it is absolute or has a
// ".." part (GNU tar refuses those, and they could climb out).
func memberPath(name string) (string, bool) {
	if strings.HasPrefix(name, "/") {
		return "", false
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", false
		}
	}
	return path.Clean("./" + name), true
}

// keepContent is how much of a file OS and architecture detection read:
// os-release and lsb-release, and the ELF header of what /bin/sh may be.
func keepContent(p string) int64 {
	switch base := path.Base(p); {
	case base == "os-release" || base == "lsb-release":
		return 64 << 10
	case strings.HasPrefix(p, "bin/") || strings.HasPrefix(p, "usr/bin/"):
		return 64
	}
	return 0
}

// errRecorder remembers the decompressor's first error, to tell a broken
// stream from a broken tar.
type errRecorder struct {
	r   io.Reader
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// CheckBundle verifies an OCI runtime bundle as convert will read it:
// config.json parses and is valid against the runtime-spec schema, the
// root path exists, and every mount, the hostname and the process map to a
// PVE CT config by convert's rules. Temporary bundles a killed unpack left
// beside it are reported (removed with Repair).
func CheckBundle(ctx context.Context, dir string, opts health.Options) ([]health.Result, error) {
	return checkBundle(ctx, dir, opts, true)
}

func checkBundle(ctx context.Context, dir string, opts health.Options, ownLeftovers bool) ([]health.Result, error) {
	c := &checkList{target: dir}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err == nil && !fi.IsDir() {
		abs = filepath.Dir(abs) // the config.json itself
	}
	tail := func() []health.Result {
		if !ownLeftovers {
			return c.out
		}
		return append(c.out, CheckLeftovers(abs, dir, opts)...)
	}
	configPath := filepath.Join(abs, "config.json")
	spec := c.checkBundleConfig(configPath)
	if spec == nil {
		return tail(), nil // nothing more can be read from it
	}
	tree := c.checkBundleRootfs(abs, configPath, spec)
	// Mounts, hostname and process, by convert's rules.
	forLXC := specForLXC(spec)
	c.checkBundleMounts(spec, forLXC)
	if tree != nil {
		c.checkBundleProcess(tree, spec, forLXC)
		c.checkBundleOwners(tree)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return tail(), nil
}

// checkBundleConfig checks that the bundle's config.json parses and is
// valid against the runtime spec; it returns nil when it cannot be read.
func (c *checkList) checkBundleConfig(configPath string) *rspec.Spec {
	raw, err := limits.ReadFile(configPath, limits.MaxMetadata, configPath)
	if err != nil {
		c.fail("config.json", err.Error(), bundleHelp)
		c.out[len(c.out)-1].Remedy = health.NewBundle
		return nil
	}
	var syntax any
	if err := json.Unmarshal(raw, &syntax); err != nil {
		c.fail("config.json parses", jsonerr.At(raw, err), "fix the JSON there")
		return nil
	}
	c.ok("config.json parses")
	schemaCheck := "config.json is valid against the runtime-spec " + rspec.Version + " schema"
	errs, err := validateRuntimeSpec(raw)
	switch {
	case err != nil:
		c.fail(schemaCheck, err.Error(), "report this as a nexcage bug")
	case len(errs) > 0:
		c.fail(schemaCheck, fmt.Sprintf("%d error(s): %s", len(errs), shortList(errs)), "fix those fields (the OCI runtime spec's config.md says what they take)")
	default:
		c.ok(schemaCheck)
	}
	var spec rspec.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		if len(errs) == 0 {
			c.fail(schemaCheck, jsonerr.At(raw, err), "fix that field")
		}
		return nil
	}
	return &spec
}

// checkBundleRootfs checks the rootfs root.path names and reads it; the
// tree is nil when it cannot be read.
func (c *checkList) checkBundleRootfs(abs, configPath string, spec *rspec.Spec) *tartree.Tree {
	rootPath := "rootfs"
	if spec.Root != nil && spec.Root.Path != "" {
		rootPath = spec.Root.Path
	}
	if !filepath.IsAbs(rootPath) {
		rootPath = filepath.Join(abs, rootPath)
	}
	var tree *tartree.Tree
	fi, err := os.Stat(rootPath)
	switch {
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		c.fail("root path exists", fmt.Sprintf("root.path %s: %v", rootPath, err), "point root.path (relative to the bundle) at the rootfs directory, or unpack the image again")
	case !fi.IsDir():
		c.fail("root path exists", rootPath+" is not a directory", "point root.path at the rootfs directory")
	default:
		b := &Bundle{Dir: abs, ConfigPath: configPath, Rootfs: rootPath, Spec: spec}
		if tree, err = TreeFromDir(rootPath, b.idMap()); err != nil {
			c.fail("root path exists", "the rootfs cannot be read: "+err.Error(), "check its permissions (run as root for a root-owned bundle)")
			tree = nil
		} else {
			c.ok("root path " + rootPath + " exists")
		}
	}
	return tree
}

// checkBundleMounts checks the mounts and the hostname map to PVE.
func (c *checkList) checkBundleMounts(spec, forLXC *rspec.Spec) {
	mountsOnly := *forLXC
	mountsOnly.Hostname = ""
	if cfg, err := lxc.FromSpec(&mountsOnly, true); err != nil {
		c.fail("every mount maps to PVE", err.Error(), "make bind sources absolute and clean, or drop or change the mount")
	} else {
		c.ok(fmt.Sprintf("every mount maps to PVE: %s", mountSummary(len(spec.Mounts), cfg)))
	}
	if forLXC.Hostname != "" && !lxc.ValidDNSName(forLXC.Hostname) {
		c.fail("hostname is a DNS name", fmt.Sprintf("%q is not a valid DNS name, which PVE requires", forLXC.Hostname), "fix config.json's hostname")
	}
}

// checkBundleProcess checks the process maps to PVE: a system container,
// or an application container whose entrypoint exists.
func (c *checkList) checkBundleProcess(tree *tartree.Tree, spec, forLXC *rspec.Spec) {
	var args []string
	if spec.Process != nil {
		args = spec.Process.Args
	}
	system := lxc.IsSystemContainer(args, hasInit(tree))
	noMounts := *forLXC
	noMounts.Mounts, noMounts.Hostname = nil, ""
	cfg, err := lxc.FromSpec(&noMounts, system)
	switch {
	case err != nil:
		c.fail("process maps to PVE", err.Error(), "fix process in config.json")
	case system:
		c.ok("process: a system container (PVE boots /sbin/init)")
	case len(args) == 0:
		c.warn("process maps to PVE", "config.json has no process.args and the rootfs has no /sbin/init: the container has nothing to run", "set process.args in config.json")
	default:
		if n, _ := tree.Resolve(strings.TrimPrefix(args[0], "/")); strings.HasPrefix(args[0], "/") && n == nil {
			c.fail("process maps to PVE", fmt.Sprintf("the entrypoint %s does not exist in the rootfs", args[0]), "fix process.args in config.json")
		} else {
			c.ok("process: an application container, entrypoint " + cfg.Entrypoint)
		}
	}
}

// checkBundleOwners checks every owner fits an unprivileged container.
func (c *checkList) checkBundleOwners(tree *tartree.Tree) {
	var high []string
	tree.Walk(func(p string, n *tartree.Node) error {
		if n.UID > maxUnprivilegedID || n.GID > maxUnprivilegedID {
			high = append(high, fmt.Sprintf("/%s (%d:%d)", strings.TrimPrefix(p, "."), n.UID, n.GID))
		}
		return nil
	})
	if len(high) > 0 {
		c.warn("owners within 0..65535", fmt.Sprintf("%d path(s) owned by ids an unprivileged container cannot map: %s", len(high), shortList(high)),
			"convert it with SquashHighIDs, or with Privileged for a privileged-only template", "SquashHighIDs", "Privileged")
	} else {
		c.ok("owners within 0..65535")
	}
}

func mountSummary(n int, cfg *lxc.Config) string {
	entries := 0
	for _, r := range cfg.Raw {
		if r.Key == "lxc.mount.entry" {
			entries++
		}
	}
	if n == 0 {
		return "no mounts"
	}
	return fmt.Sprintf("%d mount(s): %d mount point(s), %d lxc.mount.entry, the rest provided by LXC or image volumes", n, len(cfg.MountPoints), entries)
}

// CheckLeftovers reports the temporary names a killed writer of path (a
// bundle, a template or anything written atomically) left beside it, and
// removes them with Repair; target names path in the results.
func CheckLeftovers(path, target string, opts health.Options) []health.Result {
	prefix := "." + filepath.Base(filepath.Clean(path)) + atomicfile.TempMarker
	return health.Leftovers(filepath.Dir(filepath.Clean(path)), func(n string) bool { return strings.HasPrefix(n, prefix) },
		false, target, "the directory of "+filepath.Base(path), opts)
}

// CheckDir checks what nexcage writes into a directory: every template in
// it, every bundle directly below it, and the temporary names of killed
// writers (removed with Repair).
func CheckDir(ctx context.Context, dir string, opts health.Options) ([]health.Result, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return []health.Result{{Status: health.Fail, Check: "directory", Target: dir, Cause: err.Error(), Fix: "give a template, a bundle, a store, a directory or a Proxmox storage id"}}, nil
	}
	out := health.Leftovers(dir, atomicfile.IsTemp, false, dir, "the directory", opts)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if atomicfile.IsTemp(e.Name()) {
			continue
		}
		var res []health.Result
		switch _, isTemplate := template.CompressionFromName(e.Name()); {
		case isTemplate && e.Type().IsRegular():
			res, err = checkTemplate(ctx, p, opts, false)
		case e.IsDir():
			if _, serr := os.Stat(filepath.Join(p, "config.json")); serr == nil {
				res, err = checkBundle(ctx, p, opts, false)
			}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, res...)
	}
	return out, nil
}

// runtimeSpecSchema is config.json's JSON schema: config-schema.json and
// the files it refers to, from the runtime-spec module's schema/
// directory (v1.2.1, Apache-2.0; see schema/README.md).
// TestRuntimeSpecSchema proves they are the files of the runtime-spec
// version in go.mod.
//
//go:embed schema/*.json
var runtimeSpecSchema embed.FS

// validateRuntimeSpec checks config.json against the runtime-spec JSON
// schema, with the validator the runtime-spec project itself uses.
func validateRuntimeSpec(raw []byte) ([]string, error) {
	files, err := fs.Sub(runtimeSpecSchema, "schema")
	if err != nil {
		return nil, err
	}
	schema, err := gojsonschema.NewSchema(gojsonschema.NewReferenceLoaderFileSystem("file:///config-schema.json", http.FS(files)))
	if err != nil {
		return nil, fmt.Errorf("load the runtime-spec schema: %w", err)
	}
	res, err := schema.Validate(gojsonschema.NewBytesLoader(raw))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range res.Errors() {
		out = append(out, e.String())
	}
	sort.Strings(out)
	return out, nil
}
