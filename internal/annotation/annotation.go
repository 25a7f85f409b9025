// Package annotation names the config.json annotations nexcage's unpack
// writes and its convert reads: the contract between the two stages about
// an image's identity and volumes, which umoci does not record.
package annotation

const (
	Reference    = "io.nexcage.image.reference"
	Digest       = "io.nexcage.image.digest"
	SourceDigest = "io.nexcage.image.source-digest"
	// Name is the image name a local layout or archive records for the
	// image (podman's localhost/app:tag), when the reference gives none.
	Name = "io.nexcage.image.name"
	// Volumes is the image's VOLUME list, sorted and comma-separated.
	Volumes = "io.nexcage.image.volumes"
	// Entrypoint is the image's Entrypoint as a JSON array ("[]" for
	// none): process.args is Entrypoint+Cmd, and replacing only Cmd needs
	// the split. Untrusted: used only when it is a prefix of process.args.
	Entrypoint = "io.nexcage.image.entrypoint"
)

// The annotations umoci writes from the image config, which generate
// writes for a bundle it makes and convert reads.
const (
	OS           = "org.opencontainers.image.os"
	Arch         = "org.opencontainers.image.architecture"
	Variant      = "org.opencontainers.image.variant"
	Created      = "org.opencontainers.image.created"
	ExposedPorts = "org.opencontainers.image.exposedPorts"
	Version      = "org.opencontainers.image.version"
	Title        = "org.opencontainers.image.title"
)
