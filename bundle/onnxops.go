package bundle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// ErrONNX is wrapped by GraphOps errors.
var ErrONNX = errors.New("bundle: malformed ONNX protobuf")

// GraphOps lists the operators an ONNX model's graph uses (including nested
// subgraphs), as "domain:OpType" for custom domains and "OpType" for the
// default one, with their node counts. It reads the protobuf wire format
// directly (ModelProto.graph → GraphProto.node → NodeProto.op_type/domain,
// and AttributeProto.g/graphs), so the runtime's op coverage can be checked
// without a protobuf dependency.
func GraphOps(model []byte) (map[string]int, error) {
	ops := map[string]int{}
	err := walk(model, 0, func(field int, wire int, val []byte) error {
		if field == 7 && wire == 2 { // ModelProto.graph
			return graphOps(val, ops, 0)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ops, nil
}

// SortedOps returns the keys of ops in order.
func SortedOps(ops map[string]int) []string {
	out := make([]string, 0, len(ops))
	for k := range ops {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func graphOps(graph []byte, ops map[string]int, depth int) error {
	if depth > 16 {
		return fmt.Errorf("%w: subgraphs nested deeper than 16", ErrONNX)
	}
	return walk(graph, depth, func(field, wire int, val []byte) error {
		if field != 1 || wire != 2 { // GraphProto.node
			return nil
		}
		var op, domain string
		err := walk(val, depth, func(f, w int, v []byte) error {
			switch {
			case f == 4 && w == 2:
				op = string(v)
			case f == 7 && w == 2:
				domain = string(v)
			case f == 5 && w == 2: // attribute
				return walk(v, depth, func(af, aw int, av []byte) error {
					if (af == 6 || af == 11) && aw == 2 { // AttributeProto.g, .graphs
						return graphOps(av, ops, depth+1)
					}
					return nil
				})
			}
			return nil
		})
		if err != nil {
			return err
		}
		if domain != "" && domain != "ai.onnx" {
			op = domain + ":" + op
		}
		ops[op]++
		return nil
	})
}

// walk calls fn for every field of one protobuf message.
func walk(msg []byte, depth int, fn func(field, wire int, val []byte) error) error {
	for len(msg) > 0 {
		tag, n := binary.Uvarint(msg)
		if n <= 0 {
			return fmt.Errorf("%w: bad tag", ErrONNX)
		}
		msg = msg[n:]
		field, wire := int(tag>>3), int(tag&7)
		var val []byte
		switch wire {
		case 0:
			_, n = binary.Uvarint(msg)
			if n <= 0 {
				return fmt.Errorf("%w: bad varint", ErrONNX)
			}
			msg = msg[n:]
		case 1, 5:
			size := 8
			if wire == 5 {
				size = 4
			}
			if len(msg) < size {
				return fmt.Errorf("%w: truncated fixed field", ErrONNX)
			}
			msg = msg[size:]
		case 2:
			l, n := binary.Uvarint(msg)
			if n <= 0 || l > uint64(len(msg)-n) {
				return fmt.Errorf("%w: bad length", ErrONNX)
			}
			val, msg = msg[n:n+int(l)], msg[n+int(l):]
		default:
			return fmt.Errorf("%w: wire type %d", ErrONNX, wire)
		}
		if err := fn(field, wire, val); err != nil {
			return err
		}
	}
	return nil
}
