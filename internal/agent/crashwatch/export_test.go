package crashwatch

// do runs f on Run's goroutine and waits for it.
func (w *Watcher) do(f func()) {
	done := make(chan struct{})
	w.cmds <- func() { f(); close(done) }
	<-done
}

func (w *Watcher) pendingLen() (n int) {
	w.do(func() { n = len(w.pending) })
	return n
}

func (w *Watcher) rescanNow() { w.do(w.scan) }
