package layerdiff

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// aufsDirs returns the rw branch and the ro branches (top first) of aufs mount options, as
// containerd 1.x's getAufsPath parsed the options its aufs snapshotter wrote:
// "br:<rw>=rw[:<ro>=ro+wh]*". Every br: option is read; more than one rw branch, a ro branch
// before the rw one, any other suffix, or no rw branch is InvalidArgument.
func aufsDirs(options []string) (rw string, ro []string, err error) {
	for _, o := range options {
		branches, ok := strings.CutPrefix(o, "br:")
		if !ok {
			continue
		}
		for _, b := range strings.Split(branches, ":") {
			if dir, ok := strings.CutSuffix(b, "=rw"); ok {
				// Tested on the result so far, as containerd does: an empty rw dir counts as none.
				if rw != "" {
					return "", nil, fmt.Errorf("multiple rw branch found: %w", errdefs.ErrInvalidArgument)
				}
				rw = dir
			} else if dir, ok := strings.CutSuffix(b, "=ro+wh"); ok {
				if rw == "" {
					return "", nil, fmt.Errorf("rw branch be first: %w", errdefs.ErrInvalidArgument)
				}
				ro = append(ro, dir)
			} else {
				return "", nil, fmt.Errorf("unhandled aufs suffix: %w", errdefs.ErrInvalidArgument)
			}
		}
	}
	if rw == "" {
		return "", nil, fmt.Errorf("rw branch not found: %w", errdefs.ErrInvalidArgument)
	}
	return rw, ro, nil
}
