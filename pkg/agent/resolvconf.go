package agent

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"strings"
)

// ResolvConf is the resolv.conf pods' DNS forwards to: /etc/resolv.conf, unless
// it names only loopback resolvers (systemd-resolved's 127.0.0.53 would loop
// inside a pod), then systemd-resolved's upstream file.
func ResolvConf() string {
	const host, resolved = "/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"
	data, err := os.ReadFile(host)
	if err != nil || !onlyLoopback(data) {
		return host
	}
	if _, err := os.Stat(resolved); err == nil {
		return resolved
	}
	return host
}

func onlyLoopback(resolvConf []byte) bool {
	seen := false
	sc := bufio.NewScanner(bytes.NewReader(resolvConf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			seen = true
			if ip := net.ParseIP(f[1]); ip == nil || !ip.IsLoopback() {
				return false
			}
		}
	}
	return seen
}
