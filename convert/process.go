package convert

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nexcage/nexcage/internal/annotation"
	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"
)

// ErrProcessUser marks the ErrHighIDs refusal of an image whose process
// user (not only its files) is above 65535: Options.Process can choose
// another user, besides Privileged and SquashHighIDs.
var ErrProcessUser = errors.New("process user above 65535")

// ErrOverride is an override that cannot apply to this image.
var ErrOverride = errors.New("process override")

// processSpec is spec with the overrides applied and the process user
// made mappable: an unprivileged container maps ids 0-65535 only, so
// with SquashHighIDs a higher uid or gid becomes 65534, as the files'
// do; without, it is refused, naming it.
func processSpec(tree *tartree.Tree, spec *runtimeSpec, opts Options, rep progress.Reporter) (*runtimeSpec, error) {
	out := *spec
	if spec.Process != nil {
		p := *spec.Process
		p.Args = slices.Clone(p.Args)
		p.Env = slices.Clone(p.Env)
		p.User.AdditionalGids = slices.Clone(p.User.AdditionalGids)
		out.Process = &p
	}
	if ov := opts.Process; !ov.IsZero() {
		if out.Process == nil {
			out.Process = &rspec.Process{Cwd: "/"}
		}
		if err := applyOverrides(tree, spec, out.Process, ov); err != nil {
			return nil, err
		}
	}
	p := out.Process
	if p != nil && !opts.Privileged {
		// A supplementary group an unprivileged container cannot map would
		// make LXC's setgroups fail at start: it is left out, and said.
		p.User.AdditionalGids = slices.DeleteFunc(p.User.AdditionalGids, func(g uint32) bool {
			if g > maxUnprivilegedID {
				rep.Warn("the process user's supplementary group %d is above 65535, which an unprivileged container cannot map: left out", g)
				return true
			}
			return false
		})
	}
	if p == nil || opts.Privileged || (p.User.UID <= maxUnprivilegedID && p.User.GID <= maxUnprivilegedID) {
		return &out, nil
	}
	if !opts.SquashHighIDs {
		return nil, errkind.Errorf(ErrHighIDs, "the image's process runs as %w, which an unprivileged container cannot map (its ids are 0 to 65535): a privileged-only template keeps it, squashing runs it as 65534 (nobody), or choose another user", errkind.Errorf(ErrProcessUser, "%d:%d", p.User.UID, p.User.GID))
	}
	from := fmt.Sprintf("%d:%d", p.User.UID, p.User.GID)
	if p.User.UID > maxUnprivilegedID {
		p.User.UID = 65534
	}
	if p.User.GID > maxUnprivilegedID {
		p.User.GID = 65534
	}
	rep.Warn("the process user %s is above 65535: it runs as %d:%d, like the files squashed with it", from, p.User.UID, p.User.GID)
	return &out, nil
}

func applyOverrides(tree *tartree.Tree, spec *runtimeSpec, p *rspec.Process, ov *template.ProcessOverrides) error {
	switch {
	case ov.Entrypoint != nil:
		args := slices.Clone(*ov.Entrypoint)
		if ov.Cmd != nil {
			args = append(args, *ov.Cmd...)
		}
		p.Args = args
	case ov.Cmd != nil:
		ep, ok := imageEntrypoint(spec)
		if !ok {
			return errkind.Errorf(ErrOverride, "the bundle does not record which of process.args is the image's entrypoint (a bundle not unpacked from an image?), so its command cannot be replaced alone: give the entrypoint too")
		}
		p.Args = append(ep, *ov.Cmd...)
	}
	if (ov.Entrypoint != nil || ov.Cmd != nil) && (len(p.Args) == 0 || p.Args[0] == "") {
		return errkind.Errorf(ErrOverride, "the command would be empty: an entrypoint or command needs a program")
	}
	for _, e := range ov.Env {
		name, _, ok := strings.Cut(e, "=")
		if !ok || name == "" {
			return errkind.Errorf(ErrOverride, "environment %q is not NAME=VALUE", e)
		}
		i := slices.IndexFunc(p.Env, func(x string) bool { return strings.HasPrefix(x, name+"=") })
		if i >= 0 {
			p.Env[i] = e
		} else {
			p.Env = append(p.Env, e)
		}
	}
	if ov.Workdir != "" {
		if !path.IsAbs(ov.Workdir) {
			return errkind.Errorf(ErrOverride, "working directory %q is not an absolute path", ov.Workdir)
		}
		p.Cwd = ov.Workdir
	}
	if ov.User != "" {
		u, err := resolveUser(tree, ov.User)
		if err != nil {
			return err
		}
		p.User = u
	}
	return nil
}

// imageEntrypoint is the image's Entrypoint as unpack recorded it, when it
// is a prefix of process.args (the annotation is as untrusted as the rest
// of the bundle).
func imageEntrypoint(spec *runtimeSpec) ([]string, bool) {
	raw, ok := spec.Annotations[annotation.Entrypoint]
	var ep []string
	if !ok || json.Unmarshal([]byte(raw), &ep) != nil {
		return nil, false
	}
	var args []string
	if spec.Process != nil {
		args = spec.Process.Args
	}
	if len(ep) > len(args) || !slices.Equal(ep, args[:len(ep)]) {
		return nil, false
	}
	return ep, true
}

// resolveUser reads NAME|UID[:GROUP|GID] against the rootfs's account
// files, as docker does for --user.
func resolveUser(tree *tartree.Tree, s string) (rspec.User, error) {
	us, gs, hasGroup := strings.Cut(s, ":")
	if us == "" || hasGroup && gs == "" {
		return rspec.User{}, errkind.Errorf(ErrOverride, "user %q is not USER[:GROUP]", s)
	}
	var u rspec.User
	name := us
	uid, err := strconv.ParseUint(us, 10, 32)
	if err == nil {
		u.UID = uint32(uid)
		name = ""
		if f, ok := lookupAccount(tree, "etc/passwd", func(f []string) bool { return f[2] == us }); ok && len(f) > 3 {
			name = f[0]
			if g, err := strconv.ParseUint(f[3], 10, 32); err == nil {
				u.GID = uint32(g)
			}
		}
	} else {
		f, ok := lookupAccount(tree, "etc/passwd", func(f []string) bool { return f[0] == us })
		if !ok || len(f) < 4 {
			return u, errkind.Errorf(ErrOverride, "user %q is not in the rootfs's /etc/passwd: give a numeric uid", us)
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return u, errkind.Errorf(ErrOverride, "user %q has no numeric uid and gid in the rootfs's /etc/passwd", us)
		}
		u.UID, u.GID = uint32(uid), uint32(gid)
	}
	if !hasGroup {
		// Only the implicit form gets the user's supplementary groups, as
		// with docker and PVE's OCI import (resolve_oci_user).
		u.AdditionalGids = supplementaryGroups(tree, name)
		return u, nil
	}
	if gid, err := strconv.ParseUint(gs, 10, 32); err == nil {
		u.GID = uint32(gid)
		return u, nil
	}
	f, ok := lookupAccount(tree, "etc/group", func(f []string) bool { return f[0] == gs })
	if !ok {
		return u, errkind.Errorf(ErrOverride, "group %q is not in the rootfs's /etc/group: give a numeric gid", gs)
	}
	gid, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		return u, errkind.Errorf(ErrOverride, "group %q has no numeric gid in the rootfs's /etc/group", gs)
	}
	u.GID = uint32(gid)
	return u, nil
}

// supplementaryGroups are the gids of the /etc/group lines that list name
// as a member, in file order.
func supplementaryGroups(tree *tartree.Tree, name string) []uint32 {
	if name == "" {
		return nil
	}
	var gids []uint32
	lookupAccount(tree, "etc/group", func(f []string) bool {
		if len(f) > 3 && slices.Contains(strings.Split(f[3], ","), name) {
			if g, err := strconv.ParseUint(f[2], 10, 32); err == nil {
				gids = append(gids, uint32(g))
			}
		}
		return false
	})
	return gids
}

// lookupAccount finds the first line of an account file (at least three
// colon-separated fields) that match accepts.
func lookupAccount(tree *tartree.Tree, file string, match func([]string) bool) ([]string, bool) {
	b, err := tree.ReadFile(file, 16<<20)
	if err != nil {
		return nil, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) >= 3 && match(f) {
			return f, true
		}
	}
	return nil, false
}

// entrypointNote says how a shell-form script was carried, when it had to
// be rewritten: the .conf's entrypoint is then not the image's argv.
func entrypointNote(c *lxc.Config, args []string, rep progress.Reporter) {
	if c.Entrypoint != "" && !slices.Equal(lxc.SplitCommand(c.Entrypoint), args) {
		rep.Step("the shell script of process.args holds both kinds of quotes and blanks, which LXC's init command cannot carry as they are: the entrypoint runs it through eval, with each ' made by printf")
	}
}

// dropUmociTerm removes the TERM=xterm umoci puts in every config.json
// from a system container's environment: its init gets PVE's TERM=linux
// ("some init scripts expect a linux terminal"), as with PVE's own OCI
// import, which applies the image's Env only. An --env TERM=... stays.
func dropUmociTerm(spec *runtimeSpec, ov *template.ProcessOverrides) {
	if spec.Process == nil {
		return
	}
	if ov != nil && slices.ContainsFunc(ov.Env, func(e string) bool { return strings.HasPrefix(e, "TERM=") }) {
		return
	}
	spec.Process.Env = slices.DeleteFunc(spec.Process.Env, func(e string) bool { return e == "TERM=xterm" })
}
