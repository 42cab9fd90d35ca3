/*
 * Byte pipes behind one ops table. A transport (tcp, unix; tls later)
 * knows how to listen and connect; a connection knows how to move bytes.
 *
 *   URI            transport   address part
 *   tcp:HOST:PORT  tcp         "HOST:PORT", HOST may be [IPv6]; empty HOST
 *                              listens on every address
 *   unix:PATH      unix        "PATH" (at most 107 bytes)
 */
#ifndef VMIG_TRANSPORT_H
#define VMIG_TRANSPORT_H

#include <sys/types.h>
#include <sys/uio.h>

#include "../base/base.h"

typedef struct vmig_conn vmig_conn;
typedef struct vmig_listener vmig_listener;

/*
 * Connection hooks. readv/writev move at least one byte or report: they
 * return the bytes moved, 0 for end of stream (readv only), or -errno.
 * One thread reads and one thread writes a connection at a time.
 * shutdown() may be called from any thread at any time: it makes every
 * blocked and later readv/writev return promptly. close() frees; it is
 * called once, by the owner, after every user of the connection is done.
 */
typedef struct vmig_conn_ops {
    ssize_t (*readv)(vmig_conn *c, const struct iovec *iov, int iovcnt);
    ssize_t (*writev)(vmig_conn *c, const struct iovec *iov, int iovcnt);
    /* Wait until readv would not block: 1 ready, 0 timed out, -errno. */
    int (*wait_readable)(vmig_conn *c, int timeout_ms);
    void (*shutdown)(vmig_conn *c);
    void (*close)(vmig_conn *c);
} vmig_conn_ops;

struct vmig_conn {
    const vmig_conn_ops *ops;
    int fd;         /* the socket, for transports that have one; else -1 */
    char peer[256]; /* printable peer address, for messages */
    char why[192];  /* a transport's own words for its last -EPROTO (TLS), or "" */
};

typedef struct vmig_listener_ops {
    /* Wait up to timeout_ms (< 0: forever) for a connection. Gives up early
     * with VMIG_ECANCELED when *abort becomes non-zero (polled every 50 ms). */
    int (*accept)(vmig_listener *l, int timeout_ms, const int *abort, vmig_conn **out,
                  vmig_error *err);
    /* The URI actually bound, with the real port. */
    void (*uri)(vmig_listener *l, char *buf, size_t len);
    void (*close)(vmig_listener *l);
} vmig_listener_ops;

struct vmig_listener {
    const vmig_listener_ops *ops;
};

typedef struct vmig_transport_ops {
    const char *scheme; /* "tcp", "unix" */
    int (*listen)(const char *addr, vmig_listener **out, vmig_error *err);
    int (*connect)(const char *addr, int timeout_ms, vmig_conn **out, vmig_error *err);
} vmig_transport_ops;

extern const vmig_transport_ops vmig_transport_tcp;
extern const vmig_transport_ops vmig_transport_unix;

/* Parse "scheme:rest" against the registry; *addr points into uri. */
int vmig_transport_lookup(const char *uri, const vmig_transport_ops **ops, const char **addr,
                          vmig_error *err);

int vmig_listen(const char *uri, vmig_listener **out, vmig_error *err);
int vmig_connect(const char *uri, int timeout_ms, vmig_conn **out, vmig_error *err);

/* Move every byte of iov (the array is not modified), or fail:
 * VMIG_ECONN for a closed or reset peer, VMIG_EIO otherwise. `what`
 * names the message for the error sentence. */
int vmig_conn_write_full(vmig_conn *c, const struct iovec *iov, int iovcnt, const char *what,
                         vmig_error *err);
int vmig_conn_read_full(vmig_conn *c, const struct iovec *iov, int iovcnt, const char *what,
                        vmig_error *err);
int vmig_conn_write_all(vmig_conn *c, const void *buf, size_t len, const char *what,
                        vmig_error *err);
int vmig_conn_read_all(vmig_conn *c, void *buf, size_t len, const char *what, vmig_error *err);

/* The peer is on this host: a unix socket, or tcp to 127.0.0.0/8 or ::1
 * (also as ::ffff:127.x). A namespace's veth address is not local. */
bool vmig_conn_is_local(const vmig_conn *c);

/* TCP's own account of the connection so far (tcp_info, Linux 4.10+):
 * microseconds it had data in flight, and of those, the time the peer's
 * receive window held it back (the receiver did not keep up). VMIG_ENOTSUP
 * when the connection is not TCP or the kernel does not report it. */
int vmig_conn_tcp_limits(const vmig_conn *c, uint64_t *busy_us, uint64_t *rwnd_us);

static inline void vmig_conn_shutdown(vmig_conn *c)
{
    if (c)
        c->ops->shutdown(c);
}
/* TCP only (a no-op on other sockets): keepalive probes after idle_ms
 * (at least 1 s) of silence, one a second, 5 unanswered end the connection
 * (reads and writes fail with ETIMEDOUT), and data left unacknowledged for
 * idle_ms + 5 s too (TCP_USER_TIMEOUT). A peer whose host died or whose link
 * stays down is noticed idle_ms + 5 s after its last packet; a live peer's
 * kernel answers the probes, however long it stays silent. */
void vmig_conn_keepalive(vmig_conn *c, uint32_t idle_ms);

static inline void vmig_conn_close(vmig_conn *c)
{
    if (c)
        c->ops->close(c);
}
static inline void vmig_listener_close(vmig_listener *l)
{
    if (l)
        l->ops->close(l);
}

#endif /* VMIG_TRANSPORT_H */
