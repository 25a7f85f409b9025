package testimage

import (
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The images below point symlinks at host paths only known when a test
// runs (a victim in its temporary directory), so they are made per test
// rather than kept in Hostile.

// ImplicitDirToHost is an image whose layer creates "x/<base>/f", making
// "x" and "x/<base>" implicit directories, after which "x" becomes a
// symlink to hostDir: a symlink to the host's directory holding
// <base>. With later=true the symlink comes in a second layer. climb writes
// the target as "../../.." up to the root and then the host path, instead
// of the absolute path. An unpacker that fixes up its implicit
// directories by path would chmod and touch hostDir/<base>.
func ImplicitDirToHost(hostDir, base string, later, climb bool) (v1.Image, error) {
	target := hostDir
	if climb {
		target = strings.Repeat("../", 32) + strings.TrimPrefix(hostDir, "/")
	}
	first := []Entry{File("x/"+base+"/f", 0o644, "f\n")}
	link := []Entry{Symlink("x", target)}
	layers := [][]Entry{append(first, link...)}
	if later {
		layers = [][]Entry{first, link}
	}
	return hostImage("implicit-dir-to-host", layers, v1.Config{})
}

// AccountFilesToHost is an image whose /etc/passwd and /etc/group are
// absolute symlinks to the given host files, and whose config runs as
// user: resolving the user through them reads the host's accounts.
func AccountFilesToHost(passwd, group, user string) (v1.Image, error) {
	return hostImage("account-files-to-host", [][]Entry{{
		Dir("etc/", 0o755),
		Symlink("etc/passwd", passwd),
		Symlink("etc/group", group),
	}}, v1.Config{User: user})
}

func hostImage(name string, layers [][]Entry, cfg v1.Config) (v1.Image, error) {
	c := caseConfig(name)
	c.User = cfg.User
	// Converters insist that the entrypoint exists.
	c.Entrypoint = []string{"/app"}
	layers[0] = append([]Entry{File("app", 0o755, "#!/bin/sh\n")}, layers[0]...)
	img, err := layersImage(layers, Gzip, c, false)
	if err != nil {
		return nil, fmt.Errorf("testimage: %s: %w", name, err)
	}
	return img, nil
}
