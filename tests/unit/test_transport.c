/* Transports: URI parsing, listening on port 0, tcp v4/v6 and unix round trips, errors. */
#include <pthread.h>
#include <unistd.h>

#include "src/transport/transport.h"

#include "../testutil.h"

typedef struct srv {
    vmig_listener *l;
    int rc;
    char got[64];
} srv;

static void *server(void *p)
{
    srv *s = p;
    vmig_conn *c;
    vmig_error e = {0};
    s->rc = s->l->ops->accept(s->l, 5000, NULL, &c, &e);
    if (s->rc)
        return NULL;
    s->rc = vmig_conn_read_all(c, s->got, 11, "test", &e);
    if (!s->rc)
        s->rc = vmig_conn_write_all(c, "pong", 4, "test", &e);
    vmig_conn_close(c);
    return NULL;
}

static void round_trip(const char *uri)
{
    srv s = {0};
    vmig_error e = {0};
    int rc = vmig_listen(uri, &s.l, &e);
    if (rc && strstr(uri, "[::1]")) {
        fprintf(stderr, "note: IPv6 loopback unavailable here (%s); not tested\n", e.msg);
        return;
    }
    REQUIRE(rc == 0, "listen %s: %s", uri, e.msg);
    char bound[256];
    s.l->ops->uri(s.l, bound, sizeof(bound));
    CHECK(strstr(bound, ":0") == NULL || !strncmp(bound, "unix:", 5), "%s: port 0 not resolved: %s",
          uri, bound);
    pthread_t t;
    pthread_create(&t, NULL, server, &s);
    vmig_conn *c;
    REQUIRE(vmig_connect(bound, 2000, &c, &e) == 0, "connect %s: %s", bound, e.msg);
    /* Vectored write of three pieces. */
    struct iovec iov[3] = {{"hel", 3}, {"lo ", 3}, {"world", 5}};
    CHECK(vmig_conn_write_full(c, iov, 3, "test", &e) == 0, "writev: %s", e.msg);
    char buf[8] = {0};
    CHECK(vmig_conn_read_all(c, buf, 4, "test", &e) == 0 && !memcmp(buf, "pong", 4), "read");
    /* The server closed: the next read reports a closed connection. */
    e.code = 0;
    CHECK(vmig_conn_read_all(c, buf, 1, "more", &e) == VMIG_ECONN, "EOF -> ECONN (%s)", e.msg);
    pthread_join(t, NULL);
    CHECK(s.rc == 0 && !memcmp(s.got, "hello world", 11), "server got '%.11s'", s.got);
    vmig_conn_close(c);
    vmig_listener_close(s.l);
}

int main(void)
{
    char path[128];
    snprintf(path, sizeof(path), "unix:/tmp/vmig-test-transport-%d.sock", (int)getpid());
    round_trip("tcp:127.0.0.1:0");
    round_trip("tcp:localhost:0");
    round_trip("tcp:[::1]:0");
    round_trip(path);
    CHECK(access(path + 5, F_OK) != 0, "unix socket file left behind");

    vmig_error e = {0};
    vmig_listener *l;
    vmig_conn *c;
    struct {
        const char *uri;
        int code;
    } bad[] = {
        {"nocolon", VMIG_EINVAL},
        {"udp:1.2.3.4:5", VMIG_EINVAL},
        {"tcp:127.0.0.1", VMIG_EINVAL},
        {"tcp:127.0.0.1:", VMIG_EINVAL},
        {"tcp:127.0.0.1:65536", VMIG_EINVAL},
        {"tcp:127.0.0.1:-1", VMIG_EINVAL},
        {"tcp:[::1:80", VMIG_EINVAL},
        {"unix:", VMIG_EINVAL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e.code = 0;
        CHECK(vmig_listen(bad[i].uri, &l, &e) == bad[i].code, "listen %s", bad[i].uri);
        CHECK(e.msg[0], "%s: no message", bad[i].uri);
        CHECK(vmig_connect(bad[i].uri, 100, &c, NULL) != 0, "connect %s", bad[i].uri);
    }
    char longpath[200] = "unix:/tmp/";
    memset(longpath + 10, 'x', 150);
    longpath[160] = 0;
    CHECK(vmig_listen(longpath, &l, NULL) == VMIG_EINVAL, "long unix path");
    e.code = 0;
    CHECK(vmig_connect("unix:/nonexistent/vmig.sock", 100, &c, &e) == VMIG_ECONN, "refused: %s",
          e.msg);
    /* Address in use. */
    REQUIRE(vmig_listen("tcp:127.0.0.1:0", &l, &e) == 0, "listen");
    char bound[256];
    l->ops->uri(l, bound, sizeof(bound));
    vmig_listener *l2;
    e.code = 0;
    CHECK(vmig_listen(bound, &l2, &e) == VMIG_EEXIST, "in use: %s", e.msg);
    /* Accept times out, and an abort flag ends the wait early. */
    e.code = 0;
    CHECK(l->ops->accept(l, 100, NULL, &c, &e) == VMIG_ETIMEDOUT, "accept timeout");
    int abort_flag = 1;
    e.code = 0;
    CHECK(l->ops->accept(l, -1, &abort_flag, &c, &e) == VMIG_ECANCELED, "accept abort");
    vmig_listener_close(l);
    return tu_result("test_transport");
}
