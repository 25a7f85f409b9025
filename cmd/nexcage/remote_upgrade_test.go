package main

import (
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/nexcage/nexcage/internal/testimage"
)

// mkversion DIR TAG VERSION ENTRYPOINT [NAME=VALUE|cwd:DIR|vol:DIR...]: an application
// image for upgrade scripts: Alpine with /app/run.sh (which ends on
// SIGTERM and on SIGPWR, the stop signal of a CT made through the API)
// and /app/version, /app/fail.sh (which exits at once), the entrypoint (split at blanks), the environment and
// a VOLUME /data, without user or stop signal, and without cwd unless
// cwd:DIR: the API cannot set them. noenv leaves the environment
// empty, broken makes /app/run.sh exit at once. vol:DIR is one more VOLUME, a
// directory the image has owned by 1000:1000, mode 0750, so that a
// volume given the image's owner can be told from one PVE made.
func cmdMkversion(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 4 {
		ts.Fatalf("usage: mkversion DIR TAG VERSION ENTRYPOINT [NAME=VALUE|cwd:DIR|vol:DIR...]")
	}
	base, err := testimage.Alpine("amd64")
	ts.Check(err)
	layers, err := base.Layers()
	ts.Check(err)
	entries := []testimage.Entry{
		testimage.Dir("app/", 0o755),
		testimage.File("app/run.sh", 0o755, "#!/bin/sh\ntrap 'exit 0' TERM PWR\nwhile true; do sleep 1; done\n"),
		testimage.File("app/fail.sh", 0o755, "#!/bin/sh\nexit 1\n"),
		testimage.File("app/version", 0o644, args[2]+"\n"),
		testimage.File("app/only-in-"+args[2], 0o644, args[2]+"\n"),
	}
	cfg := v1.Config{
		Entrypoint: strings.Fields(args[3]),
		Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Volumes:    map[string]struct{}{"/data": {}},
	}
	for _, a := range args[4:] {
		if dir, ok := strings.CutPrefix(a, "cwd:"); ok {
			cfg.WorkingDir = dir
		} else if a == "noenv" {
			// PVE 9.0 has no environment an API client may set.
			cfg.Env = nil
		} else if a == "broken" {
			entries[1] = testimage.File("app/run.sh", 0o755, "#!/bin/sh\nexit 1\n")
		} else if dir, ok := strings.CutPrefix(a, "vol:"); ok {
			cfg.Volumes[dir] = struct{}{}
			d := testimage.Dir(strings.TrimPrefix(dir, "/"), 0o750)
			d.Hdr.Uid, d.Hdr.Gid = 1000, 1000
			entries = append(entries, d)
		} else {
			cfg.Env = append(cfg.Env, a)
		}
	}
	app, err := testimage.Layer(entries, testimage.Gzip)
	ts.Check(err)
	img, err := testimage.Image(append(layers, app), cfg, v1.Platform{OS: "linux", Architecture: "amd64"}, false)
	ts.Check(err)
	appendToLayout(ts, args[0], args[1], img)
}

// appendToLayout adds img to the OCI layout DIR (made when missing) as TAG.
func appendToLayout(ts *testscript.TestScript, dir, tag string, img v1.Image) {
	p, err := layout.FromPath(ts.MkAbs(dir))
	if err != nil {
		p, err = layout.Write(ts.MkAbs(dir), empty.Index)
		ts.Check(err)
	}
	ts.Check(p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})))
}
