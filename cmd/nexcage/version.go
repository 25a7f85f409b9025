package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at link time (-ldflags "-X main.version=..."); builds
// without it report the module version or "dev".
var version = ""

func nexcageVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func init() {
	register(&command{
		name:    "version",
		summary: "print the nexcage version",
		run: func(_ context.Context, e *env, args []string) (any, error) {
			if len(args) != 0 {
				return nil, usagef("version takes no arguments")
			}
			v := map[string]string{"version": nexcageVersion(), "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
			if !e.json {
				fmt.Fprintf(e.stdout, "nexcage %s (%s, %s)\n", v["version"], v["go"], v["platform"])
			}
			return v, nil
		},
	})
}
