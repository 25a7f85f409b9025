package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// completeCommand is the hidden command the completion scripts call:
// `nexcage __complete WORD... CURRENT` prints one candidate a line
// ("VALUE\tDESCRIPTION") for the last word, then ":file" or ":dir" when
// the shell should add file or directory names. It is not in the command
// table, so no list, help or doc shows it; the scripts stay a few lines
// and every answer comes from the table of the binary being completed.
const completeCommand = "__complete"

func init() {
	register(&command{
		name:    "completion",
		args:    "bash|zsh|fish",
		summary: "print a shell completion script for bash, zsh or fish",
		help: `Writes a script to stdout that completes nexcage's commands, each
command's flags, the values of flags that take one of a fixed set
(--arch, --compression, --format, --pull, --pve-version,
--unprivileged) and file and directory names. The script asks the nexcage binary it completes for the
candidates, so it always matches that binary's commands and flags.

  bash
      eval "$(nexcage completion bash)" in ~/.bashrc, or save the output
      as /usr/share/bash-completion/completions/nexcage

  zsh
      save the output as _nexcage in a directory of $fpath (e.g.
      /usr/local/share/zsh/site-functions/_nexcage) before compinit runs

  fish
      save the output as ~/.config/fish/completions/nexcage.fish (or
      /usr/share/fish/vendor_completions.d/nexcage.fish)`,
		run: runCompletion,
	})
}

func runCompletion(_ context.Context, e *env, args []string) (any, error) {
	if len(args) != 1 {
		return nil, usagef("completion takes one shell (%s), got %d arguments", shells, len(args))
	}
	script, ok := completionScripts[args[0]]
	if !ok {
		return nil, usagef("completion %q: use %s", args[0], shells)
	}
	_, err := io.WriteString(e.stdout, script)
	return nil, err
}

// argValues are what a command's arguments complete to beyond file names:
// words at the first argument, and the kind of path any argument is.
// Commands not listed complete paths when they take arguments at all.
var argValues = map[string]struct {
	first valueSet
	path  pathKind
}{
	"completion": {first: shells, path: noPath},
	"check":      {first: valueSet{"host", "store"}, path: anyPath},
	"generate":   {first: valueSet{"spec"}, path: dirPath},
}

type candidate struct{ value, desc string }

// runComplete is `nexcage __complete`: errors print nothing, as a shell
// shows a completion's stderr in the middle of the line being edited.
func runComplete(words []string, w io.Writer) int {
	cands, path := completeWords(words)
	for _, c := range cands {
		if c.desc != "" {
			fmt.Fprintf(w, "%s\t%s\n", c.value, oneLine(c.desc))
		} else {
			fmt.Fprintln(w, c.value)
		}
	}
	switch path {
	case anyPath:
		fmt.Fprintln(w, ":file")
	case dirPath:
		fmt.Fprintln(w, ":dir")
	}
	return exitOK
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// visibleCommands are the table's commands in name order.
func visibleCommands() []*command {
	cs := make([]*command, 0, len(commands))
	for _, c := range commands {
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	return cs
}

func withPrefix(cs []candidate, prefix string) []candidate {
	var out []candidate
	for _, c := range cs {
		if strings.HasPrefix(c.value, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func commandCandidates(cur string) []candidate {
	var cs []candidate
	for _, c := range visibleCommands() {
		cs = append(cs, candidate{c.name, c.summary})
	}
	return withPrefix(cs, cur)
}

// completeWords completes the last of words (the words after "nexcage",
// the last one being the one under the cursor, "" for a new word). It
// reads the words as pflag will: --flag=value, --flag value, -o value,
// -qo value, -- ending the flags.
func completeWords(words []string) ([]candidate, pathKind) {
	if len(words) == 0 {
		words = []string{""}
	}
	cur := words[len(words)-1]
	if len(words) == 1 {
		if strings.HasPrefix(cur, "-") {
			return withPrefix([]candidate{{"--help", "print the commands"}, {"--version", "print the nexcage version"}}, cur), noPath
		}
		return commandCandidates(cur), noPath
	}
	if words[0] == "help" {
		if len(words) == 2 {
			return commandCandidates(cur), noPath
		}
		return nil, noPath
	}
	c, ok := commands[words[0]]
	if !ok {
		return nil, noPath
	}
	fs := newFlagSet(c, &opts{})
	var pending *pflag.Flag // a flag whose value is the next word
	given := map[string]bool{}
	pos, dashdash := 0, false
	for _, w := range words[1 : len(words)-1] {
		switch {
		case pending != nil:
			pending = nil
		case dashdash || w == "-" || !strings.HasPrefix(w, "-"):
			pos++
		case w == "--":
			dashdash = true
		case strings.HasPrefix(w, "--"):
			name, _, hasValue := strings.Cut(w[2:], "=")
			if f := fs.Lookup(name); f != nil {
				given[f.Name] = true
				if !hasValue && f.NoOptDefVal == "" {
					pending = f
				}
			}
		default:
			// A group of shorthands; the first one taking a value takes
			// the rest of the word, or the next word when none is left.
			for i := 1; i < len(w); i++ {
				f := fs.ShorthandLookup(w[i : i+1])
				if f == nil {
					break
				}
				given[f.Name] = true
				if f.NoOptDefVal == "" {
					if i == len(w)-1 {
						pending = f
					}
					break
				}
			}
		}
	}
	switch {
	case pending != nil:
		return flagValueCandidates(pending, "", cur)
	case !dashdash && strings.HasPrefix(cur, "--") && strings.Contains(cur, "="):
		name, value, _ := strings.Cut(cur[2:], "=")
		f := fs.Lookup(name)
		if f == nil || f.NoOptDefVal != "" {
			return nil, noPath
		}
		return flagValueCandidates(f, "--"+name+"=", value)
	case !dashdash && strings.HasPrefix(cur, "-"):
		return flagCandidates(fs, cur, given), noPath
	}
	return argCandidates(c, pos, cur)
}

// flagCandidates are the command's flags, less those already given that
// cannot be repeated; shorthands only once the word is not "--...".
func flagCandidates(fs *pflag.FlagSet, cur string, given map[string]bool) []candidate {
	var cs []candidate
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" || (given[f.Name] && !repeatable(f)) {
			return
		}
		cs = append(cs, candidate{"--" + f.Name, f.Usage})
		if f.Shorthand != "" && !strings.HasPrefix(cur, "--") {
			cs = append(cs, candidate{"-" + f.Shorthand, f.Usage})
		}
	})
	cs = append(cs, candidate{"--help", "print this command's usage and flags"})
	return withPrefix(cs, cur)
}

func repeatable(f *pflag.Flag) bool {
	t := f.Value.Type()
	return strings.HasSuffix(t, "Array") || strings.HasSuffix(t, "Slice")
}

// flagValueCandidates are the values of flag f; prefix is "--name=" when
// the value is in the same word, and candidates then carry it.
func flagValueCandidates(f *pflag.Flag, prefix, value string) ([]candidate, pathKind) {
	if vs := flagValueSet(f); vs != nil {
		var cs []candidate
		for _, v := range vs {
			cs = append(cs, candidate{prefix + v, ""})
		}
		return withPrefix(cs, prefix+value), noPath
	}
	return nil, flagPaths[f.Name]
}

func argCandidates(c *command, pos int, cur string) ([]candidate, pathKind) {
	if c.args == "" {
		return nil, noPath
	}
	a, ok := argValues[c.name]
	if !ok {
		return nil, anyPath
	}
	var cs []candidate
	if pos == 0 {
		for _, v := range a.first {
			cs = append(cs, candidate{v, ""})
		}
	}
	return withPrefix(cs, cur), a.path
}

// completionScripts are the shells' halves of the completion: they turn
// the command line into words, run `nexcage __complete` and hand its
// answer to the shell's completion machinery.
var completionScripts = map[string]string{
	"bash": bashCompletion,
	"zsh":  zshCompletion,
	"fish": fishCompletion,
}

const bashCompletion = `# bash completion for nexcage (generated by: nexcage completion bash).
# The candidates come from the nexcage being completed: nexcage __complete.

_nexcage_complete() {
	local -a args=()
	local i w split=0 joined=0
	# COMP_WORDBREAKS cuts --flag=value into --flag, = and value: glue the
	# pieces back into the one word nexcage parses.
	for ((i = 1; i <= COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		if [[ $w == "=" && ${#args[@]} -gt 0 && ${args[-1]} == --* && ${args[-1]} != *=* ]]; then
			args[-1]+="="
			joined=1
			((i == COMP_CWORD)) && split=1
			continue
		fi
		if ((joined)); then
			args[-1]+=$w
			joined=0
			((i == COMP_CWORD)) && split=1
			continue
		fi
		args+=("$w")
	done
	((COMP_CWORD >= 1)) || args=("")

	# What readline replaces is the value alone when bash split the word,
	# so the "--flag=" part goes from the candidates; else it stays.
	local cur=${args[-1]} pre="" keep=""
	if [[ $cur == --*=* ]]; then
		pre=${cur%%=*}=
		cur=${cur#*=}
		((split)) || keep=$pre
	fi

	local bin=${COMP_WORDS[0]}
	[[ $bin == "~/"* ]] && bin=$HOME/${bin#"~/"}
	local out
	out=$("$bin" __complete "${args[@]}" 2>/dev/null) || return 0

	COMPREPLY=()
	local line path="" lines found
	mapfile -t lines <<<"$out"
	for line in "${lines[@]}"; do
		case $line in
		:file) path=file ;;
		:dir) path=dir ;;
		*)
			line=${line%%$'\t'*}
			COMPREPLY+=("$keep${line#"$pre"}")
			;;
		esac
	done
	if [[ -n $path ]]; then
		compopt -o filenames 2>/dev/null
		if [[ $path == dir ]]; then
			mapfile -t found < <(compgen -d -- "$cur")
		else
			mapfile -t found < <(compgen -f -- "$cur")
		fi
		for line in "${found[@]}"; do
			COMPREPLY+=("$keep$line")
		done
	fi
	return 0
}

complete -F _nexcage_complete nexcage
`

const zshCompletion = `#compdef nexcage
# zsh completion for nexcage (generated by: nexcage completion zsh).
# The candidates come from the nexcage being completed: nexcage __complete.

_nexcage() {
	local out line value desc kind="" pre=""
	local -a cands
	out=$(${~words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null) || return 1
	# A value in the flag's own word: complete after the "=".
	if [[ $PREFIX == --*=* ]]; then
		pre=${PREFIX%%=*}=
		compset -P '*='
	fi
	for line in "${(@f)out}"; do
		case $line in
		(:file) kind=file ;;
		(:dir) kind=dir ;;
		(*)
			value=${line%%$'\t'*}
			value=${value#$pre}
			desc=""
			[[ $line == *$'\t'* ]] && desc=${line#*$'\t'}
			if [[ -n $desc ]]; then
				cands+=("${value//:/\\:}:$desc")
			else
				cands+=("${value//:/\\:}")
			fi
			;;
		esac
	done
	local ret=1
	(( ${#cands} )) && _describe -t values nexcage cands && ret=0
	case $kind in
	(file) _files && ret=0 ;;
	(dir) _files -/ && ret=0 ;;
	esac
	return ret
}

if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
	_nexcage "$@"
else
	compdef _nexcage nexcage
fi
`

const fishCompletion = `# fish completion for nexcage (generated by: nexcage completion fish).
# The candidates come from the nexcage being completed: nexcage __complete.

function __nexcage_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l out ($tokens[1] __complete $tokens[2..-1] "$cur" 2>/dev/null)
    or return
    # A value in the flag's own word: paths complete after the "=".
    set -l pre ''
    if string match -qr -- '^--[^=]*=' "$cur"
        set pre (string replace -r -- '=.*' '=' "$cur")
    end
    set -l value (string sub -s (math (string length -- "$pre") + 1) -- "$cur")
    for line in $out
        switch $line
            case :file
                for p in (__fish_complete_path "$value")
                    echo "$pre$p"
                end
            case :dir
                for p in (__fish_complete_directories "$value")
                    echo "$pre$p"
                end
            case '*'
                echo $line
        end
    end
end

complete -c nexcage -f -a '(__nexcage_complete)'
`
