package imageio

import "encoding/binary"

// JPEGScans counts the start-of-scan markers of a JPEG in one linear pass over
// its marker segments and entropy-coded data. It stops at the end-of-image
// marker or at the first malformed segment (counting what it saw so far):
// judging malformed files is the decoder's job.
func JPEGScans(data []byte) int {
	if len(data) < 2 || data[0] != 0xff || data[1] != 0xd8 {
		return 0
	}
	scans := 0
	p := 2
	for p+1 < len(data) {
		if data[p] != 0xff {
			return scans
		}
		marker := data[p+1]
		switch {
		case marker == 0xff: // fill byte
			p++
			continue
		case marker == 0xd9: // end of image
			return scans
		case marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8): // no length
			p += 2
			continue
		}
		if p+4 > len(data) {
			return scans
		}
		n := int(binary.BigEndian.Uint16(data[p+2:]))
		if n < 2 {
			return scans
		}
		p += 2 + n
		if marker != 0xda {
			continue
		}
		scans++
		// Skip the entropy-coded data: up to a marker other than a stuffed
		// zero or a restart marker.
		for p+1 < len(data) {
			if data[p] == 0xff {
				if m := data[p+1]; m != 0x00 && (m < 0xd0 || m > 0xd7) {
					break
				}
				p += 2
				continue
			}
			p++
		}
	}
	return scans
}
