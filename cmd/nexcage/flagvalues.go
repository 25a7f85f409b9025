package main

import (
	"strings"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/generate"
)

// valueSet is the fixed set of values a flag or argument takes. One set
// serves the validation (what is accepted, what the error lists), the
// shell completion and the generated docs, so they cannot drift apart.
type valueSet []string

func (v valueSet) has(s string) bool {
	for _, x := range v {
		if x == s {
			return true
		}
	}
	return false
}

// String renders the set as "a, b or c" for messages.
func (v valueSet) String() string {
	if len(v) < 2 {
		return strings.Join(v, "")
	}
	return strings.Join(v[:len(v)-1], ", ") + " or " + v[len(v)-1]
}

// check is the usage error for a value outside the set.
func (v valueSet) check(flag, s string) error {
	if v.has(s) {
		return nil
	}
	return usagef("--%s %q: use %s", flag, s, v)
}

var (
	pullPolicies  = valueSet{"missing", "always", "never"}
	outputFormats = valueSet{"template", "oci-archive"}
	// unprivilegedValues are the canonical spellings; true and false are
	// accepted as well but not offered.
	unprivilegedValues = valueSet{"1", "0"}
	shells             = valueSet{"bash", "zsh", "fish"}
)

// flagValues maps a flag name to its values, for every flag with a fixed
// set. The same name means the same set in every command that has it.
// compression and arch are validated by their packages (which also take
// other spellings: zst, x86_64, ...); their lists are the packages' own.
var flagValues = map[string]valueSet{
	"pull":         pullPolicies,
	"format":       outputFormats,
	"unprivileged": unprivilegedValues,
	"compression":  compressionNames(),
	"arch":         valueSet(generate.Archs),
}

func compressionNames() valueSet {
	v := make(valueSet, len(convert.Compressions))
	for i, c := range convert.Compressions {
		v[i] = string(c)
	}
	return v
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
