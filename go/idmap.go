package layerdiff

/*
#include <stdlib.h>
#include "layerdiff.h"
*/
import "C"

import (
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// IDMaps maps owners between a user namespace (container IDs, in layers) and the disk (host
// IDs), in containerd's form. [Compare] writes host owners as container owners; [Apply] sets
// container owners as host owners. Empty maps leave IDs unchanged.
type IDMaps struct {
	UIDs []specs.LinuxIDMapping
	GIDs []specs.LinuxIDMapping
	// UnmappedID, when set, replaces an ID outside a non-empty map (e.g. 65534, the overflow
	// ID); nil makes such an ID an error naming the path and the ID.
	UnmappedID *uint32
}

// IsZero reports whether m maps nothing.
func (m IDMaps) IsZero() bool { return len(m.UIDs) == 0 && len(m.GIDs) == 0 }

// ParseIDMappings parses a comma-separated list of CONTAINER:HOST:SIZE, the form of
// containerd's snapshot labels and of the uidmap=/gidmap= mount options.
func ParseIDMappings(s string) ([]specs.LinuxIDMapping, error) {
	if s == "" {
		return nil, nil
	}
	var out []specs.LinuxIDMapping
	for _, one := range strings.Split(s, ",") {
		parts := strings.Split(one, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("ID mapping %q: want container-id:host-id:size", one)
		}
		var ids [3]uint32
		for i, p := range parts {
			v, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("ID mapping %q: %q is not a number from 0 to 4294967295", one, p)
			}
			ids[i] = uint32(v)
		}
		out = append(out, specs.LinuxIDMapping{ContainerID: ids[0], HostID: ids[1], Size: ids[2]})
	}
	return out, nil
}

// idMapsFromMounts reads the uidmap=/gidmap= options the overlay snapshotter puts on the
// mounts of an idmapped snapshot (with remap-ids on), as containerd#13685 proposed.
func idMapsFromMounts(mounts []mount.Mount) (IDMaps, error) {
	var m IDMaps
	for _, mnt := range mounts {
		for _, o := range mnt.Options {
			var err error
			if v, ok := strings.CutPrefix(o, "uidmap="); ok {
				m.UIDs, err = ParseIDMappings(v)
			} else if v, ok := strings.CutPrefix(o, "gidmap="); ok {
				m.GIDs, err = ParseIDMappings(v)
			}
			if err != nil {
				return IDMaps{}, fmt.Errorf("mount option %q: %w", o, err)
			}
		}
	}
	return m, nil
}

// idMapsFromLabels reads containerd's idmapped-snapshot labels
// (containerd.io/snapshot/uidmapping, .../gidmapping) from labels.
func idMapsFromLabels(labels map[string]string) (IDMaps, error) {
	var m IDMaps
	var err error
	if m.UIDs, err = ParseIDMappings(labels[snapshots.LabelSnapshotUIDMapping]); err != nil {
		return IDMaps{}, fmt.Errorf("label %s: %w", snapshots.LabelSnapshotUIDMapping, err)
	}
	if m.GIDs, err = ParseIDMappings(labels[snapshots.LabelSnapshotGIDMapping]); err != nil {
		return IDMaps{}, fmt.Errorf("label %s: %w", snapshots.LabelSnapshotGIDMapping, err)
	}
	return m, nil
}

// cIDMaps is an options struct's ID maps, their ranges in C memory (C never holds Go
// pointers).
type cIDMaps struct{ c C.layerdiff_id_maps }

func newCIDMaps(m IDMaps) (*cIDMaps, error) {
	const maxRanges = 340 // the core's limit (the kernel's for uid_map)
	if len(m.UIDs) > maxRanges || len(m.GIDs) > maxRanges {
		return nil, fmt.Errorf("layerdiff: more than %d ID map ranges", maxRanges)
	}
	c := &cIDMaps{}
	c.c.uidmap, c.c.uidmap_len = cIDMapArray(m.UIDs), C.size_t(len(m.UIDs))
	c.c.gidmap, c.c.gidmap_len = cIDMapArray(m.GIDs), C.size_t(len(m.GIDs))
	if m.UnmappedID != nil {
		c.c.unmapped, c.c.unmapped_id = C.LAYERDIFF_UNMAPPED_SUBSTITUTE, C.uint32_t(*m.UnmappedID)
	}
	return c, nil
}

func cIDMapArray(ranges []specs.LinuxIDMapping) *C.layerdiff_idmap {
	if len(ranges) == 0 {
		return nil
	}
	p := (*C.layerdiff_idmap)(C.malloc(C.size_t(len(ranges)) * C.size_t(unsafe.Sizeof(C.layerdiff_idmap{}))))
	entries := unsafe.Slice(p, len(ranges))
	for i, r := range ranges {
		entries[i] = C.layerdiff_idmap{container_id: C.uint32_t(r.ContainerID), host_id: C.uint32_t(r.HostID), size: C.uint32_t(r.Size)}
	}
	return p
}

func (c *cIDMaps) free() {
	C.free(unsafe.Pointer(c.c.uidmap))
	C.free(unsafe.Pointer(c.c.gidmap))
}

// compareIDMaps finds the ID maps of a Differ.Compare: the uidmap=/gidmap= options of the
// upper mounts (the overlay snapshotter's idmapped snapshots), else containerd's
// idmapped-snapshot labels passed in the diff labels (which are then not put on the blob).
// With options found, they are dropped from both sides' mounts, so that the temp mounts show
// the disk's IDs (which the maps describe) whatever containerd's mount code does with them
// (it idmaps the lowerdirs of an overlay and a read-write bind mount).
func compareIDMaps(lower, upper []mount.Mount, config *diffConfigLabels) (IDMaps, []mount.Mount, []mount.Mount, error) {
	m, err := idMapsFromMounts(upper)
	if err != nil {
		return IDMaps{}, nil, nil, err
	}
	if !m.IsZero() {
		return m, mount.RemoveIDMapOption(lower), mount.RemoveIDMapOption(upper), nil
	}
	if m, err = idMapsFromLabels(*config); err != nil {
		return IDMaps{}, nil, nil, err
	}
	delete(*config, snapshots.LabelSnapshotUIDMapping)
	delete(*config, snapshots.LabelSnapshotGIDMapping)
	return m, lower, upper, nil
}

// diffConfigLabels is diff.Config.Labels.
type diffConfigLabels = map[string]string
