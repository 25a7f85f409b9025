//go:build linux

package testenv

import (
	"os"
	"syscall"
)

func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		// A group of its own lets us kill the tool together with whatever
		// it forked.
		Setpgid: true,
		// If the test binary dies (panic on -timeout, SIGKILL), take the
		// child with it instead of leaving a registry listening.
		Pdeathsig: syscall.SIGKILL,
	}
}

func signalTree(p *os.Process, sig syscall.Signal) error {
	if p == nil {
		return nil
	}
	// Negative pid: the whole group, which Setpgid made equal to the pid.
	if err := syscall.Kill(-p.Pid, sig); err != nil && err != syscall.ESRCH {
		return p.Signal(sig)
	}
	return nil
}

func killTree(p *os.Process) error { return signalTree(p, syscall.SIGKILL) }

func termTree(p *os.Process) error { return signalTree(p, syscall.SIGTERM) }
