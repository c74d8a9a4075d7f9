package schemafp

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protowire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Identity fields of the metadata do not change the hash; anything else
// does.
func TestIdentityFieldsIgnored(t *testing.T) {
	md := func(id, rev uint64, name string) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, "g")
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, name)
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, id)
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, rev)
		var msg []byte
		msg = protowire.AppendTag(msg, 1, protowire.BytesType)
		msg = protowire.AppendBytes(msg, b)
		msg = protowire.AppendTag(msg, 2, protowire.VarintType)
		return protowire.AppendVarint(msg, 2)
	}
	a, err := Fingerprint(md(1, 100, "x"), nil)
	require.NoError(t, err)
	b, err := Fingerprint(md(7, 900, "x"), nil)
	require.NoError(t, err)
	c, err := Fingerprint(md(1, 100, "y"), nil)
	require.NoError(t, err)
	require.Equal(t, a, b)
	require.NotEqual(t, a, c)
	// Rules are ordered by group/name and de-duplicated.
	r1, r2 := md(1, 1, "r1"), md(1, 1, "r2")
	f1, err := Fingerprint(md(1, 1, "s"), [][]byte{r1, r2})
	require.NoError(t, err)
	f2, err := Fingerprint(md(1, 1, "s"), [][]byte{r2, r1, r2})
	require.NoError(t, err)
	require.Equal(t, f1, f2)
	_, err = Base([]byte{0xff})
	require.Error(t, err)
	// A metadata field whose own bytes are malformed is an error too.
	bad := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0x1a, 0x05, 'x'})
	_, err = Base(bad)
	require.ErrorContains(t, err, "metadata:")
	_, err = Parse(bad[:len(bad)-1])
	require.Error(t, err, "a truncated field")
	f, err := Parse(md(3, 4, "z"))
	require.NoError(t, err)
	require.Equal(t, uint64(2), f.Varints[2])
	require.Len(t, f.Repeated[1], 1)
}
