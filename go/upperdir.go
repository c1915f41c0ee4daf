package layerdiff

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
)

// UpperdirCompareEnv, set to "0", turns off the upperdir fast path of [Differ.Compare] for
// every Differ (as [WithUpperdirCompare](false) does for one).
const UpperdirCompareEnv = "LAYERDIFF_UPPERDIR_COMPARE"

// WithUpperdirCompare turns the fast path of [Differ.Compare] on overlayfs snapshotter
// mounts on (the default) or off. On, an upper that is one overlay mount over the lower's
// layers is compared by reading its upperdir ([CompareUpperdir]); anything else, or an
// upperdir the core cannot represent exactly, takes the double walk.
func WithUpperdirCompare(enabled bool) DifferOpt {
	return func(d *Differ) { d.noUpperdir = !enabled }
}

// overlayUpper is what the fast path needs of recognised overlayfs snapshotter mounts.
type overlayUpper struct {
	upperdir string
	xattrs   OverlayXattrs
}

// upperdirCompareHook, when set (by tests), is told whether Differ.Compare took the upperdir
// path and, if not, why.
var upperdirCompareHook func(fastPath bool, reason string)

func upperdirDisabledByEnv() bool {
	return os.Getenv(UpperdirCompareEnv) == "0"
}

// overlayLayers parses an overlay mount as BuildKit's GetOverlayLayers does: the lowerdir
// stack bottom first, the upperdir ("" if none), and whether userxattr is set. Only options
// whose meaning for the merged view is known are accepted.
func overlayLayers(m mount.Mount) (lowers []string, upperdir string, userxattr bool, err error) {
	for _, o := range m.Options {
		key, value, _ := strings.Cut(o, "=")
		switch {
		case key == "lowerdir":
			lowers = strings.Split(value, ":")
			slices.Reverse(lowers)
		case key == "upperdir":
			upperdir = value
		// redirect_dir=off and metacopy=off spelled out mean the kernel's default here: the
		// upperdir holds no redirects or metacopy files the walk would have to follow (and
		// the core refuses either xattr if one is there anyway).
		case key == "workdir", o == "ro", o == "rw", o == "index=off", o == "redirect_dir=off", o == "metacopy=off":
		case o == "userxattr":
			userxattr = true
		default:
			return nil, "", false, fmt.Errorf("overlay mount option %q", o)
		}
	}
	if len(lowers) == 0 || slices.Contains(lowers, "") {
		return nil, "", false, fmt.Errorf("overlay mount without a lowerdir")
	}
	return lowers, upperdir, userxattr, nil
}

// recogniseOverlayUpper finds the upperdir of upper when upper is one overlay mount whose
// lowerdir stack is exactly the lower view's, as BuildKit's GetUpperdir does: lower is a
// single bind mount of the one lowerdir, or a read-only overlay of the same lowerdirs (and
// the same xattr namespace, so both merge the layers alike). The error says why not.
func recogniseOverlayUpper(lower, upper []mount.Mount) (overlayUpper, error) {
	if len(upper) != 1 || upper[0].Type != "overlay" {
		return overlayUpper{}, fmt.Errorf("upper is not one overlay mount")
	}
	upperLowers, upperdir, userxattr, err := overlayLayers(upper[0])
	if err != nil {
		return overlayUpper{}, fmt.Errorf("upper: %w", err)
	}
	if upperdir == "" {
		return overlayUpper{}, fmt.Errorf("upper overlay has no upperdir")
	}
	if len(lower) != 1 {
		return overlayUpper{}, fmt.Errorf("lower is %d mounts, not one", len(lower))
	}
	var lowerLayers []string
	switch l := lower[0]; l.Type {
	case "bind":
		for _, o := range l.Options {
			if o != "ro" && o != "rw" && o != "bind" && o != "rbind" {
				return overlayUpper{}, fmt.Errorf("lower bind mount option %q", o)
			}
		}
		lowerLayers = []string{l.Source}
	case "overlay":
		layers, dir, lowerUserxattr, err := overlayLayers(l)
		if err != nil {
			return overlayUpper{}, fmt.Errorf("lower: %w", err)
		}
		if dir != "" {
			return overlayUpper{}, fmt.Errorf("lower overlay has an upperdir")
		}
		if lowerUserxattr != userxattr {
			return overlayUpper{}, fmt.Errorf("lower and upper overlays differ in userxattr")
		}
		lowerLayers = layers
	default:
		return overlayUpper{}, fmt.Errorf("lower mount type %q", l.Type)
	}
	if !slices.Equal(lowerLayers, upperLowers) {
		return overlayUpper{}, fmt.Errorf("upper's lowerdir stack %q is not the lower's %q", upperLowers, lowerLayers)
	}
	xattrs := OverlayXattrsTrusted
	if userxattr {
		xattrs = OverlayXattrsUser
	}
	return overlayUpper{upperdir: upperdir, xattrs: xattrs}, nil
}
