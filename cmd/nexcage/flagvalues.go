package main

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/nexcage/nexcage/generate"
)

// valueSet is a fixed set of values of a flag or an argument.
type valueSet []string

// String renders the set as "a, b or c" for messages.
func (v valueSet) String() string {
	if len(v) < 2 {
		return strings.Join(v, "")
	}
	return strings.Join(v[:len(v)-1], ", ") + " or " + v[len(v)-1]
}

// shells are what `nexcage completion` writes a script for.
var shells = valueSet{"bash", "zsh", "fish"}

// libraryValues are the value sets of flags a library validates (it also
// takes other spellings, x86_64 for amd64): the library's list is the
// one source.
var libraryValues = map[string]valueSet{
	"arch": valueSet(generate.Archs),
}

// flagValueSet is the fixed set of values flag f takes, nil for a free
// one. For an enumValue flag (--pull, --format, --compression,
// --unprivileged, --pve-version) the set is the very list its Set validates against, so
// what completion offers and what parsing accepts cannot drift apart.
func flagValueSet(f *pflag.Flag) valueSet {
	if ev, ok := f.Value.(*enumValue); ok {
		return valueSet(ev.values)
	}
	return libraryValues[f.Name]
}

// pathKind says what a flag's or an argument's value names on disk, for
// completion.
type pathKind int

const (
	noPath pathKind = iota
	anyPath
	dirPath
)

// flagPaths are the flags whose value is a file or directory.
var flagPaths = map[string]pathKind{
	"output":          anyPath, // a template file or a directory
	"store":           dirPath,
	"rootfs":          dirPath,
	"template":        anyPath,
	"ssh-public-keys": anyPath,
}
