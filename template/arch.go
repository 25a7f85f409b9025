package template

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"

	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/tartree"
)

// ErrArch marks an architecture Proxmox VE cannot run.
var ErrArch = errors.New("architecture PVE cannot run")

// DebianArch maps an OCI architecture (and variant) to the Debian name PVE
// uses in template names and its arch setting; others are an ErrArch.
func DebianArch(arch, variant string) (string, error) {
	switch arch {
	case "amd64", "arm64", "i386", "riscv64", "armhf":
		return arch, nil
	case "386":
		return "i386", nil
	case "arm":
		if variant == "" || variant == "v7" || variant == "v6" {
			return "armhf", nil
		}
	}
	return "", errkind.Errorf(ErrArch, "architecture %s%s cannot run on Proxmox VE (it knows amd64, i386, arm64, armhf, riscv64)", arch, map[bool]string{true: "/" + variant, false: ""}[variant != ""])
}

// ArchFromELF reads the machine of /bin/sh, as PVE does when --arch is not
// given; "" when there is no readable ELF shell.
func ArchFromELF(t *tartree.Tree) string {
	b, err := t.ReadFile("bin/sh", 64)
	if err != nil || len(b) < 20 {
		return ""
	}
	// The machine field is all we need: offset 18, in the file's byte order.
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return ""
	}
	var order binary.ByteOrder = binary.LittleEndian
	if b[5] == 2 {
		order = binary.BigEndian
	}
	switch elf.Machine(order.Uint16(b[18:20])) {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_386:
		return "i386"
	case elf.EM_ARM:
		return "armhf"
	case elf.EM_RISCV:
		return "riscv64"
	}
	return ""
}
