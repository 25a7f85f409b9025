// Package openfiles knows which paths running processes hold open, so a
// repair leaves alone the temporary files of writers still running.
package openfiles

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Set is the paths every other process holds open (its open files and its
// working directory), read from /proc (Linux) once, when InUse is first
// called. An ordinary user sees only their own processes.
type Set struct {
	once  sync.Once
	paths []string
}

// InUse reports whether a process holds p, or a path under it, open.
func (o *Set) InUse(p string) bool {
	o.once.Do(o.scan)
	abs, err := filepath.Abs(p)
	if err != nil {
		return false
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	for _, q := range o.paths {
		if q == abs || strings.HasPrefix(q, abs+"/") {
			return true
		}
	}
	return false
}

func (o *Set) scan() {
	self := strconv.Itoa(os.Getpid())
	procs, _ := os.ReadDir("/proc")
	for _, pr := range procs {
		pid := pr.Name()
		if _, err := strconv.Atoi(pid); err != nil || pid == self {
			continue
		}
		links := []string{filepath.Join("/proc", pid, "cwd")}
		fds, _ := os.ReadDir(filepath.Join("/proc", pid, "fd"))
		for _, fd := range fds {
			links = append(links, filepath.Join("/proc", pid, "fd", fd.Name()))
		}
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && strings.HasPrefix(t, "/") {
				o.paths = append(o.paths, strings.TrimSuffix(t, " (deleted)"))
			}
		}
	}
}
