package bundle

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// DType is the element type of an Array.
type DType string

// The element types a bundle may hold (docs/bundle.md).
const (
	Float32 DType = "<f4"
	Int64   DType = "<i8"
	Uint8   DType = "|u1" // e.g. packed golden masks
)

// Array is an n-dimensional NumPy array in C order. Exactly one of F32, I64
// and U8 holds the data, according to DType.
type Array struct {
	DType DType
	Shape []int
	F32   []float32
	I64   []int64
	U8    []byte
}

// Len is the number of elements.
func (a *Array) Len() int {
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	return n
}

// ErrNPY is wrapped by every .npy decoding error.
var ErrNPY = errors.New("bundle: invalid .npy")

// maxNPYElements bounds the element count a header may claim (1 GiB of
// float32), so a corrupt header cannot make the reader allocate without limit.
const maxNPYElements = 1 << 28

// ReadNPY decodes a NumPy .npy file of version 1.0, 2.0 or 3.0 holding
// little-endian float32 or int64, or uint8, in C order.
func ReadNPY(r io.Reader) (*Array, error) {
	var pre [10]byte
	if _, err := io.ReadFull(r, pre[:8]); err != nil {
		return nil, fmt.Errorf("%w: short magic: %v", ErrNPY, err)
	}
	if string(pre[:6]) != "\x93NUMPY" {
		return nil, fmt.Errorf("%w: bad magic", ErrNPY)
	}
	var hlen int
	switch pre[6] {
	case 1:
		if _, err := io.ReadFull(r, pre[8:10]); err != nil {
			return nil, fmt.Errorf("%w: short header length: %v", ErrNPY, err)
		}
		hlen = int(binary.LittleEndian.Uint16(pre[8:10]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("%w: short header length: %v", ErrNPY, err)
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
		if hlen > 1<<20 {
			return nil, fmt.Errorf("%w: header of %d bytes", ErrNPY, hlen)
		}
	default:
		return nil, fmt.Errorf("%w: version %d.%d", ErrNPY, pre[6], pre[7])
	}
	header := make([]byte, hlen)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, fmt.Errorf("%w: short header: %v", ErrNPY, err)
	}
	a, err := parseNPYHeader(string(header))
	if err != nil {
		return nil, err
	}
	n := a.Len()
	var size int
	switch a.DType {
	case Float32:
		size = 4
	case Int64:
		size = 8
	case Uint8:
		size = 1
	}
	data := make([]byte, n*size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("%w: %d elements expected: %v", ErrNPY, n, err)
	}
	switch a.DType {
	case Float32:
		a.F32 = make([]float32, n)
		for i := range a.F32 {
			a.F32[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case Int64:
		a.I64 = make([]int64, n)
		for i := range a.I64 {
			a.I64[i] = int64(binary.LittleEndian.Uint64(data[8*i:]))
		}
	case Uint8:
		a.U8 = data
	}
	return a, nil
}

// parseNPYHeader parses the Python dict literal of a .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }.
func parseNPYHeader(h string) (*Array, error) {
	h = strings.TrimSpace(h)
	if !strings.HasPrefix(h, "{") || !strings.HasSuffix(h, "}") {
		return nil, fmt.Errorf("%w: header is not a dict", ErrNPY)
	}
	body := h[1 : len(h)-1]
	descr, ok := dictValue(body, "descr")
	if !ok {
		return nil, fmt.Errorf("%w: header has no descr", ErrNPY)
	}
	a := &Array{}
	switch strings.Trim(descr, `'"`) {
	case "<f4":
		a.DType = Float32
	case "<i8":
		a.DType = Int64
	case "|u1":
		a.DType = Uint8
	default:
		return nil, fmt.Errorf("%w: dtype %s, want '<f4', '<i8' or '|u1'", ErrNPY, descr)
	}
	fortran, ok := dictValue(body, "fortran_order")
	if !ok || fortran != "False" {
		return nil, fmt.Errorf("%w: fortran_order must be False", ErrNPY)
	}
	shape, ok := dictValue(body, "shape")
	if !ok || !strings.HasPrefix(shape, "(") || !strings.HasSuffix(shape, ")") {
		return nil, fmt.Errorf("%w: header has no shape tuple", ErrNPY)
	}
	a.Shape = []int{}
	n := 1
	for _, part := range strings.Split(shape[1:len(shape)-1], ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		d, err := strconv.Atoi(part)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%w: bad dimension %q", ErrNPY, part)
		}
		if d > 0 && n > maxNPYElements/d {
			return nil, fmt.Errorf("%w: more than %d elements", ErrNPY, maxNPYElements)
		}
		n *= d
		a.Shape = append(a.Shape, d)
	}
	return a, nil
}

// dictValue returns the literal after 'key': in a flat Python dict body. A
// tuple value extends to its closing parenthesis; any other to the next comma.
func dictValue(body, key string) (string, bool) {
	i := strings.Index(body, "'"+key+"'")
	if i < 0 {
		return "", false
	}
	rest := strings.TrimSpace(body[i+len(key)+2:])
	if !strings.HasPrefix(rest, ":") {
		return "", false
	}
	rest = strings.TrimSpace(rest[1:])
	if strings.HasPrefix(rest, "(") {
		j := strings.Index(rest, ")")
		if j < 0 {
			return "", false
		}
		return rest[:j+1], true
	}
	if j := strings.IndexAny(rest, ",}"); j >= 0 {
		rest = rest[:j]
	}
	return strings.TrimSpace(rest), true
}

// WriteNPY encodes a as a version 1.0 .npy file.
func WriteNPY(w io.Writer, a *Array) error {
	n := a.Len()
	var payload []byte
	switch a.DType {
	case Float32:
		if len(a.F32) != n {
			return fmt.Errorf("bundle: write .npy: %d float32 values for shape %v", len(a.F32), a.Shape)
		}
		payload = make([]byte, 4*n)
		for i, v := range a.F32 {
			binary.LittleEndian.PutUint32(payload[4*i:], math.Float32bits(v))
		}
	case Int64:
		if len(a.I64) != n {
			return fmt.Errorf("bundle: write .npy: %d int64 values for shape %v", len(a.I64), a.Shape)
		}
		payload = make([]byte, 8*n)
		for i, v := range a.I64 {
			binary.LittleEndian.PutUint64(payload[8*i:], uint64(v))
		}
	case Uint8:
		if len(a.U8) != n {
			return fmt.Errorf("bundle: write .npy: %d uint8 values for shape %v", len(a.U8), a.Shape)
		}
		payload = a.U8
	default:
		return fmt.Errorf("bundle: write .npy: dtype %q", a.DType)
	}
	dims := make([]string, len(a.Shape))
	for i, d := range a.Shape {
		dims[i] = strconv.Itoa(d)
	}
	shape := strings.Join(dims, ", ")
	if len(dims) == 1 {
		shape += ","
	}
	header := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", a.DType, shape)
	// Pad with spaces and a newline so the data starts at a multiple of 64.
	total := 10 + len(header) + 1
	header += strings.Repeat(" ", (64-total%64)%64) + "\n"
	var buf bytes.Buffer
	buf.WriteString("\x93NUMPY\x01\x00")
	_ = binary.Write(&buf, binary.LittleEndian, uint16(len(header)))
	buf.WriteString(header)
	buf.Write(payload)
	_, err := w.Write(buf.Bytes())
	return err
}
