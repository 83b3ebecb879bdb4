package unpack

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Release tells the kernel this process no longer needs the pages of data,
// an archive embedded in the executable (//go:embed) that has been
// unpacked: they leave the process's resident memory, and touching them
// again reads them back from the executable, whose embedded data nothing
// writes. ONLY for such data: memory the program allocated would read back
// as zeros. Best effort; only whole pages inside data are released.
func Release(data []byte) {
	if len(data) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(&data[0]))
	first := (start + page - 1) &^ (page - 1)
	last := (start + uintptr(len(data))) &^ (page - 1)
	if last <= first {
		return
	}
	pages := data[first-start : last-start]
	_ = unix.Madvise(pages, unix.MADV_DONTNEED)
}
