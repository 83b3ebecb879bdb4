package main

import (
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"fmt"
	"iter"
	"os"
	"sort"
	"strings"

	"github.com/bramble-pi/bramble/pkg/procmaps"
)

// residentBinary says which parts of a process's executable are resident:
// MiB by ELF section, and the packages whose code has the most resident
// pages (from the page map and the binary's pclntab). The kernel maps up
// to 64 KiB around each page fault of a file mapping, so scattered use of
// a large binary is counted in whole runs of pages.
func residentBinary(pid int, top int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return err.Error()
	}
	present, err := presentPages(pid, exe)
	if err != nil {
		return err.Error()
	}
	f, err := elf.Open(exe)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	page := uint64(os.Getpagesize())
	var b strings.Builder
	b.WriteString("  resident by section:")
	for _, s := range f.Sections {
		if s.Addr == 0 || s.Type == elf.SHT_NOBITS || s.Size < 1<<20 {
			continue
		}
		n := 0
		for a := s.Addr &^ (page - 1); a < s.Addr+s.Size; a += page {
			if present[a] {
				n++
			}
		}
		fmt.Fprintf(&b, " %s %.1f/%.0f MiB", s.Name, float64(n)*float64(page)/(1<<20), float64(s.Size)/(1<<20))
	}
	b.WriteString("\n")
	text, pcln := f.Section(".text"), f.Section(".gopclntab")
	if text == nil || pcln == nil {
		return b.String()
	}
	data, err := pcln.Data()
	if err != nil {
		return b.String()
	}
	table, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		return b.String() + "  pclntab: " + err.Error() + "\n"
	}
	byPkg := map[string]uint64{}
	for _, fn := range table.Funcs {
		for a := fn.Entry &^ (page - 1); a < fn.End; a += page {
			if !present[a] {
				continue
			}
			lo, hi := max(a, fn.Entry), min(a+page, fn.End)
			byPkg[pkgGroup(fn.PackageName())] += hi - lo
		}
	}
	type kv struct {
		k string
		v uint64
	}
	var list []kv
	var sum uint64
	for k, v := range byPkg {
		list = append(list, kv{k, v})
		sum += v
	}
	sort.Slice(list, func(i, j int) bool { return list[i].v > list[j].v })
	fmt.Fprintf(&b, "  resident code by package group (%.1f MiB in functions):", float64(sum)/(1<<20))
	for i, e := range list {
		if i == top {
			break
		}
		fmt.Fprintf(&b, " %s %.1f", e.k, float64(e.v)/(1<<20))
	}
	b.WriteString("\n")
	return b.String()
}

// pkgGroup shortens a package path to the part that says who brought it.
func pkgGroup(p string) string {
	parts := strings.Split(p, "/")
	n := 3
	switch {
	case strings.HasPrefix(p, "k8s.io/kubernetes/"):
		n = 4
	case strings.HasPrefix(p, "k8s.io/"), !strings.Contains(parts[0], "."):
		n = 2
	}
	if len(parts) > n {
		parts = parts[:n]
	}
	return strings.Join(parts, "/")
}

// presentPages reads which pages of the mappings of exe are present.
func presentPages(pid int, exe string) (map[uint64]bool, error) {
	maps, err := procmaps.Read(pid)
	if err != nil {
		return nil, err
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()
	present := map[uint64]bool{}
	for _, m := range maps {
		if m.Path != exe {
			continue
		}
		for addr, entry := range pageEntries(pm, m) {
			if entry&(1<<63) != 0 {
				present[addr] = true
			}
		}
	}
	return present, nil
}

// pageEntries yields the page map entry (pagemap(5)) of each page of m
// that could be read, by page address.
func pageEntries(pm *os.File, m procmaps.Mapping) iter.Seq2[uint64, uint64] {
	return func(yield func(uint64, uint64) bool) {
		page := uint64(os.Getpagesize())
		buf := make([]byte, (m.End-m.Start)/page*8)
		n, _ := pm.ReadAt(buf, int64(m.Start/page*8))
		for i := 0; i+8 <= n; i += 8 {
			if !yield(m.Start+uint64(i/8)*page, binary.LittleEndian.Uint64(buf[i:])) {
				return
			}
		}
	}
}
