package recorder
import "testing"
func TestTmpNoJitter(t *testing.T) {
	for _, j := range []int64{0, 1} {
		jitterScale = j
		w := newWorkload(720, 1)
		r, _ := New(Options{BudgetBytes: 1 << 30})
		for i := range 720 { w.load(i); r.Append("data", w.ts[i], w.fams) }
		st := r.Stats()
		t.Logf("jitter=%d bytes/sample=%.3f encoded=%.3f", j, float64(st.Bytes)/float64(st.Samples), float64(r.encodedBytes())/float64(st.Samples))
	}
}
