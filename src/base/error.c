/* Error recording and the text of every error code. */
#include <stdarg.h>
#include <stdio.h>

#include "base.h"

const char *vmig_strerror(int code)
{
    switch (code) {
    case VMIG_OK:
        return "success";
    case VMIG_EINVAL:
        return "invalid argument";
    case VMIG_ENOMEM:
        return "out of memory";
    case VMIG_EIO:
        return "I/O error";
    case VMIG_ECONN:
        return "connection error";
    case VMIG_EPROTO:
        return "protocol error";
    case VMIG_EVERIFY:
        return "verification failed";
    case VMIG_ECANCELED:
        return "canceled";
    case VMIG_ENOTSUP:
        return "not supported";
    case VMIG_ESTATE:
        return "invalid state";
    case VMIG_ETIMEDOUT:
        return "timed out";
    case VMIG_EPEER:
        return "peer reported an error";
    case VMIG_EEXIST:
        return "already exists";
    case VMIG_ENOENT:
        return "not found";
    case VMIG_EAGAIN:
        return "busy, try again";
    case VMIG_EAUTH:
        return "authentication failed";
    }
    return "unknown error";
}

int vmig_error_set(vmig_error *err, int code, const char *fmt, ...)
{
    if (err && err->code == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int vmig_error_copy(vmig_error *dst, const vmig_error *src)
{
    if (dst && dst->code == 0 && src->code != 0)
        *dst = *src;
    return src->code;
}
