//go:build linux

package testenv

import (
	"fmt"
	"os"
	"strings"
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

// listensOn reports whether process pid holds the listening socket of
// 127.0.0.1:port: a 200 on the port proves nothing when another server
// took it first (the kernel's /proc/net/tcp names the socket's inode, the
// process's fd table says who holds it).
func listensOn(pid int, port int) (bool, bool) {
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false, false // cannot tell
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	inode := ""
	for _, line := range strings.Split(string(raw), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == want && f[3] == "0A" { // 0A: LISTEN
			inode = f[9]
		}
	}
	if inode == "" {
		return false, true
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false, false
	}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && l == "socket:["+inode+"]" {
			return true, true
		}
	}
	return false, true
}
