/* Parameters: defaults, parsing, ranges (== limit accepted, limit + 1 refused). */
#include <vmig/vmig.h>

#include "../testutil.h"

static int set(vmig_params *p, const char *n, const char *v)
{
    vmig_error e = {0};
    int rc = vmig_params_set(p, n, v, &e);
    CHECK(rc == 0 || (e.code == rc && e.msg[0]), "%s=%s: error without a message", n, v);
    return rc;
}

int main(void)
{
    vmig_params p;
    vmig_params_init(&p);
    CHECK(p.channels == 4 && p.packet_pages == 128 && p.zero_detect == VMIG_ZERO_CHANNEL &&
              p.verify == VMIG_VERIFY_ON && p.max_bandwidth == 0,
          "defaults");
    static const struct {
        const char *text;
        int rc;
        uint64_t v;
    } sizes[] = {
        {"0", 0, 0},
        {"4096", 0, 4096},
        {"512M", 0, 512ull << 20},
        {"4GiB", 0, 4ull << 30},
        {"4gb", 0, 4ull << 30},
        {"1T", 0, 1ull << 40},
        {"16777215T", 0, 16777215ull << 40},
        {"16777216T", VMIG_EINVAL, 0}, /* 2^64: overflows */
        {"18446744073709551615", 0, UINT64_MAX},
        {"18446744073709551616", VMIG_EINVAL, 0},
        {"", VMIG_EINVAL, 0},
        {" 1", VMIG_EINVAL, 0},
        {"-1", VMIG_EINVAL, 0},
        {"+1", VMIG_EINVAL, 0},
        {"1.5G", VMIG_EINVAL, 0},
        {"1X", VMIG_EINVAL, 0},
        {"1Gx", VMIG_EINVAL, 0},
        {"G", VMIG_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t v = 12345;
        int rc = vmig_parse_size(sizes[i].text, &v);
        CHECK(rc == sizes[i].rc && (rc || v == sizes[i].v), "size '%s': rc %d, value %llu",
              sizes[i].text, rc, (unsigned long long)v);
    }
    CHECK(set(&p, "channels", "64") == 0 && p.channels == 64, "channels 64");
    CHECK(set(&p, "channels", "65") == VMIG_EINVAL && p.channels == 64, "channels 65");
    CHECK(set(&p, "channels", "0") == VMIG_EINVAL, "channels 0");
    CHECK(set(&p, "channels", "1") == 0 && p.channels == 1, "channels 1");
    CHECK(set(&p, "channels", "4x") == VMIG_EINVAL, "channels 4x");
    CHECK(set(&p, "channels", "-1") == VMIG_EINVAL, "channels -1");
    CHECK(set(&p, "channels", "4K") == VMIG_EINVAL, "suffix refused on counts");
    CHECK(set(&p, "packet-pages", "1024") == 0 && p.packet_pages == 1024, "pp 1024");
    CHECK(set(&p, "packet-pages", "1025") == VMIG_EINVAL, "pp 1025");
    CHECK(set(&p, "zero-page-detection", "main") == 0 && p.zero_detect == VMIG_ZERO_MAIN, "zd");
    CHECK(set(&p, "zero-page-detection", "both") == VMIG_EINVAL, "zd bad");
    CHECK(set(&p, "verify", "full") == 0 && p.verify == VMIG_VERIFY_FULL, "verify");
    CHECK(set(&p, "prefault", "none") == 0 && p.prefault == VMIG_PREFAULT_NONE, "prefault");
    CHECK(set(&p, "max-bandwidth", "100M") == 0 && p.max_bandwidth == 100ull << 20, "bw 100M");
    CHECK(set(&p, "max-bandwidth", "1GiB") == 0 && p.max_bandwidth == 1ull << 30, "bw 1GiB");
    CHECK(set(&p, "max-bandwidth", "12345") == 0 && p.max_bandwidth == 12345, "bw plain");
    CHECK(set(&p, "max-bandwidth", "99999999999T") == VMIG_EINVAL, "bw overflow");
    CHECK(set(&p, "max-bandwidth", "1Q") == VMIG_EINVAL, "bw bad suffix");
    CHECK(set(&p, "nope", "1") == VMIG_EINVAL, "unknown parameter");
    /* live pre-copy */
    vmig_params_init(&p);
    CHECK(p.dirty_track == VMIG_DIRTY_AUTO && p.downtime_limit_ms == 300 && p.max_passes == 0 &&
              p.max_time_ms == 0 && p.on_limit == VMIG_ON_LIMIT_FAIL &&
              p.throttle == VMIG_THROTTLE_ADAPTIVE && p.throttle_initial == 20 &&
              p.throttle_step == 10 && p.throttle_max == 99 && p.stall_passes == 3,
          "live defaults");
    static const char *const modes[] = {"auto", "none", "callback", "wp", "wp-async", "wp-sync"};
    for (uint32_t m = 0; m < 6; m++) {
        CHECK(set(&p, "dirty-track", modes[m]) == 0 && p.dirty_track == m, "dirty-track %s",
              modes[m]);
        CHECK(!strcmp(vmig_dirty_track_name(m), modes[m]), "name of %u", m);
    }
    CHECK(!strcmp(vmig_dirty_track_name(6), "unknown"), "name of 6");
    CHECK(set(&p, "dirty-track", "kvm") == VMIG_EINVAL, "dirty-track kvm");
    CHECK(set(&p, "downtime-limit", "0") == VMIG_EINVAL, "downtime 0");
    CHECK(set(&p, "downtime-limit", "3600000") == 0 && p.downtime_limit_ms == 3600000, "dt max");
    CHECK(set(&p, "downtime-limit", "3600001") == VMIG_EINVAL, "dt max+1");
    CHECK(set(&p, "max-passes", "1000000") == 0 && p.max_passes == 1000000, "passes max");
    CHECK(set(&p, "max-passes", "1000001") == VMIG_EINVAL, "passes max+1");
    CHECK(set(&p, "max-time", "86400000") == 0 && p.max_time_ms == 86400000, "time max");
    CHECK(set(&p, "max-time", "86400001") == VMIG_EINVAL, "time max+1");
    CHECK(set(&p, "on-limit", "switch") == 0 && p.on_limit == VMIG_ON_LIMIT_SWITCH, "on-limit");
    CHECK(set(&p, "on-limit", "abort") == VMIG_EINVAL, "on-limit bad");
    CHECK(set(&p, "throttle", "ladder") == 0 && p.throttle == VMIG_THROTTLE_LADDER, "ladder");
    CHECK(set(&p, "throttle", "off") == 0 && p.throttle == VMIG_THROTTLE_OFF, "off");
    CHECK(set(&p, "throttle-max", "99") == 0 && p.throttle_max == 99, "tmax 99");
    CHECK(set(&p, "throttle-max", "100") == VMIG_EINVAL, "tmax 100");
    CHECK(set(&p, "throttle-initial", "0") == VMIG_EINVAL, "tinit 0");
    CHECK(set(&p, "throttle-step", "99") == 0 && p.throttle_step == 99, "tstep 99");
    CHECK(set(&p, "stall-passes", "1000") == 0 && p.stall_passes == 1000, "stall max");
    CHECK(set(&p, "stall-passes", "0") == VMIG_EINVAL, "stall 0");
    int n = 0;
    for (const vmig_param_info *i = vmig_params_table(); i->name; i++, n++)
        CHECK(i->values && i->def && i->help && i->help[0], "param %s lacks help", i->name);
    CHECK(n == 39, "table has %d entries", n);

    vmig_params_init(&p);
    CHECK(p.resume == 0, "resume is off by default");
    CHECK(set(&p, "resume", "on") == 0 && p.resume == 1, "resume on");
    CHECK(set(&p, "resume", "off") == 0 && p.resume == 0, "resume off");
    CHECK(set(&p, "resume", "yes") == VMIG_EINVAL && p.resume == 0, "resume yes");
    CHECK(p.resume_window == 1024, "resume-window defaults to 1024");
    CHECK(set(&p, "resume-window", "16") == 0 && p.resume_window == 16, "resume-window 16");
    CHECK(set(&p, "resume-window", "15") == VMIG_EINVAL && p.resume_window == 16,
          "resume-window 15 (acknowledgements come every 8 packets)");
    CHECK(set(&p, "resume-window", "1025") == VMIG_EINVAL, "resume-window 1025");

    /* TLS: the mode, kernel TLS, and strings up to VMIG_TLS_STR_MAX - 1. */
    vmig_params_init(&p);
    CHECK(p.tls == VMIG_TLS_MODE_OFF && p.tls_ktls == VMIG_TLS_KTLS_MODE_AUTO && !p.tls_creds[0] &&
              !p.tls_priority[0],
          "tls defaults");
    CHECK(set(&p, "tls", "x509") == 0 && p.tls == VMIG_TLS_MODE_X509, "tls x509");
    CHECK(set(&p, "tls", "psk") == 0 && p.tls == VMIG_TLS_MODE_PSK, "tls psk");
    CHECK(set(&p, "tls", "ssl") == VMIG_EINVAL && p.tls == VMIG_TLS_MODE_PSK, "tls ssl");
    CHECK(set(&p, "tls-ktls", "require") == 0 && p.tls_ktls == VMIG_TLS_KTLS_MODE_REQUIRE, "ktls");
    CHECK(set(&p, "tls-ktls", "on") == VMIG_EINVAL, "ktls on");
    CHECK(p.tls_records == VMIG_TLS_RECORDS_VMIG, "tls-records default");
    CHECK(set(&p, "tls-records", "gnutls") == 0 && p.tls_records == VMIG_TLS_RECORDS_GNUTLS,
          "tls-records gnutls");
    CHECK(set(&p, "tls-records", "openssl") == VMIG_EINVAL, "tls-records openssl");
    CHECK(set(&p, "tls-creds", "/etc/vmig/tls") == 0 && !strcmp(p.tls_creds, "/etc/vmig/tls"),
          "tls-creds");
    {
        char longs[VMIG_TLS_STR_MAX + 1];
        memset(longs, 'a', sizeof(longs) - 1);
        longs[VMIG_TLS_STR_MAX - 1] = 0;
        CHECK(set(&p, "tls-authz", longs) == 0 && strlen(p.tls_authz) == VMIG_TLS_STR_MAX - 1,
              "authz of the longest length");
        longs[VMIG_TLS_STR_MAX - 1] = 'a';
        longs[VMIG_TLS_STR_MAX] = 0;
        CHECK(set(&p, "tls-hostname", longs) == VMIG_EINVAL && !p.tls_hostname[0],
              "hostname one byte too long");
        vmig_session *cs = NULL;
        vmig_error ce = {0};
        memset(p.tls_priority, 'x', sizeof(p.tls_priority));
        CHECK(vmig_session_create(&cs, VMIG_ROLE_SOURCE, &p, &ce) == VMIG_EINVAL && !cs &&
                  strstr(ce.msg, "tls-priority"),
              "unterminated tls-priority in a struct: %s", ce.msg);
    }

    /* Continuous checkpoints: the period (0 = on request only), heartbeat, flush threads. */
    vmig_params_init(&p);
    CHECK(p.checkpoint_period_ms == 1000 && p.heartbeat_timeout_ms == 2000 && p.flush_threads == 0,
          "checkpoint defaults");
    CHECK(set(&p, "checkpoint-period", "0") == 0 && p.checkpoint_period_ms == 0, "period 0");
    CHECK(set(&p, "checkpoint-period", "100") == 0 && p.checkpoint_period_ms == 100, "period 100");
    CHECK(set(&p, "checkpoint-period", "99") == VMIG_EINVAL && p.checkpoint_period_ms == 100,
          "period 99");
    CHECK(set(&p, "checkpoint-period", "1") == VMIG_EINVAL, "period 1");
    CHECK(set(&p, "checkpoint-period", "3600000") == 0, "period 1 h");
    CHECK(set(&p, "checkpoint-period", "3600001") == VMIG_EINVAL, "period above 1 h");
    CHECK(set(&p, "heartbeat-timeout", "100") == 0 && p.heartbeat_timeout_ms == 100, "hb 100");
    CHECK(set(&p, "heartbeat-timeout", "99") == VMIG_EINVAL, "hb 99");
    CHECK(set(&p, "heartbeat-timeout", "600001") == VMIG_EINVAL, "hb above 10 min");
    CHECK(set(&p, "flush-threads", "64") == 0 && p.flush_threads == 64, "flush 64");
    CHECK(set(&p, "flush-threads", "65") == VMIG_EINVAL, "flush 65");
    {
        vmig_session *cs = NULL;
        vmig_error ce = {0};
        vmig_params_init(&p);
        p.checkpoint_period_ms = 50;
        CHECK(vmig_session_create(&cs, VMIG_ROLE_SOURCE, &p, &ce) == VMIG_EINVAL && !cs,
              "period 50 in a struct");
        CHECK(strstr(ce.msg, "checkpoint-period"), "message: %s", ce.msg);
    }

    /* Device state: path, chunk size and the destination's buffer. */
    vmig_params_init(&p);
    CHECK(p.devstate_path == VMIG_DEVSTATE_CHANNELS && p.devstate_chunk == 1u << 20 &&
              p.devstate_buffer == 64ull << 20,
          "devstate defaults");
    CHECK(set(&p, "devstate-path", "control") == 0 && p.devstate_path == VMIG_DEVSTATE_CONTROL,
          "devstate-path control");
    CHECK(set(&p, "devstate-path", "serial") == VMIG_EINVAL, "devstate-path bad");
    CHECK(set(&p, "devstate-chunk", "4K") == 0 && p.devstate_chunk == 4096, "chunk 4K");
    CHECK(set(&p, "devstate-chunk", "16M") == 0 && p.devstate_chunk == 16u << 20, "chunk 16M");
    CHECK(set(&p, "devstate-chunk", "4095") == VMIG_EINVAL, "chunk 4095");
    CHECK(set(&p, "devstate-chunk", "16777217") == VMIG_EINVAL, "chunk 16M + 1");
    CHECK(set(&p, "devstate-buffer", "1M") == 0 && p.devstate_buffer == 1u << 20, "buffer 1M");
    CHECK(set(&p, "devstate-buffer", "4G") == 0 && p.devstate_buffer == 4ull << 30, "buffer 4G");
    CHECK(set(&p, "devstate-buffer", "1048575") == VMIG_EINVAL, "buffer below 1M");

    /* Zero-page offload: the backend, and accel-path's length limit. */
    vmig_params_init(&p);
    CHECK(p.accel == VMIG_ACCEL_AUTO && p.accel_path[0] == 0, "accel defaults");
    static const char *const accel_names[] = {"cpu", "dsa", "dsa-model", "auto"};
    for (uint32_t k = 0; k < 4; k++)
        CHECK(set(&p, "accel", accel_names[k]) == 0 && p.accel == k &&
                  !strcmp(vmig_accel_kind_name(k), accel_names[k]),
              "accel %s", accel_names[k]);
    CHECK(!strcmp(vmig_accel_kind_name(4), "unknown"), "accel name 4");
    CHECK(set(&p, "accel", "iaa") == VMIG_EINVAL, "accel iaa");
    char path[VMIG_ACCEL_PATH_MAX + 1];
    memset(path, 'x', sizeof(path));
    path[VMIG_ACCEL_PATH_MAX - 1] = 0; /* the longest that fits */
    CHECK(set(&p, "accel-path", path) == 0 && strlen(p.accel_path) == VMIG_ACCEL_PATH_MAX - 1,
          "accel-path of %d bytes", VMIG_ACCEL_PATH_MAX - 1);
    path[VMIG_ACCEL_PATH_MAX - 1] = 'x';
    path[VMIG_ACCEL_PATH_MAX] = 0;
    CHECK(set(&p, "accel-path", path) == VMIG_EINVAL &&
              strlen(p.accel_path) == VMIG_ACCEL_PATH_MAX - 1,
          "accel-path of %d bytes accepted", VMIG_ACCEL_PATH_MAX);
    CHECK(set(&p, "accel-path", "dsa:/dev/dsa/wq0.0 dsa:/dev/dsa/wq1.0") == 0 &&
              !strcmp(p.accel_path, "dsa:/dev/dsa/wq0.0 dsa:/dev/dsa/wq1.0"),
          "accel-path list");
    memset(p.accel_path, 'y', sizeof(p.accel_path)); /* no terminator */
    vmig_session *bad = NULL;
    CHECK(vmig_session_create(&bad, VMIG_ROLE_SOURCE, &p, NULL) == VMIG_EINVAL && !bad,
          "unterminated accel-path accepted");

    /* Compression: codec names, auto, levels, the deflate path. */
    vmig_params_init(&p);
    CHECK(p.compression == VMIG_COMPRESSION_AUTO && p.zstd_level == 1 && p.zlib_level == 1 &&
              p.deflate_path == VMIG_DEFLATE_PATH_AUTO,
          "compression defaults");
    static const char *const codec_names[] = {"none", "zlib", "zstd", "deflate-page", "lz4"};
    for (uint32_t c = 0; c < VMIG_CODEC_COUNT; c++) {
        CHECK(set(&p, "compression", codec_names[c]) == 0 && p.compression == c, "codec %s",
              codec_names[c]);
        CHECK(!strcmp(vmig_codec_name(c), codec_names[c]), "codec name %u", c);
    }
    CHECK(set(&p, "compression", "auto") == 0 && p.compression == VMIG_COMPRESSION_AUTO, "auto");
    CHECK(!strcmp(vmig_codec_name(VMIG_COMPRESSION_AUTO), "auto"), "auto name");
    CHECK(!strcmp(vmig_codec_name(VMIG_CODEC_COUNT), "?"), "unknown codec name");
    CHECK(set(&p, "compression", "gzip") == VMIG_EINVAL, "gzip");
    CHECK(set(&p, "compression", "") == VMIG_EINVAL, "empty codec");
    CHECK(set(&p, "zstd-level", "19") == 0 && p.zstd_level == 19, "zstd 19");
    CHECK(set(&p, "zstd-level", "20") == VMIG_EINVAL, "zstd 20");
    CHECK(set(&p, "zstd-level", "0") == VMIG_EINVAL, "zstd 0");
    CHECK(set(&p, "zlib-level", "9") == 0 && p.zlib_level == 9, "zlib 9");
    CHECK(set(&p, "zlib-level", "10") == VMIG_EINVAL, "zlib 10");
    CHECK(set(&p, "deflate-path", "hardware") == 0 && p.deflate_path == VMIG_DEFLATE_PATH_HARDWARE,
          "deflate hardware");
    CHECK(set(&p, "deflate-path", "iaa") == VMIG_EINVAL, "deflate iaa");
    CHECK(vmig_codec_available(VMIG_CODEC_NONE, NULL) == 0, "none is always built");
    CHECK(vmig_codec_available(VMIG_CODEC_COUNT, NULL) == VMIG_EINVAL, "no such codec");
    {
        vmig_session *cs = NULL;
        vmig_params_init(&p);
        p.compression = VMIG_CODEC_COUNT;
        CHECK(vmig_session_create(&cs, VMIG_ROLE_SOURCE, &p, NULL) == VMIG_EINVAL && !cs,
              "compression %u refused", p.compression);
        p.compression = VMIG_COMPRESSION_AUTO;
        CHECK(vmig_session_create(&cs, VMIG_ROLE_SOURCE, &p, NULL) == 0, "auto accepted");
        vmig_session_free(cs);
    }

    /* Sessions refuse bad params given as a struct. */
    vmig_session *s = NULL;
    vmig_error e = {0};
    vmig_params_init(&p);
    p.channels = 65;
    CHECK(vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, &e) == VMIG_EINVAL && !s, "65 channels");
    CHECK(strstr(e.msg, "channels") && strstr(e.msg, "1..64"), "message: %s", e.msg);
    vmig_params_init(&p);
    p.throttle_max = 100;
    e = (vmig_error){0};
    CHECK(vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, &e) == VMIG_EINVAL && !s, "tmax 100");
    CHECK(strstr(e.msg, "throttle-max"), "message: %s", e.msg);
    vmig_params_init(&p);
    p.dirty_track = 6;
    CHECK(vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, &e) == VMIG_EINVAL && !s, "mode 6");
    vmig_params_init(&p);
    CHECK(vmig_session_create(&s, VMIG_ROLE_SOURCE, &p, NULL) == 0 && s, "create");
    static uint8_t mem[3 * 4096] __attribute__((aligned(4096)));
    e.code = 0;
    CHECK(vmig_ram_add(s, "", mem, 4096, 4096, 0, &e) == VMIG_EINVAL, "empty name");
    CHECK(vmig_ram_add(s, "a", mem, 4095, 4096, 0, NULL) == VMIG_EINVAL, "odd length");
    CHECK(vmig_ram_add(s, "a", mem + 1, 4096, 4096, 0, NULL) == VMIG_EINVAL, "unaligned host");
    CHECK(vmig_ram_add(s, "a", mem, 4096, 3000, 0, NULL) == VMIG_EINVAL, "page size");
    CHECK(vmig_ram_add(s, "a", mem, 4096, 0, 0, NULL) == 0, "default page size");
    CHECK(vmig_ram_add(s, "a", mem + 4096, 4096, 0, 0, NULL) == VMIG_EEXIST, "duplicate");
    char name[300];
    memset(name, 'n', sizeof(name));
    name[255] = 0;
    CHECK(vmig_ram_add(s, name, mem + 4096, 4096, 0, 0, NULL) == 0, "255-byte name");
    name[255] = 'n';
    name[256] = 0;
    CHECK(vmig_ram_add(s, name, mem + 8192, 4096, 0, 0, NULL) == VMIG_EINVAL, "256-byte name");
    CHECK(vmig_migrate(s, "bogus:x", &e) != 0, "bad scheme");
    vmig_stats st;
    CHECK(vmig_stats_get(s, &st) == 0, "stats");
    vmig_session_free(s);
    vmig_session_free(NULL);
    CHECK(strcmp(vmig_strerror(VMIG_EPROTO), "protocol error") == 0, "strerror");
    CHECK(strcmp(vmig_strerror(-999), "unknown error") == 0, "strerror unknown");
    return tu_result("test_params");
}
