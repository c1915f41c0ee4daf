// Package plugin registers the layerdiff differ as a containerd diff plugin with ID
// "layerdiff". Enable it in a containerd build with a blank import of this package, then name
// it in the diff service's order (`default = ['layerdiff', 'walking']`) and in the transfer
// service's unpack_config (`differ = 'layerdiff'`); see the README for the whole config.
//
// It logs once at info level when it loads, each apply and compare at debug level, and counts
// them in containerd_layerdiff_applies_total / containerd_layerdiff_compares_total on
// containerd's metrics endpoint. A layer it cannot apply goes to containerd's own applier
// (see internal/daemondiffer).
package plugin

import (
	"errors"

	"github.com/containerd/containerd/v2/core/diff/apply"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	"github.com/containerd/platforms"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	layerdiff "github.com/layerdiff/layerdiff/go"
	"github.com/layerdiff/layerdiff/go/internal/daemondiffer"
)

// ID is the plugin's ID, as named in the diff service's `default` list.
const ID = "layerdiff"

func init() {
	registry.Register(&plugin.Registration{
		Type: plugins.DiffPlugin,
		ID:   ID,
		Requires: []plugin.Type{
			plugins.MetadataPlugin,
			plugins.MountManagerPlugin,
		},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			md, err := ic.GetSingle(plugins.MetadataPlugin)
			if err != nil {
				return nil, err
			}
			// The mount manager is optional, as for the walking differ.
			var mm mount.Manager
			if m, err := ic.GetSingle(plugins.MountManagerPlugin); err == nil {
				mm = m.(mount.Manager)
			} else if !errors.Is(err, plugin.ErrPluginNotFound) {
				return nil, err
			}
			ic.Meta.Platforms = append(ic.Meta.Platforms, platforms.DefaultSpec())
			ic.Meta.Exports["version"] = layerdiff.Version()
			cs := md.(*metadata.DB).ContentStore()
			log.G(ic.Context).WithField("version", layerdiff.Version()).Info("layerdiff differ active")
			return daemondiffer.New(layerdiff.NewDiffer(cs, layerdiff.WithMountManager(mm)),
				apply.NewFileSystemApplierWithMountManager(cs, mm)), nil
		},
	})
}
