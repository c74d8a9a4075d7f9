package decode

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTableInterns holds the reply's string table to a map: every length
// (the short-string hash reads 1, 2, 4 and 8-byte windows), strings that
// differ in one byte anywhere, growth well past the first table size, and
// invalid UTF-8 refused only when new.
func TestTableInterns(t *testing.T) {
	var tab table
	tab.reset()
	want := map[string]uint32{"": 0}
	check := func(s string) {
		id, err := tab.intern(s)
		require.NoError(t, err)
		if prev, ok := want[s]; ok {
			require.Equal(t, prev, id, "%q", s)
		} else {
			want[s] = id
		}
		require.Equal(t, s, tab.strs[id])
	}
	for n := 1; n <= 40; n++ {
		base := strings.Repeat("a", n)
		check(base)
		for i := range n {
			b := []byte(base)
			b[i] = 'b'
			check(string(b))
		}
	}
	for i := range 20000 {
		check(fmt.Sprintf("value-%d", i))
		check(fmt.Sprintf("value-%d", i/2))
	}
	require.Len(t, tab.strs, len(want))
	for s, id := range want {
		got, err := tab.intern(s)
		require.NoError(t, err)
		require.Equal(t, id, got)
	}
	_, err := tab.intern("bad\xff")
	require.ErrorIs(t, err, errInvalidUTF8)
	tab.reset()
	require.Equal(t, []string{""}, tab.strs)
	id, err := tab.intern("value-1")
	require.NoError(t, err)
	require.EqualValues(t, 1, id)
}
