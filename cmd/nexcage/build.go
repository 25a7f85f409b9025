package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/rootfs"
)

// buildResult is one image's outcome.
type buildResult struct {
	Image    string          `json:"image"`
	UpToDate bool            `json:"up_to_date"`
	Result   *convert.Result `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	Seconds  float64         `json:"seconds"`
	// Stages is where the time went: "flatten" (pull and read the layers,
	// or unpack with --staged) and "write" (the template and sidecars).
	Stages map[string]float64 `json:"stage_seconds,omitempty"`
}

func runBuild(ctx context.Context, e *env, args []string) (any, error) {
	if len(args) == 0 {
		return nil, usagef("build takes at least one IMAGE")
	}
	if err := checkOutput(e.conv, len(args)); err != nil {
		return nil, err
	}
	if e.deployAfter {
		if len(args) > 1 {
			return nil, usagef("--deploy deploys one template: build one IMAGE with it, got %d", len(args))
		}
		// Before the build, which may take long: a mistake in the deploy
		// flags is a usage error now, not after the template is written.
		if _, err := checkDeployFlags(e); err != nil {
			return nil, err
		}
	} else {
		for _, name := range deployOnlyFlags() {
			if e.flags != nil && e.flags.Changed(name) {
				return nil, usagef("--%s needs --deploy", name)
			}
		}
	}
	var so rootfs.SourceOptions
	for _, a := range args {
		var err error
		if _, so, err = imageArgs(e, a); err != nil {
			return nil, err
		}
	}
	opts, err := buildOptions(e, so)
	if err != nil {
		return nil, err
	}
	if opts.Convert, err = convertOptions(e); err != nil {
		return nil, err
	}
	store, err := openStore(e)
	if err != nil {
		return nil, err
	}

	built := pipeline.BuildAll(ctx, store, args, opts)
	results := make([]buildResult, len(built))
	for i, b := range built {
		results[i] = buildResult{Image: b.Image, UpToDate: b.UpToDate, Result: b.Result, Seconds: b.Seconds, Stages: b.Stages}
		if b.Err != nil {
			results[i].Error = hint(e, b.Err).Error()
		}
	}

	failed := 0
	for _, r := range results {
		if r.Error != "" {
			failed++
		}
	}
	if len(results) == 1 {
		r := results[0]
		if r.Error != "" {
			return nil, errors.New(r.Error)
		}
		if e.deployAfter {
			if !e.json {
				printResult(e, r.Result)
			}
			d, err := deployTemplate(ctx, e, r.Result.Template)
			if err != nil {
				return nil, fmt.Errorf("%s was built, but deploying it failed: %w", r.Result.Template, err)
			}
			return map[string]any{"build": r, "deploy": d}, nil
		}
		if !e.json {
			if r.UpToDate {
				fmt.Fprintf(e.stdout, "%s is up to date (built from %s)\n", r.Result.Template, r.Result.Sidecar.Source.SourceDigest)
			} else {
				printResult(e, r.Result)
			}
		}
		return r, nil
	}
	if !e.json {
		printSummary(e, results)
	}
	out := map[string]any{"results": results, "failed": failed}
	if failed > 0 {
		return nil, &failedWith{result: out, err: fmt.Errorf("%d of %d builds failed", failed, len(results))}
	}
	return out, nil
}

// imageBuild is what create and upgrade need to build an image into a
// template first: the build options with their conversion, and the store.
func imageBuild(e *env, so rootfs.SourceOptions) (pipeline.BuildOptions, *rootfs.Store, error) {
	b, err := buildOptions(e, so)
	if err != nil {
		return b, nil, err
	}
	b.Convert = convert.Options{ToolVersion: nexcageVersion(), Progress: e.progress}
	store, err := openStore(e)
	return b, store, err
}

// buildOptions are the pipeline's options from build's (and create's)
// flags, but the template's: convertOptions gives those.
func buildOptions(e *env, so rootfs.SourceOptions) (pipeline.BuildOptions, error) {
	limit, err := parseSize(e.maxLayerSize)
	if err != nil {
		return pipeline.BuildOptions{}, err
	}
	return pipeline.BuildOptions{
		Source: so, Pull: rootfs.PullPolicy(e.pull), Force: e.force, Staged: e.staged,
		MaxLayerSize: limit, MaxEntries: e.maxEntries, Jobs: e.jobs, Progress: e.progress,
	}, nil
}

func printSummary(e *env, results []buildResult) {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tRESULT\tTEMPLATE")
	for _, r := range results {
		switch {
		case r.Error != "":
			fmt.Fprintf(tw, "%s\tFAILED\t%s\n", r.Image, r.Error)
		case r.UpToDate:
			fmt.Fprintf(tw, "%s\tup to date\t%s\n", r.Image, r.Result.Template)
		default:
			fmt.Fprintf(tw, "%s\tbuilt (%.1fs)\t%s\n", r.Image, r.Seconds, r.Result.Template)
		}
	}
	tw.Flush()
}
