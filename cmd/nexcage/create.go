package main

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/lxc"
	"github.com/nexcage/nexcage/pct"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/rootfs"
)

func init() {
	register(&command{
		name:    "create",
		args:    "--name NAME --image IMAGE",
		summary: "create a named container from a template or an image (built first when needed)",
		help: `--image is a template (a local file or STORAGE:vztmpl/FILE) or any image
reference build accepts; an image is built first into the template cache
($NEXCAGE_TEMPLATES, else next to the store; cache hits are free), then
deployed. --name is the container's hostname and its identity: a
container of that name anywhere in the cluster is "already exists". All of
deploy's flags work here.`,
		flags: func(fs *pflag.FlagSet, o *opts) {
			fs.StringVar(&o.createName, "name", "", "container name (its hostname); required")
			fs.StringVar(&o.createImage, "image", "", "template or image reference; required")
			imageFlags(fs, o)
			pullFlag(fs, o)
			registerDeployFlags(fs, &o.deploy)
			fs.BoolVarP(&o.verbose, "verbose", "v", false, "show PVE's own output with errors")
		},
		run: runCreate,
	})
}

func runCreate(ctx context.Context, e *env, args []string) (any, error) {
	switch {
	case len(args) != 0:
		return nil, usagef("create takes no arguments: give --name NAME --image IMAGE")
	case e.createName == "" && e.createImage == "":
		return nil, usagef("--name and --image are required")
	case e.createName == "":
		return nil, usagef("--name is required: the container's name (its hostname)")
	case e.createImage == "":
		return nil, usagef("--image is required: a template file, STORAGE:vztmpl/FILE or an image reference")
	case !lxc.ValidDNSName(e.createName):
		return nil, usagef("--name: %s", checkHostname(e.createName))
	case e.deploy.hostname != "" && e.deploy.hostname != e.createName:
		return nil, usagef("--hostname and --name differ: with create, --name is the hostname")
	}
	e.deploy.hostname = e.createName

	o, err := deployOpts(e)
	if err != nil {
		return nil, err
	}
	co := pipeline.CreateOptions{Name: e.createName, Image: e.createImage, TemplateDir: os.Getenv("NEXCAGE_TEMPLATES"), Deploy: o}
	var store *rootfs.Store
	if !pipeline.IsTemplate(e.createImage) {
		// An image is built first: what build would refuse is a usage
		// error before anything on the host is asked.
		_, so, err := imageArgs(e, e.createImage)
		if err != nil {
			return nil, err
		}
		if co.Build, store, err = imageBuild(e, so); err != nil {
			return nil, err
		}
	}
	res, err := pipeline.Create(ctx, store, co)
	if err != nil {
		var pe *pct.Error
		if errors.As(err, &pe) && pe.Param == "name" && errors.Is(err, pct.ErrAlreadyExists) {
			// The name is the identity: the fix names the flag.
			c := *pe
			c.Fix = strings.Replace(c.Fix, "choose another name", "choose another --name", 1)
			err = &c
		}
		return nil, deployError(e, err)
	}
	return printDeploy(e, res), nil
}
