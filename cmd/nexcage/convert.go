package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/template"
)

// convertFlags are shared by convert and build.
type convertFlags struct {
	output, compression, name, version, format string
	level                                      int
	privileged, squash                         bool
	process                                    processFlags
}

// compressionValues are what --compression accepts (zst and gz are
// taken as zstd and gzip too); formatValues are convert --format's.
var (
	compressionValues = []string{string(template.Zstd), string(template.Gzip), string(template.XZ)}
	formatValues      = []string{"template", "oci-archive"}
)

func registerConvertFlags(fs *pflag.FlagSet, cf *convertFlags) {
	fs.StringVarP(&cf.output, "output", "o", "", "template file (.tar.zst, .tar.gz, .tar.xz), or a directory for the conventional name: one that exists, or any path ending in / (default: current directory)")
	enumVar(fs, &cf.compression, "compression", "", compressionValues, map[string]string{"zst": "zstd", "gz": "gzip"}, "zstd, gzip or xz (default: from -o's suffix, else zstd)")
	intVar(fs, &cf.level, "level", "", 0, 1, 22, true, "a level is 1 to 22 for zstd, 1 to 9 for gzip and xz", "compression level (default: zstd 3, gzip 6, xz 6)")
	fs.StringVar(&cf.name, "name", "", "name part of the conventional template name (default: the image's name)")
	fs.StringVar(&cf.version, "template-version", "", "version part of the conventional template name (default: the image's version label or tag)")
	// --version was this flag's name until it collided with nexcage's own
	// --version; scripts using it keep working, with a note on stderr.
	fs.StringVar(&cf.version, "version", "", "deprecated spelling of --template-version")
	fs.MarkHidden("version")
	fs.BoolVar(&cf.privileged, "privileged", false, "make a privileged-only template, keeping ids above 65535")
	fs.BoolVar(&cf.squash, "squash-high-ids", false, "give files and the process user with ids above 65535 to 65534 (nobody), so the template works unprivileged")
	registerProcessFlags(fs, &cf.process)
}

func init() {
	register(&command{
		name:    "convert",
		args:    "BUNDLE",
		summary: "convert an OCI bundle into a Proxmox template, CT config and .json sidecar",
		help: `BUNDLE is an OCI runtime bundle directory (or its config.json): the
rootfs becomes a PVE template (PAX tar, zstd by default), and beside it
NAME.conf (the CT config: arch, ostype, mounts, entrypoint, env, ...) and
NAME.json (source, digest, sha256, process, mounts, volumes, ...).
Same bundle and options give a byte-identical template; SOURCE_DATE_EPOCH
clamps mtimes.

With --format oci-archive the argument is an IMAGE instead, written as the
uncompressed OCI archive that PVE 9.1 imports natively.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			registerConvertFlags(fs, &o.conv)
			enumVar(fs, &o.conv.format, "format", "template", formatValues, nil, "template, or oci-archive (argument is then an IMAGE)")
			imageFlags(fs, o)
		},
		run: runConvert,
	})
	register(&command{
		name:    "build",
		args:    "IMAGE...",
		summary: "pull, unpack and convert images into Proxmox templates in one step",
		help: `Pulls each IMAGE when needed and streams its layers straight into a
template (no rootfs is written to disk), with the .conf and .json sidecars.
The result is byte-identical to unpack followed by convert.

A template whose .json records the same source digest and options is up to
date: nothing is rewritten (its mtime stays, so make does not rebuild what
depends on it). --force rebuilds. With several images, -o is a directory,
--jobs builds that many at once, one failure does not stop the others, and
the exit status is 1 if any failed.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			imageFlags(fs, o)
			pullFlag(fs, o)
			registerConvertFlags(fs, &o.conv)
			fs.BoolVar(&o.force, "force", false, "rebuild even when the template is up to date")
			intVar(fs, &o.jobs, "jobs", "j", 1, 1, 1024, false, "--jobs is a number of builds at once, from 1 to 1024", "build this many images at once")
			fs.BoolVar(&o.staged, "staged", false, "unpack to a temporary bundle and convert it (the reference path; slower)")
			maxLayerSizeFlag(fs, o)
			limitFlags(fs, o)
			fs.BoolVar(&o.deployAfter, "deploy", false, "deploy the template on this Proxmox host afterwards (one IMAGE; deploy's flags are taken only with --deploy)")
			registerDeployFlags(fs, &o.deploy)
			fs.BoolVarP(&o.verbose, "verbose", "v", false, "show PVE's own output with errors")
		},
		run: runBuild,
	})
}

func convertOptions(e *env) (convert.Options, error) {
	cf := e.conv
	o := convert.Options{
		Output: cf.output, Level: cf.level, Name: cf.name, Version: cf.version,
		Privileged: cf.privileged, SquashHighIDs: cf.squash,
		ToolVersion: nexcageVersion(), Progress: e.progress,
	}
	o.Compression = template.Compression(cf.compression)
	if cf.privileged && cf.squash {
		return o, usagef("--privileged and --squash-high-ids exclude each other")
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return o, err
	}
	o.SourceDateEpoch = epoch
	if o.Process, err = cf.process.overrides(); err != nil {
		return o, err
	}
	return o, nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org).
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative number of seconds", s)
	}
	return time.Unix(n, 0), nil
}

func runConvert(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) != 1 {
		return nil, usagef("convert takes one BUNDLE (or IMAGE with --format oci-archive), got %d arguments", len(args))
	}
	if e.conv.format == "oci-archive" {
		return exportOCIArchive(ctx, e, args[0])
	}
	if err := checkOutput(e.conv, 1); err != nil {
		return nil, err
	}
	opts, err := convertOptions(e)
	if err != nil {
		return nil, err
	}
	b, err := convert.LoadBundle(args[0])
	if err != nil {
		return nil, err
	}
	res, err := convert.Convert(ctx, b, opts)
	if err != nil {
		return nil, processHint(err)
	}
	printResult(e, res)
	return res, nil
}

func printResult(e *env, res *convert.Result) {
	if e.json {
		return
	}
	m := res.Sidecar
	kind := "system container"
	if m.Application {
		kind = "application container"
	}
	priv := "unprivileged"
	if m.Privileged {
		priv = "privileged-only"
	}
	fmt.Fprintf(e.stdout, "%s\n  %s, %s, ostype %s, arch %s, %s\n  sha256 %s\n  config %s\n  manifest %s\n",
		res.Template, progress.HumanBytes(m.Template.Size), kind, m.OSType, m.Arch, priv, m.Template.SHA256, res.Config, res.SidecarJSON)
}

func exportOCIArchive(ctx context.Context, e *env, image string) (any, error) {
	cf := e.conv
	if cf.compression != "" || cf.level != 0 || cf.privileged || cf.squash {
		return nil, usagef("--format oci-archive writes an uncompressed OCI archive: --compression, --level, --privileged and --squash-high-ids do not apply")
	}
	if p := cf.process; p.entrypoint.set || p.cmd.set || p.env != nil || p.user != "" || p.workdir != "" {
		return nil, usagef("--format oci-archive writes the image as it is: --entrypoint, --cmd, --env, --user and --workdir do not apply")
	}
	if err := checkOutput(cf, 1); err != nil {
		return nil, err
	}
	_, so, err := imageArgs(e, image)
	if err != nil {
		return nil, err
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return nil, err
	}
	store, err := openStore(e)
	if err != nil {
		return nil, err
	}
	// Without --pull: the default policy, under which a local source
	// that changed is read again.
	res, err := pipeline.ExportOCIArchive(ctx, store, image, pipeline.ExportOptions{
		Source: so, Output: cf.output, Name: cf.name, Version: cf.version, MTime: epoch, Progress: e.progress,
	})
	if err != nil {
		return nil, err
	}
	if !e.json {
		fmt.Fprintf(e.stdout, "%s\n  OCI archive of %s (%s), %s\n", res.Archive, res.Image.Ref, res.Image.Platform, progress.HumanBytes(res.Size))
	}
	return map[string]any{"archive": res.Archive, "image": res.Image, "size": res.Size}, nil
}

// checkOutput refuses, before anything is read or written, an -o that
// cannot be written: a file name with the wrong suffix for the format, a
// suffix that contradicts --compression, a --level the compression does
// not take, or a file name for several images.
func checkOutput(cf convertFlags, images int) error {
	out := cf.output
	dir := pipeline.OutputIsDir(out)
	if !dir && images > 1 {
		return usagef("-o: %q is not a directory, and %d images need one; end it with / (or create the directory first)", out, images)
	}
	if cf.format == "oci-archive" {
		if !dir && !strings.HasSuffix(out, ".tar") {
			return usagef("-o: %q is not an OCI archive name; PVE imports an OCI archive only from a plain .tar file, so end the name in .tar, or end a directory with /", out)
		}
		return nil
	}
	comp := template.Compression(cf.compression)
	if !dir {
		fromName, ok := template.CompressionFromName(out)
		switch {
		case !ok || !strings.HasSuffix(out, fromName.Suffix()):
			// Lower case only: the sidecars are named by cutting the
			// suffix off, and deploy, check and generate look for them so.
			return usagef("-o: %q is not a template name; a template ends in .tar.zst, .tar.gz or .tar.xz, in lower case (PVE refuses .tgz and other names); end a directory with /", out)
		case comp != "" && comp != fromName:
			return usagef("-o: %q ends in %s but --compression is %s; make them agree", out, fromName.Suffix(), comp)
		}
		comp = fromName
	}
	if comp == "" {
		comp = template.Zstd
	}
	if lo, hi := comp.Levels(); cf.level != 0 && (cf.level < lo || cf.level > hi) {
		return usagef("--level: %d is out of range for %s; use %d to %d", cf.level, comp, lo, hi)
	}
	return nil
}
