package lifecycle

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
)

// ErrRegistryRead is wrapped by the error MergeRegistryChunks returns when
// the liaison could not read the schema registry at all.
var ErrRegistryRead = errors.New("liaison could not read the schema registry")

// MergeRegistryChunks merges the chunks of one schema registry round of one
// liaison (PROTOCOL.md §3.5), in the order they arrived: chunks with the
// same group name are concatenated, and a later non-empty error overwrites
// an earlier one. The done marker and chunks without a group are ignored;
// so is a chunk with an empty group name and no error.
//
// A chunk with an empty group name and an error means the whole read
// failed: MergeRegistryChunks then returns no groups and an error wrapping
// ErrRegistryRead, and the caller should ask the next liaison.
//
// The groups share nothing with chunks.
func MergeRegistryChunks(chunks []*fodcv1.StreamSchemaRegistryRequest) (map[string]*fodcv1.SchemaRegistryGroup, error) {
	groups := make(map[string]*fodcv1.SchemaRegistryGroup)
	for _, c := range chunks {
		g := c.GetGroup()
		if g == nil {
			continue
		}
		name := g.GetGroup()
		if name == "" {
			if g.GetError() != "" {
				return nil, fmt.Errorf("%w: %s", ErrRegistryRead, g.GetError())
			}
			continue
		}
		m, ok := groups[name]
		if !ok {
			m = &fodcv1.SchemaRegistryGroup{Group: name}
			groups[name] = m
		}
		for _, o := range g.GetObjects() {
			if o != nil {
				m.Objects = append(m.Objects, proto.CloneOf(o))
			}
		}
		if g.GetError() != "" {
			m.Error = g.GetError()
		}
	}
	return groups, nil
}
