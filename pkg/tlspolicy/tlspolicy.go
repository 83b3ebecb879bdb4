// Package tlspolicy is bramble's one TLS policy, applied to every TLS
// endpoint a node serves (kube-apiserver with the join endpoints and the
// registry on its port, the kubelet) and to bramble's own TLS clients:
// TLS 1.2 or newer and, for TLS 1.2, only ECDHE key exchange with an AEAD
// cipher (AES-GCM or ChaCha20-Poly1305). TLS 1.3 has only such suites and
// does not take a list. No CBC, no SHA-1 MACs, no static RSA key exchange.
//
// Go servers prefer ChaCha20-Poly1305 on their own when either side lacks
// AES hardware, as the Raspberry Pi 3 and 4 do.
package tlspolicy

import "crypto/tls"

// MinVersion is the lowest TLS version accepted.
const MinVersion = tls.VersionTLS12

// MinVersionName is MinVersion as the Kubernetes components spell it
// (--tls-min-version, tlsMinVersion).
const MinVersionName = "VersionTLS12"

// CipherSuites are the TLS 1.2 cipher suites allowed, strongest first.
func CipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// CipherSuiteNames are CipherSuites by their IANA names, as the Kubernetes
// components take them (--tls-cipher-suites, tlsCipherSuites).
func CipherSuiteNames() []string {
	ids := CipherSuites()
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = tls.CipherSuiteName(id)
	}
	return names
}

// Apply sets the policy on c and returns it.
func Apply(c *tls.Config) *tls.Config {
	c.MinVersion = MinVersion
	c.CipherSuites = CipherSuites()
	return c
}
