// Package template is the Proxmox VE LXC template format as nexcage writes
// and reads it: the file names and the compressions they imply
// (Compression, CompressionFromName), the conventional name
// <os>-<osversion>-<name>_<version>_<arch>.tar.zst (Name), the NAME.json
// sidecar beside every template (Sidecar, ReadSidecar, SidecarPaths),
// reading the archive back (OpenTar, NewTarReader, Decompress) and the
// architecture names PVE uses (DebianArch, ArchFromELF).
//
// It is the contract between the stages: convert writes templates in this
// format, generate and pct read them, and none of them needs another to
// know what a template is. Everything read here (names, sidecars,
// archives) may come from an attacker: reads are bounded and errors are
// typed.
package template
