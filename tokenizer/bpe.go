package tokenizer

import "sync"

// bytesToUnicode is CLIP's (and GPT-2's) reversible map from bytes to
// printable code points: printable Latin-1 bytes map to themselves, the rest
// to U+0100 onwards in byte order.
func bytesToUnicode() [256]rune {
	var table [256]rune
	var printable [256]bool
	for b := '!'; b <= '~'; b++ {
		printable[b] = true
	}
	for b := '¡'; b <= '¬'; b++ {
		printable[b] = true
	}
	for b := '®'; b <= 'ÿ'; b++ {
		printable[b] = true
	}
	n := rune(0)
	for b := 0; b < 256; b++ {
		if printable[b] {
			table[b] = rune(b)
		} else {
			table[b] = 256 + n
			n++
		}
	}
	return table
}

// byteOrder lists the bytes in CLIP's vocabulary order: the printable ones
// first (in byte order), then the others (in byte order).
func byteOrder() [256]byte {
	table := bytesToUnicode()
	var order [256]byte
	k := 0
	for pass := 0; pass < 2; pass++ {
		for b := 0; b < 256; b++ {
			if (table[b] == rune(b)) == (pass == 0) {
				order[k] = byte(b)
				k++
			}
		}
	}
	return order
}

// merge is one BPE rule: the pair's rank is its index in merges.
type merge struct {
	rank int32
	out  int32 // id of the merged token
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// bpeNode is one symbol of a word being merged, in a doubly linked list.
type bpeNode struct {
	id         int32
	prev, next int32 // -1 at the ends
	alive      bool
}

// bpeCand is a candidate merge of the symbol at pos with its successor.
type bpeCand struct {
	rank int32
	pos  int32
}

func candLess(a, b bpeCand) bool {
	return a.rank < b.rank || a.rank == b.rank && a.pos < b.pos
}

// candHeap is a binary min-heap ordered by (rank, position).
type candHeap []bpeCand

func (h *candHeap) push(c bpeCand) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !candLess(s[i], s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *candHeap) pop() bpeCand {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && candLess(s[l], s[m]) {
			m = l
		}
		if r < len(s) && candLess(s[r], s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// bpe merges the byte symbols of one pre-tokenised piece into vocabulary ids
// with exactly the result of CLIP's bpe(): repeatedly take the lowest-ranked
// pair present and merge all its occurrences left to right. A heap of
// candidates ordered by (rank, position) makes that O(n log n) instead of
// CLIP's O(n²) rescans; pairs created while one rank is being merged wait
// until that rank is done, as they would in CLIP's loop.
func (t *Tokenizer) bpe(piece string, dst []int32) []int32 {
	n := len(piece)
	if n == 1 {
		return append(dst, t.byteEOW[piece[0]])
	}
	nodes := make([]bpeNode, n)
	for i := 0; i < n; i++ {
		nodes[i] = bpeNode{id: t.byteID[piece[i]], prev: int32(i - 1), next: int32(i + 1), alive: true}
	}
	nodes[n-1].id = t.byteEOW[piece[n-1]]
	nodes[n-1].next = -1
	h := make(candHeap, 0, n)
	for i := 0; i < n-1; i++ {
		if m, ok := t.merges[pairKey(nodes[i].id, nodes[i+1].id)]; ok {
			h = append(h, bpeCand{m.rank, int32(i)})
		}
	}
	// heapify
	for i := len(h)/2 - 1; i >= 0; i-- {
		for j := i; ; {
			l, r, m := 2*j+1, 2*j+2, j
			if l < len(h) && candLess(h[l], h[m]) {
				m = l
			}
			if r < len(h) && candLess(h[r], h[m]) {
				m = r
			}
			if m == j {
				break
			}
			h[j], h[m] = h[m], h[j]
			j = m
		}
	}
	var pending []bpeCand
	cur := int32(-1)
	for {
		if len(pending) > 0 && (len(h) == 0 || h[0].rank != cur) {
			for _, c := range pending {
				h.push(c)
			}
			pending = pending[:0]
		}
		if len(h) == 0 {
			break
		}
		c := h.pop()
		a := &nodes[c.pos]
		if !a.alive || a.next < 0 {
			continue
		}
		b := &nodes[a.next]
		if t.mergeA[c.rank] != a.id || t.mergeB[c.rank] != b.id {
			continue // stale: one side has merged since
		}
		cur = c.rank
		a.id = t.mergeOut[c.rank]
		b.alive = false
		a.next = b.next
		if b.next >= 0 {
			nodes[b.next].prev = c.pos
		}
		if a.prev >= 0 {
			if m, ok := t.merges[pairKey(nodes[a.prev].id, a.id)]; ok {
				pending = append(pending, bpeCand{m.rank, a.prev})
			}
		}
		if a.next >= 0 {
			if m, ok := t.merges[pairKey(a.id, nodes[a.next].id)]; ok {
				pending = append(pending, bpeCand{m.rank, c.pos})
			}
		}
	}
	for i := int32(0); i >= 0; i = nodes[i].next {
		dst = append(dst, nodes[i].id)
	}
	return dst
}

// pieceCache is a bounded, concurrency-safe cache of piece -> ids with two
// generations: when the current one fills, it becomes the old one and the
// previous old one is dropped, so memory stays under 2*cacheEntries pieces of
// at most cachePieceBytes each.
type pieceCache struct {
	mu       sync.Mutex
	cur, old map[string][]int32
}

const (
	cacheEntries    = 8192
	cachePieceBytes = 64
)

func (c *pieceCache) get(piece string) ([]int32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ids, ok := c.cur[piece]; ok {
		return ids, true
	}
	if ids, ok := c.old[piece]; ok {
		c.putLocked(piece, ids)
		return ids, true
	}
	return nil, false
}

func (c *pieceCache) put(piece string, ids []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(piece, ids)
}

func (c *pieceCache) putLocked(piece string, ids []int32) {
	if c.cur == nil {
		c.cur = make(map[string][]int32)
	}
	if len(c.cur) >= cacheEntries {
		c.old, c.cur = c.cur, make(map[string][]int32, cacheEntries)
	}
	c.cur[piece] = ids
}
