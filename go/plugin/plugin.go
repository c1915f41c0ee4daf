// Package plugin registers the layerdiff differ as a containerd diff plugin with ID
// "layerdiff". Enable it in a containerd build with a blank import of this package and
// `default = ["layerdiff"]` in the diff service's configuration.
package plugin

import (
	"errors"

	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/platforms"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	layerdiff "github.com/layerdiff/layerdiff/go"
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
			return layerdiff.NewDiffer(cs, layerdiff.WithMountManager(mm)), nil
		},
	})
}
