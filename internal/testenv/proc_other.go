//go:build !linux

package testenv

import (
	"os"
	"syscall"
)

// nexcage only runs on Linux; this keeps the package compiling elsewhere so
// editors and `go vet` on other hosts don't trip over it.
func childProcAttr() *syscall.SysProcAttr { return nil }

func killTree(p *os.Process) error {
	if p == nil {
		return nil
	}
	return p.Kill()
}

func termTree(p *os.Process) error {
	if p == nil {
		return nil
	}
	return p.Signal(os.Interrupt)
}

func listensOn(pid int, port int) (bool, bool) { return false, false }
