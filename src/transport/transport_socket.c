/*
 * Stream sockets: the tcp (IPv4/IPv6) and unix transports share one
 * connection implementation; they differ only in how addresses are parsed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "transport.h"

/* ------------------------------------------------------------------ */
/* connections                                                         */

static ssize_t sock_readv(vmig_conn *c, const struct iovec *iov, int iovcnt)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t r = recvmsg(c->fd, &m, 0);
    return r < 0 ? -errno : r;
}

static ssize_t sock_writev(vmig_conn *c, const struct iovec *iov, int iovcnt)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t r = sendmsg(c->fd, &m, MSG_NOSIGNAL);
    return r < 0 ? -errno : r;
}

static int sock_wait_readable(vmig_conn *c, int timeout_ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    return n < 0 ? -errno : n > 0;
}

static void sock_shutdown(vmig_conn *c)
{
    shutdown(c->fd, SHUT_RDWR);
}

static void sock_close(vmig_conn *c)
{
    close(c->fd);
    free(c);
}

static const vmig_conn_ops sock_conn_ops = {
    .readv = sock_readv,
    .writev = sock_writev,
    .wait_readable = sock_wait_readable,
    .shutdown = sock_shutdown,
    .close = sock_close,
};

static void sockaddr_text(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, len, "tcp:%s:%u", host, ntohs(in->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "tcp:[%s]:%u", host, ntohs(in6->sin6_port));
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const void *)sa;
        snprintf(buf, len, "unix:%s", un->sun_path[0] ? un->sun_path : "(unnamed)");
        break;
    }
    default:
        snprintf(buf, len, "(unknown address family %d)", sa->sa_family);
    }
}

static int conn_wrap(int fd, const char *peer, vmig_conn **out, vmig_error *err)
{
    vmig_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a connection");
    }
    c->ops = &sock_conn_ops;
    c->fd = fd;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    *out = c;
    return 0;
}

static void tune_socket(int fd, int family)
{
    int one = 1;
    if (family == AF_INET || family == AF_INET6)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Connect with a deadline: non-blocking connect, poll, then back to blocking. */
static int connect_fd(int family, const struct sockaddr *sa, socklen_t salen, int timeout_ms,
                      const char *what, int *out, vmig_error *err)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return vmig_error_set(err, VMIG_EIO, "%s: socket: %s", what, strerror(errno));
    int rc = connect(fd, sa, salen);
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n;
        do {
            n = poll(&p, 1, timeout_ms < 0 ? -1 : timeout_ms);
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            close(fd);
            return vmig_error_set(err, VMIG_ETIMEDOUT, "%s: connect timed out after %d ms", what,
                                  timeout_ms);
        }
        int soerr = 0;
        socklen_t l = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
        rc = soerr ? -1 : 0;
        errno = soerr;
    }
    if (rc < 0) {
        int e = errno;
        close(fd);
        return vmig_error_set(err, VMIG_ECONN, "%s: connect: %s", what, strerror(e));
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    tune_socket(fd, family);
    *out = fd;
    return 0;
}

/* ------------------------------------------------------------------ */
/* listeners                                                           */

typedef struct sock_listener {
    vmig_listener base;
    int fd;
    int family;
    char uri[160];
    char unlink_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
} sock_listener;

static int sock_accept(vmig_listener *l_, int timeout_ms, const int *abort, vmig_conn **out,
                       vmig_error *err)
{
    sock_listener *l = (sock_listener *)l_;
    uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : vmig_now_ns() + (uint64_t)timeout_ms * 1000000;
    for (;;) {
        if (abort && __atomic_load_n(abort, __ATOMIC_ACQUIRE))
            return vmig_error_set(err, VMIG_ECANCELED,
                                  "%s: canceled while waiting for a connection", l->uri);
        uint64_t now = vmig_now_ns();
        if (now >= deadline)
            return vmig_error_set(err, VMIG_ETIMEDOUT, "%s: no connection within %d ms", l->uri,
                                  timeout_ms);
        int wait = (int)VMIG_MIN((deadline - now) / 1000000 + 1, 50);
        struct pollfd p = {.fd = l->fd, .events = POLLIN};
        int n = poll(&p, 1, wait);
        if (n < 0 && errno != EINTR)
            return vmig_error_set(err, VMIG_EIO, "%s: poll: %s", l->uri, strerror(errno));
        if (n <= 0)
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            return vmig_error_set(err, VMIG_EIO, "%s: accept: %s", l->uri, strerror(errno));
        }
        tune_socket(fd, l->family);
        char peer[256];
        if (l->family == AF_UNIX)
            snprintf(peer, sizeof(peer), "%s (peer)", l->uri);
        else
            sockaddr_text((struct sockaddr *)&ss, peer, sizeof(peer));
        return conn_wrap(fd, peer, out, err);
    }
}

static void sock_listener_uri(vmig_listener *l_, char *buf, size_t len)
{
    sock_listener *l = (sock_listener *)l_;
    snprintf(buf, len, "%s", l->uri);
}

static void sock_listener_close(vmig_listener *l_)
{
    sock_listener *l = (sock_listener *)l_;
    close(l->fd);
    if (l->unlink_path[0])
        unlink(l->unlink_path);
    free(l);
}

static const vmig_listener_ops sock_listener_ops = {
    .accept = sock_accept,
    .uri = sock_listener_uri,
    .close = sock_listener_close,
};

static int listen_fd(int family, const struct sockaddr *sa, socklen_t salen, const char *what,
                     sock_listener **out, vmig_error *err)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return vmig_error_set(err, VMIG_EIO, "%s: socket: %s", what, strerror(errno));
    int one = 1;
    if (family != AF_UNIX)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, sa, salen) < 0 || listen(fd, VMIG_MAX_CHANNELS + 8) < 0) {
        int e = errno;
        close(fd);
        return vmig_error_set(err, e == EADDRINUSE ? VMIG_EEXIST : VMIG_EIO, "%s: %s: %s", what,
                              e == EADDRINUSE ? "address already in use" : "bind/listen",
                              strerror(e));
    }
    sock_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return vmig_error_set(err, VMIG_ENOMEM, "out of memory for a listener");
    }
    l->base.ops = &sock_listener_ops;
    l->fd = fd;
    l->family = family;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        sockaddr_text((struct sockaddr *)&ss, l->uri, sizeof(l->uri));
    else
        snprintf(l->uri, sizeof(l->uri), "%s", what);
    *out = l;
    return 0;
}

/* ------------------------------------------------------------------ */
/* tcp                                                                 */

/* Split "HOST:PORT" / "[V6]:PORT" into host and port strings. */
static int tcp_split(const char *addr, char *host, size_t hostlen, char *port, size_t portlen,
                     vmig_error *err)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || !colon[1])
        return vmig_error_set(err, VMIG_EINVAL, "tcp address '%s': expected HOST:PORT", addr);
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (hl && h[0] == '[') {
        if (h[hl - 1] != ']')
            return vmig_error_set(err, VMIG_EINVAL, "tcp address '%s': unterminated '[' in host",
                                  addr);
        h++;
        hl -= 2;
    }
    if (hl >= hostlen || strlen(colon + 1) >= portlen)
        return vmig_error_set(err, VMIG_EINVAL, "tcp address '%s' is too long", addr);
    memcpy(host, h, hl);
    host[hl] = 0;
    strcpy(port, colon + 1);
    char *end;
    long p = strtol(port, &end, 10);
    if (*end || p < 0 || p > 65535)
        return vmig_error_set(err, VMIG_EINVAL, "tcp address '%s': port '%s' is not 0..65535", addr,
                              port);
    return 0;
}

static int tcp_resolve(const char *addr, bool passive, struct addrinfo **res, vmig_error *err)
{
    char host[256], port[16];
    int rc = tcp_split(addr, host, sizeof(host), port, sizeof(port), err);
    if (rc)
        return rc;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (passive)
        hints.ai_flags = AI_PASSIVE;
    if (!passive && !host[0])
        return vmig_error_set(err, VMIG_EINVAL, "tcp address '%s': a host is required", addr);
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
    if (g)
        return vmig_error_set(err, VMIG_EINVAL, "tcp address '%s': %s", addr, gai_strerror(g));
    return 0;
}

static int tcp_listen(const char *addr, vmig_listener **out, vmig_error *err)
{
    struct addrinfo *res;
    int rc = tcp_resolve(addr, true, &res, err);
    if (rc)
        return rc;
    vmig_error first = {0};
    rc = VMIG_EINVAL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        sock_listener *l;
        rc = listen_fd(ai->ai_family, ai->ai_addr, ai->ai_addrlen, addr, &l, &first);
        if (rc == 0) {
            *out = &l->base;
            break;
        }
    }
    freeaddrinfo(res);
    return rc ? vmig_error_copy(err, &first) : 0;
}

static int tcp_connect(const char *addr, int timeout_ms, vmig_conn **out, vmig_error *err)
{
    struct addrinfo *res;
    int rc = tcp_resolve(addr, false, &res, err);
    if (rc)
        return rc;
    vmig_error first = {0};
    rc = VMIG_ECONN;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd;
        char what[200];
        snprintf(what, sizeof(what), "tcp:%s", addr);
        rc = connect_fd(ai->ai_family, ai->ai_addr, ai->ai_addrlen, timeout_ms, what, &fd, &first);
        if (rc == 0) {
            char peer[256];
            sockaddr_text(ai->ai_addr, peer, sizeof(peer));
            rc = conn_wrap(fd, peer, out, err);
            break;
        }
    }
    freeaddrinfo(res);
    return rc && first.code ? vmig_error_copy(err, &first) : rc;
}

const vmig_transport_ops vmig_transport_tcp = {
    .scheme = "tcp",
    .listen = tcp_listen,
    .connect = tcp_connect,
};

/* ------------------------------------------------------------------ */
/* unix                                                                */

static int unix_addr(const char *path, struct sockaddr_un *un, vmig_error *err)
{
    memset(un, 0, sizeof(*un));
    un->sun_family = AF_UNIX;
    if (!path[0])
        return vmig_error_set(err, VMIG_EINVAL, "unix address: empty path");
    if (strlen(path) >= sizeof(un->sun_path))
        return vmig_error_set(err, VMIG_EINVAL, "unix address '%s' is longer than %zu bytes", path,
                              sizeof(un->sun_path) - 1);
    strcpy(un->sun_path, path);
    return 0;
}

static int unix_listen(const char *path, vmig_listener **out, vmig_error *err)
{
    struct sockaddr_un un;
    int rc = unix_addr(path, &un, err);
    if (rc)
        return rc;
    char what[200];
    snprintf(what, sizeof(what), "unix:%s", path);
    sock_listener *l;
    rc = listen_fd(AF_UNIX, (struct sockaddr *)&un, sizeof(un), what, &l, err);
    if (rc)
        return rc;
    snprintf(l->uri, sizeof(l->uri), "unix:%s", path);
    strcpy(l->unlink_path, path);
    *out = &l->base;
    return 0;
}

static int unix_connect(const char *path, int timeout_ms, vmig_conn **out, vmig_error *err)
{
    struct sockaddr_un un;
    int rc = unix_addr(path, &un, err);
    if (rc)
        return rc;
    char what[200];
    snprintf(what, sizeof(what), "unix:%s", path);
    int fd;
    rc = connect_fd(AF_UNIX, (struct sockaddr *)&un, sizeof(un), timeout_ms, what, &fd, err);
    return rc ? rc : conn_wrap(fd, what, out, err);
}

const vmig_transport_ops vmig_transport_unix = {
    .scheme = "unix",
    .listen = unix_listen,
    .connect = unix_connect,
};
