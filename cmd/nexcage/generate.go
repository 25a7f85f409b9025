package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/generate"
	"github.com/nexcage/nexcage/template"
)

// genFlags are generate's own flags; main's opts struct holds only the
// shared ones (--force among them).
var genFlags struct {
	rootfs, template string
	link             bool
	spec             generate.SpecOptions
}

func init() {
	register(&command{
		name:    "generate",
		args:    "spec [BUNDLE] | --rootfs DIR BUNDLE | --template FILE BUNDLE",
		summary: "make an OCI bundle from a rootfs directory or a template, or write config.json alone",
		help: `Three forms:

  nexcage generate spec [flags] [BUNDLE]
      writes BUNDLE/config.json (default: the current directory), a
      runtime-spec v1.2 config like 'runc spec' bound for LXC. --rootfs
      PATH sets root.path (default rootfs); when that directory exists, the
      process defaults to its /sbin/init (else /bin/sh) and the
      architecture is read from its /bin/sh. An existing config.json is
      replaced only with --force.

  nexcage generate --rootfs DIR [--link] [flags] BUNDLE
      copies the directory DIR (debootstrap, a build script's output) into
      BUNDLE/rootfs with every owner, mode, hard link, symlink, device node,
      fifo, user.*/security.capability xattr and mtime; --link references
      DIR by its absolute path in root.path instead of copying it. The
      process is DIR's /sbin/init when it has one, else /bin/sh.

  nexcage generate --template FILE [flags] BUNDLE
      extracts a template (.tar.zst, .tar.gz, .tar.xz) into BUNDLE/rootfs,
      refusing members that would land outside it. Process, environment,
      working directory, user, mounts, hostname, labels and the image's
      identity come from FILE's .json and .conf sidecars when they exist,
      so 'nexcage convert BUNDLE' with the template's options (printed)
      gives the same template again.

The process flags (--args or --cmd, --env, --cwd, --user, --hostname,
--mount, --memory, --cpus, --arch) override what the rootfs or the
sidecars say. Mounts are bind or tmpfs, the kinds convert maps to PVE.
--memory and --cpus are for OCI runtimes: convert does not carry them
into the CT config (deploy sets them: --memory, --cores).

BUNDLE is assembled under a temporary name beside it and renamed into
place: a failure leaves nothing. A non-empty BUNDLE is replaced only with
--force. As an ordinary user the bundle is rootless: your ids stand for
root, other owners are kept in the user.rootlesscontainers xattr, and
config.json maps your ids (as 'umoci unpack --rootless' does).

A first argument "spec" always means the spec form: write ./spec for a
bundle of that name.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			genFlags.spec = generate.SpecOptions{}
			fs.StringVar(&genFlags.rootfs, "rootfs", "", "the rootfs directory to make the bundle from (generate spec: root.path, default rootfs)")
			fs.BoolVar(&genFlags.link, "link", false, "reference the --rootfs directory in root.path instead of copying it")
			fs.StringVar(&genFlags.template, "template", "", "the template (.tar.zst, .tar.gz, .tar.xz) to make the bundle from")
			fs.BoolVar(&o.force, "force", false, "replace a non-empty BUNDLE (generate spec: an existing config.json)")
			s := &genFlags.spec
			fs.StringArrayVar(&s.Args, "args", nil, "one argument of the process, repeated for each: --args /usr/bin/app --args --port --args 80")
			fs.StringVar(&s.Cmd, "cmd", "", "the process as one command line, split as LXC splits lxc.init.cmd, not as a shell does: at blanks, a word that starts with ' or \" runs to the same quote, no escapes (use --args otherwise): --cmd '/usr/bin/app --name \"my app\"'")
			fs.StringArrayVar(&s.Env, "env", nil, "NAME=VALUE in the process environment (repeatable; replaces NAME)")
			fs.StringVar(&s.Cwd, "cwd", "", "working directory of the process (absolute)")
			fs.StringVar(&s.User, "user", "", "UID[:GID] the process runs as, numbers only: no user names (GID defaults to 0)")
			fs.StringVar(&s.Hostname, "hostname", "", "the container's hostname")
			fs.StringArrayVar(&s.Mounts, "mount", nil, "type=bind,src=/host/dir,dst=/in/ct[,ro] or type=tmpfs,dst=/run[,size=64m][,mode=1777] (repeatable)")
			fs.StringVar(&s.Memory, "memory", "", "memory limit: bytes, or a number with k, m, g (e.g. 512m)")
			fs.StringVar(&s.CPUs, "cpus", "", "CPU limit in CPUs (e.g. 2, or 0.5): a CFS quota over a 100ms period")
			fs.StringVar(&s.Arch, "arch", "", "architecture (amd64, arm64, i386, armhf, riscv64; default: read from /bin/sh)")
		},
		run: runGenerate,
	})
}

func runGenerate(ctx context.Context, e *env, args []string) (any, error) {
	opts := generate.Options{
		Link:     genFlags.link,
		Template: genFlags.template,
		Force:    e.force,
		Spec:     genFlags.spec,
		Progress: e.progress,
	}
	var res *generate.Result
	var err error
	if len(args) > 0 && args[0] == "spec" {
		if len(args) > 2 {
			return nil, usagef("generate spec takes at most one BUNDLE, got %d arguments", len(args)-1)
		}
		if genFlags.template != "" || genFlags.link {
			return nil, usagef("generate spec writes config.json alone: --template and --link belong to 'generate --template FILE BUNDLE' and 'generate --rootfs DIR --link BUNDLE'")
		}
		bundle := "."
		if len(args) == 2 {
			bundle = args[1]
		}
		opts.Spec.RootPath = genFlags.rootfs
		res, err = generate.Spec(ctx, bundle, opts)
		if errors.Is(err, generate.ErrBundleExists) {
			return nil, fmt.Errorf("%w: pass --force to replace it, or choose another BUNDLE", err)
		}
	} else {
		if len(args) != 1 {
			return nil, usagef("generate takes one BUNDLE after --rootfs DIR or --template FILE (or: generate spec [BUNDLE]), got %d arguments", len(args))
		}
		opts.Rootfs = genFlags.rootfs
		res, err = generate.Bundle(ctx, args[0], opts)
	}
	if err != nil {
		return nil, generateError(err)
	}
	if !e.json {
		printGenerated(e, res)
	}
	return generated{Result: res, ConvertFlags: convertFlagsOf(res.ConvertRecipe)}, nil
}

// generateFlags are the flags of generate's options whose names differ.
var generateFlags = map[string]string{generate.FieldRootPath: "rootfs"}

func generateFlag(field string) string {
	if f, ok := generateFlags[field]; ok {
		return "--" + f
	}
	return "--" + field
}

// generateError names generate's options as the flags that set them:
// a value generate cannot use is a usage error (exit status 2).
func generateError(err error) error {
	var oe *generate.OptionError
	var sib *generate.SourceInBundleError
	switch {
	case errors.As(err, &oe):
		switch {
		case oe.With != "":
			return usagef("%s and %s %s", generateFlag(oe.With), generateFlag(oe.Field), oe.Msg)
		case oe.Field == "":
			return usagef("%s", oe.Msg)
		case oe.Value == "":
			return usagef("%s: %s", generateFlag(oe.Field), oe.Msg)
		}
		// The shape of every other bad flag value's message.
		return usagef("%s: %q: %s", generateFlag(oe.Field), oe.Value, oe.Msg)
	case errors.Is(err, generate.ErrNoSource):
		return usagef("say what to make the bundle from: --rootfs DIR or --template FILE (or use `generate spec` for config.json alone)")
	case errors.Is(err, generate.ErrRootfsNotDir):
		return fmt.Errorf("%w; for a template file use --template", err)
	case errors.As(err, &sib) && sib.Template:
		return fmt.Errorf("the template %s is inside the bundle %s, which --force would replace: choose another bundle directory", sib.Source, sib.Bundle)
	case errors.As(err, &sib):
		return fmt.Errorf("the rootfs %s is inside the bundle %s, which generate replaces: for a rootfs already in place, write its config.json with `nexcage generate spec %s`", sib.Source, sib.Bundle, sib.Bundle)
	}
	return err
}

func printGenerated(e *env, r *generate.Result) {
	w := e.stdout
	switch r.From {
	case "spec":
		fmt.Fprintf(w, "wrote %s\n", r.Config)
	case "link":
		fmt.Fprintf(w, "generated %s referencing the rootfs %s\n", r.Bundle, r.Rootfs)
	default:
		fmt.Fprintf(w, "generated %s from %s %s: rootfs/ (%d entries) and config.json\n", r.Bundle, r.From, r.Source, r.Entries)
	}
	owner := "as root"
	if r.Rootless {
		owner = "rootless (your ids stand for root)"
	}
	arch := r.Arch
	if arch == "" {
		arch = "unknown (convert reads /bin/sh)"
	}
	fmt.Fprintf(w, "  process %s, arch %s, %s\n", genShellJoin(r.Process), arch, owner)
	if len(r.Sidecars) > 0 {
		fmt.Fprintf(w, "  from %s\n", strings.Join(r.Sidecars, " and "))
	}
	if r.From != "spec" {
		cmd := "nexcage convert " + genShellQuote(r.Bundle)
		if f := convertFlagsOf(r.ConvertRecipe); len(f) > 0 {
			cmd += " " + genShellJoin(f)
		}
		fmt.Fprintf(w, "  make a template: %s\n", cmd)
	}
}

// generated is generate's --json output: the result, with the recipe
// as the convert flags that give the template's bytes back.
type generated struct {
	*generate.Result
	ConvertFlags []string `json:"convert_flags,omitempty"`
}

// convertFlagsOf renders a recipe generate read as convert's flags.
func convertFlagsOf(r *template.Recipe) []string {
	if r == nil {
		return nil
	}
	var out []string
	if r.Compression != "" {
		out = append(out, "--compression", r.Compression)
	}
	if r.Level != 0 {
		out = append(out, "--level", fmt.Sprint(r.Level))
	}
	if r.Privileged {
		out = append(out, "--privileged")
	}
	if r.SquashHighIDs {
		out = append(out, "--squash-high-ids")
	}
	if r.Name != "" {
		out = append(out, "--name", r.Name)
	}
	if r.Version != "" {
		out = append(out, "--template-version", r.Version)
	}
	return out
}

func genShellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = genShellQuote(a)
	}
	return strings.Join(q, " ")
}

func genShellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`|&;<>(){}*?[]#~!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
