package testimage

import "encoding/binary"

// CapV2 is the security.capability value `setcap cap_X+ep` writes for the
// capability numbered bit (below 32): a struct vfs_cap_data, revision 2,
// effective, little endian, 20 bytes.
func CapV2(bit uint) string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x000001) // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	binary.LittleEndian.PutUint32(b[4:], 1<<bit)              // data[0].permitted
	// data[0].inheritable and data[1] (caps 32-63) stay zero.
	return string(b)
}

// CapAsV2 reads a revision 3 capability (what a file capability written
// inside a user namespace becomes: v2 plus the namespace's root uid) as
// the v2 one it stands for. Any other value is returned as it is.
func CapAsV2(v string) string {
	b := []byte(v)
	if len(b) != 24 || binary.LittleEndian.Uint32(b)>>24 != 3 {
		return v
	}
	binary.LittleEndian.PutUint32(b, binary.LittleEndian.Uint32(b)&0x00ffffff|2<<24)
	return string(b[:20])
}
