package restore

import (
	"fmt"
	"strconv"
	"strings"
)

// warnings gathers a restore's warnings and hands them over as lines,
// those of one kind that repeat for many pipes as one line: the first,
// then how many more and which.
type warnings struct {
	out   func(string)
	kinds []*warnKind
	index map[string]*warnKind
}

type warnKind struct {
	first  string
	others []string // the first few pipes of the others
	n      int      // warnings of this kind
}

// shown is how many pipes or buffers a summary names.
const shown = 3

func (w *warnings) add(kind, pipe, msg string) {
	if w.out == nil {
		return
	}
	k := w.index[kind]
	if k == nil {
		if w.index == nil {
			w.index = map[string]*warnKind{}
		}
		k = &warnKind{first: msg}
		w.index[kind] = k
		w.kinds = append(w.kinds, k)
	} else if len(k.others) < shown {
		k.others = append(k.others, pipe)
	}
	k.n++
}

// flush hands the warnings over, in the order their kinds first came.
func (w *warnings) flush() {
	for _, k := range w.kinds {
		msg := k.first
		if more := k.n - 1; more > 0 {
			list := strings.Join(k.others, ", ")
			if more > len(k.others) {
				list += fmt.Sprintf(" and %d more", more-len(k.others))
			}
			msg += fmt.Sprintf(" (the same for %d more %s: %s)", more, plural(more, "pipe", "pipes"), list)
		}
		w.out(msg)
	}
	w.kinds, w.index = nil, nil
}

// firstFew names a few of many: "buffers 5, 6, 7 and 997 more".
func firstFew(nums []uint32, one, many string) string {
	if len(nums) == 1 {
		return one + " " + strconv.FormatUint(uint64(nums[0]), 10)
	}
	s := make([]string, 0, shown)
	for _, n := range nums[:min(len(nums), shown)] {
		s = append(s, strconv.FormatUint(uint64(n), 10))
	}
	list := strings.Join(s, ", ")
	if len(nums) > shown {
		list += fmt.Sprintf(" and %d more", len(nums)-shown)
	}
	return many + " " + list
}
