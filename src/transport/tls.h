/*
 * TLS 1.3 over any connection with a socket (GnuTLS). A vmig_tls holds one
 * side's credentials, loaded once per run; each connection then runs its
 * own handshake and comes back as a vmig_conn whose readv/writev move
 * records (or, with kernel TLS, plain socket calls the kernel encrypts).
 *
 * Modes:
 *   x509  mutual certificate authentication. The credentials directory
 *         holds ca-cert.pem (the CA both sides trust; ca-crl.pem optional),
 *         server-cert.pem + server-key.pem (the destination's) and
 *         client-cert.pem + client-key.pem (the source's), QEMU's layout.
 *         The client checks the server's certificate against the host name
 *         it dialled (or tls-hostname); the server requires a client
 *         certificate from the CA, and with tls-authz one naming that name.
 *   psk   a pre-shared key: the directory holds keys.psk, lines
 *         "identity:hexkey"; the client uses the first line (or the line of
 *         tls-psk-identity), the server accepts any identity listed.
 *         Key exchange is (EC)DHE-PSK, so past sessions stay secret when the
 *         key leaks later.
 *
 * The server confirms every handshake with one byte before the protocol's
 * own handshake goes out, so that a refused client certificate (TLS 1.3
 * checks it after the client thinks it is done) fails the connection on
 * both sides at connect time, with the TLS alert's name in the message.
 */
#ifndef VMIG_TLS_H
#define VMIG_TLS_H

#include "transport.h"

typedef struct vmig_tls_config {
    uint32_t mode;            /* enum vmig_tls_mode (vmig.h), not OFF */
    const char *creds;        /* the credentials directory */
    const char *authz;        /* server, x509: name the client's certificate must carry; "" any */
    const char *psk_identity; /* client, psk: identity to use; "" the file's first */
    const char *priority;     /* GnuTLS priority string; "" the built-in TLS 1.3 one */
    uint32_t ktls;            /* enum vmig_tls_ktls_mode */
    bool gnutls_records;      /* GnuTLS's record layer even where vmig's would do (tests) */
    uint64_t rekey_after;     /* vmig's records: records per key before a KeyUpdate; 0 default */
} vmig_tls_config;

typedef struct vmig_tls vmig_tls;

/* True when the build has GnuTLS. */
bool vmig_tls_built(void);

/* Loads the credentials of one side (server: the destination). Errors name
 * the file and what is wrong with it. */
int vmig_tls_create(vmig_tls **out, const vmig_tls_config *cfg, bool server, vmig_error *err);
void vmig_tls_free(vmig_tls *t);

/* Server: whether the client's first bytes (waited for up to timeout_ms)
 * are not a TLS handshake record, i.e. a source that does not speak TLS. */
bool vmig_tls_peer_is_plain(int fd, int timeout_ms);

/*
 * Runs the handshake on raw, within timeout_ms, and on success replaces
 * *c by the protected connection (which owns raw). On failure *c is left as
 * it is (the caller closes it) and err says why, with the peer's address.
 * hostname (client, x509): the name to find in the server's certificate, a
 * DNS name or an IP address.
 */
int vmig_tls_handshake(vmig_tls *t, vmig_conn **c, const char *hostname, int timeout_ms,
                       vmig_error *err);

/* Sends a TLS 1.3 KeyUpdate with the next write (vmig's records) or now
 * (GnuTLS's); request: ask the peer to update its key too. For tests of
 * both record layers against each other. -EINVAL for other connections. */
int vmig_tls_key_update(vmig_conn *c, bool request);

/* What a protected connection negotiated: "TLS1.3 x509 AES-128-GCM", and
 * whether the kernel does its record layer (both directions). False and ""
 * for other connections. */
bool vmig_conn_tls_info(const vmig_conn *c, char *desc, size_t len, bool *ktls);

/* Why kernel TLS is not in use on this machine, for reports: the kernel
 * has no tls module, or GnuTLS leaves it off (its system configuration). */
void vmig_tls_ktls_why_not(char *buf, size_t len);

/* The host part of a tcp URI ("tcp:[::1]:5000" -> "::1"); false for other
 * schemes or when it is empty (a listener's "every address"). */
bool vmig_uri_host(const char *uri, char *host, size_t len);

#endif /* VMIG_TLS_H */
