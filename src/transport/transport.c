/* The transport registry and the full-transfer loops shared by every transport. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_busy_time (glibc's is older) */
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "transport.h"

static const vmig_transport_ops *const transports[] = {
    &vmig_transport_tcp,
    &vmig_transport_unix,
};

int vmig_transport_lookup(const char *uri, const vmig_transport_ops **ops, const char **addr,
                          vmig_error *err)
{
    const char *colon = uri ? strchr(uri, ':') : NULL;
    if (!colon)
        return vmig_error_set(err, VMIG_EINVAL,
                              "URI '%s' has no scheme: expected tcp:HOST:PORT or unix:PATH",
                              uri ? uri : "(null)");
    size_t n = (size_t)(colon - uri);
    for (size_t i = 0; i < VMIG_ARRAY_SIZE(transports); i++) {
        if (strlen(transports[i]->scheme) == n && !memcmp(uri, transports[i]->scheme, n)) {
            *ops = transports[i];
            *addr = colon + 1;
            return 0;
        }
    }
    return vmig_error_set(err, VMIG_EINVAL, "URI '%s': unknown scheme '%.*s' (known: tcp, unix)",
                          uri, (int)n, uri);
}

int vmig_listen(const char *uri, vmig_listener **out, vmig_error *err)
{
    const vmig_transport_ops *ops;
    const char *addr;
    int rc = vmig_transport_lookup(uri, &ops, &addr, err);
    return rc ? rc : ops->listen(addr, out, err);
}

int vmig_connect(const char *uri, int timeout_ms, vmig_conn **out, vmig_error *err)
{
    const vmig_transport_ops *ops;
    const char *addr;
    int rc = vmig_transport_lookup(uri, &ops, &addr, err);
    return rc ? rc : ops->connect(addr, timeout_ms, out, err);
}

void vmig_conn_keepalive(vmig_conn *c, uint32_t idle_ms)
{
    int domain = 0;
    socklen_t len = sizeof(domain);
    if (c->fd < 0 || getsockopt(c->fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) ||
        (domain != AF_INET && domain != AF_INET6))
        return;
    int one = 1, idle = (int)VMIG_MAX(idle_ms / 1000, 1u), intvl = 1, cnt = 5;
    setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    /* With data unacknowledged keepalive does not probe: the same bound
     * for the retransmissions (and it caps the probes' time too). */
    unsigned user = idle_ms + (unsigned)cnt * 1000u;
    setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, sizeof(user));
}

static int io_error(vmig_conn *c, ssize_t r, bool reading, const char *what, vmig_error *err)
{
    if (r == 0)
        return vmig_error_set(err, VMIG_ECONN, "%s: connection closed by %s while reading %s",
                              c->peer, c->peer, what);
    int e = (int)-r;
    if (e == EAGAIN || e == EWOULDBLOCK)
        return vmig_error_set(err, VMIG_ETIMEDOUT, "%s: timed out %s %s", c->peer,
                              reading ? "reading" : "writing", what);
    if (e == ETIMEDOUT) /* keepalive: the peer's host or the link is gone */
        return vmig_error_set(err, VMIG_ETIMEDOUT,
                              "%s: %s %s: the peer stopped answering (no reply to TCP keepalive "
                              "probes: its host or the link is down)",
                              c->peer, reading ? "reading" : "writing", what);
    if (e == EPROTO && c->why[0])
        return vmig_error_set(err, VMIG_EPROTO, "%s: %s %s: %s", c->peer,
                              reading ? "reading" : "writing", what, c->why);
    int code =
        (e == ECONNRESET || e == EPIPE || e == ENOTCONN || e == ESHUTDOWN) ? VMIG_ECONN : VMIG_EIO;
    return vmig_error_set(err, code, "%s: %s %s: %s", c->peer, reading ? "reading" : "writing",
                          what, strerror(e));
}

/*
 * Shared loop for partial transfers. The caller's iov array is const, so the
 * first partial transfer copies what remains into a local array (or a heap
 * one for long arrays) that the loop then adjusts.
 */
static int xfer_full(vmig_conn *c, const struct iovec *iov0, int iovcnt, bool reading,
                     const char *what, vmig_error *err)
{
    struct iovec local[64];
    struct iovec *heap = NULL;
    const struct iovec *iov = iov0;
    bool copied = false;
    int rc = 0;
    while (iovcnt > 0) {
        ssize_t r = reading ? c->ops->readv(c, iov, iovcnt) : c->ops->writev(c, iov, iovcnt);
        if (r <= 0) {
            if (r == -EINTR)
                continue;
            rc = io_error(c, r, reading, what, err);
            break;
        }
        size_t n = (size_t)r;
        while (iovcnt > 0 && n >= iov[0].iov_len) {
            n -= iov[0].iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt == 0 || n == 0)
            continue;
        if (!copied) {
            struct iovec *dst = local;
            if (iovcnt > (int)VMIG_ARRAY_SIZE(local)) {
                free(heap);
                heap = dst = malloc(sizeof(*dst) * (size_t)iovcnt);
                if (!dst) {
                    rc = vmig_error_set(err, VMIG_ENOMEM, "out of memory for an iovec");
                    break;
                }
            }
            memcpy(dst, iov, sizeof(*dst) * (size_t)iovcnt);
            iov = dst;
            copied = true;
        }
        struct iovec *first = (struct iovec *)iov;
        first->iov_base = (uint8_t *)first->iov_base + n;
        first->iov_len -= n;
    }
    free(heap);
    return rc;
}

int vmig_conn_write_full(vmig_conn *c, const struct iovec *iov, int iovcnt, const char *what,
                         vmig_error *err)
{
    return xfer_full(c, iov, iovcnt, false, what, err);
}

int vmig_conn_read_full(vmig_conn *c, const struct iovec *iov, int iovcnt, const char *what,
                        vmig_error *err)
{
    return xfer_full(c, iov, iovcnt, true, what, err);
}

int vmig_conn_write_all(vmig_conn *c, const void *buf, size_t len, const char *what,
                        vmig_error *err)
{
    struct iovec iov = {(void *)buf, len};
    return xfer_full(c, &iov, 1, false, what, err);
}

int vmig_conn_read_all(vmig_conn *c, void *buf, size_t len, const char *what, vmig_error *err)
{
    struct iovec iov = {buf, len};
    return xfer_full(c, &iov, 1, true, what, err);
}

bool vmig_conn_is_local(const vmig_conn *c)
{
    if (!c || c->fd < 0)
        return false;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len))
        return false;
    if (ss.ss_family == AF_UNIX)
        return true;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)&ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

int vmig_conn_tcp_limits(const vmig_conn *c, uint64_t *busy_us, uint64_t *rwnd_us)
{
    *busy_us = *rwnd_us = 0;
    if (!c || c->fd < 0)
        return VMIG_ENOTSUP;
    struct tcp_info ti;
    memset(&ti, 0, sizeof(ti));
    socklen_t len = sizeof(ti);
    if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) ||
        len < offsetof(struct tcp_info, tcpi_rwnd_limited) + sizeof(ti.tcpi_rwnd_limited))
        return VMIG_ENOTSUP;
    *busy_us = ti.tcpi_busy_time;
    *rwnd_us = ti.tcpi_rwnd_limited;
    return 0;
}
