// Package packaging holds no code: its tests build the Debian packages with
// scripts/deb.sh (what `make deb` runs), check them with dpkg-deb and
// lintian, and install and remove the amd64 one in a fresh Debian chroot
// the way an admin would on a Proxmox VE host.
package packaging
