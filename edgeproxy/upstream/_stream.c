/* Upstream TCP connections on a private epoll, below the event loop's transports.
 *
 * Behind gunicorn's sync workers the proxy opens and closes an upstream connection per
 * request. uvloop's transport costs more per connection than the rest of the request's
 * Python side (its handle, a transport tracked in a WeakValueDictionary, TCP_NODELAY,
 * getsockname and getpeername on every connect, a coroutine and futures). Here, as
 * nginx does it, a connection is socket + epoll_ctl(ADD) + connect, then write, read and
 * close: its events come from one edge-triggered epoll instance per worker (a Poller),
 * whose descriptor the event loop watches with one add_reader for the worker's life.
 *
 * A Stream is a transport in asyncio's terms for the protocol it carries
 * (edgeproxy.upstream.connection.UpstreamConnection, or a tunnel's end after a 101):
 * write, writelines, pause/resume_reading, close, abort, write_eof, flow control with
 * pause_writing/resume_writing, connection_lost delivered through loop.call_soon. The
 * connect itself reports to a callback with an errno (0: connected) rather than calling
 * connection_made, so the caller decides what "made" means.
 *
 * Lifetime: the Poller holds a reference to each Stream whose descriptor is open (epoll
 * keeps a bare pointer to it); closing the descriptor removes it from epoll (nothing else
 * holds it: no dup) and drops that reference. Events of one epoll_wait are all referenced
 * before any is handled, so a stream closed by an earlier event's callback stays valid.
 *
 * The fallback without this module (a pure install) is the loop's own create_connection
 * (edgeproxy/upstream/connect.py); tests/unit/test_upstream_stream.py tests this one.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef __linux__
#error "edgeproxy.upstream._stream uses Linux's epoll"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_SIZE 262144 /* one recv (uvloop reads as much); a shorter one drained the socket */
#define READS_PER_EVENT 32 /* then the rest is read a loop iteration later (fairness) */
#define MAX_EVENTS 64
#define MAX_IOV 64
#define DEFAULT_HIGH_WATER 65536

enum { CONNECTING, OPEN, CLOSED };

typedef struct {
    PyObject_HEAD int epfd;
    PyObject *loop;
    PyObject *call_soon;
    Py_ssize_t open_streams; /* descriptors open (a slot a test can see released) */
    char *read_buffer;
} PollerObject;

typedef struct {
    PyObject_HEAD PollerObject *poller;
    PyObject *protocol;
    PyObject *on_connect; /* set while connecting */
    int fd;
    int family;
    int state;
    char closing;        /* close() or abort() was called */
    char made;           /* on_connect(0) was called: connection_lost is due at the end */
    char paused_reading; /* pause_reading() */
    char read_pending;   /* readable while paused (an edge not to lose) */
    char read_closed;    /* EOF seen */
    char hangup;         /* EPOLLRDHUP/HUP/ERR seen: read on until EOF or error */
    char paused_writing; /* the protocol was told pause_writing */
    char eof_pending;    /* write_eof() once the buffer is written */
    char *out;           /* bytes not yet taken by the socket: out[out_start:out_end] */
    size_t out_start, out_end, out_capacity;
    size_t high_water, low_water;
} StreamObject;

static PyTypeObject PollerType;
static PyTypeObject StreamType;

/* The protocol's methods, named once (a call then costs no format string nor lookup of
 * the name's hash). */
static PyObject *name_data_received, *name_eof_received, *name_connection_lost,
    *name_pause_writing, *name_resume_writing, *name_connection_lost_method, *name_read_now;

/* --- errors and callbacks --- */

static PyObject *os_error(int err) {
    return PyObject_CallFunction(PyExc_OSError, "is", err, strerror(err));
}

/* The protocol's callback raised: tell the loop's exception handler (as asyncio's
 * transports do), then close at once. */
static void force_close(StreamObject *s, PyObject *exc);

static void report_error(StreamObject *s, const char *message) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value == NULL) {
        value = Py_None;
        Py_INCREF(value);
    }
    if (traceback != NULL)
        PyException_SetTraceback(value, traceback);
    PyObject *context = Py_BuildValue("{s:s,s:O,s:O,s:O}", "message", message, "exception",
                                      value, "transport", (PyObject *)s, "protocol",
                                      s->protocol ? s->protocol : Py_None);
    if (context != NULL) {
        PyObject *r = PyObject_CallMethod(s->poller->loop, "call_exception_handler", "O",
                                          context);
        if (r == NULL)
            PyErr_WriteUnraisable((PyObject *)s);
        Py_XDECREF(r);
        Py_DECREF(context);
    } else {
        PyErr_WriteUnraisable((PyObject *)s);
    }
    force_close(s, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

static int call_protocol(StreamObject *s, PyObject *method, const char *message) {
    if (s->protocol == NULL || s->protocol == Py_None)
        return 0;
    PyObject *r = PyObject_CallMethodNoArgs(s->protocol, method);
    if (r == NULL) {
        report_error(s, message);
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* --- closing --- */

/* Closes the descriptor (which takes it out of epoll) and drops the Poller's reference:
 * the last thing a caller may do with `s` unless it holds a reference of its own. */
static void close_descriptor(StreamObject *s) {
    if (s->fd < 0)
        return;
    close(s->fd);
    s->fd = -1;
    s->poller->open_streams--;
    Py_DECREF(s);
}

static void drop_output(StreamObject *s) {
    PyMem_Free(s->out);
    s->out = NULL;
    s->out_start = s->out_end = s->out_capacity = 0;
}

/* connection_lost(exc), a loop iteration later as asyncio does it, if the protocol was
 * ever told the connection was made. */
static void schedule_lost(StreamObject *s, PyObject *exc) {
    if (!s->made)
        return;
    s->made = 0;
    PyObject *lost = PyObject_GetAttr((PyObject *)s, name_connection_lost_method);
    if (lost == NULL) {
        PyErr_WriteUnraisable((PyObject *)s);
        return;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(s->poller->call_soon, lost,
                                               exc ? exc : Py_None, NULL);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)s);
    Py_XDECREF(r);
    Py_DECREF(lost);
}

static void force_close(StreamObject *s, PyObject *exc) {
    if (s->state == CLOSED)
        return;
    s->state = CLOSED;
    s->closing = 1;
    drop_output(s);
    Py_CLEAR(s->on_connect);
    schedule_lost(s, exc);
    close_descriptor(s);
}

static void fatal_errno(StreamObject *s, int err) {
    PyObject *exc = os_error(err);
    if (exc == NULL) {
        PyErr_Clear();
        force_close(s, NULL);
        return;
    }
    force_close(s, exc);
    Py_DECREF(exc);
}

/* --- writing --- */

static size_t buffered(StreamObject *s) { return s->out_end - s->out_start; }

static int keep_output(StreamObject *s, const char *data, size_t size) {
    if (size == 0)
        return 0;
    if (s->out_start > 0 && s->out_start == s->out_end)
        s->out_start = s->out_end = 0;
    if (s->out_end + size > s->out_capacity) {
        size_t pending = buffered(s);
        if (s->out_start > 0) { /* move what is left to the front first */
            memmove(s->out, s->out + s->out_start, pending);
            s->out_start = 0;
            s->out_end = pending;
        }
        if (pending + size > s->out_capacity) {
            size_t capacity = s->out_capacity ? s->out_capacity : 4096;
            while (capacity < pending + size)
                capacity *= 2;
            char *grown = PyMem_Realloc(s->out, capacity);
            if (grown == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            s->out = grown;
            s->out_capacity = capacity;
        }
    }
    memcpy(s->out + s->out_end, data, size);
    s->out_end += size;
    return 0;
}

static void maybe_pause_protocol(StreamObject *s) {
    if (!s->paused_writing && buffered(s) > s->high_water) {
        s->paused_writing = 1;
        call_protocol(s, name_pause_writing, "protocol.pause_writing() failed");
    }
}

static void finish_close(StreamObject *s) {
    s->state = CLOSED;
    drop_output(s);
    schedule_lost(s, NULL);
    close_descriptor(s);
}

/* Whatever has been written and the socket takes now; the closing steps once all is. */
static void flush(StreamObject *s) {
    while (buffered(s) > 0) {
        ssize_t n = send(s->fd, s->out + s->out_start, buffered(s), MSG_NOSIGNAL);
        if (n > 0) {
            s->out_start += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        fatal_errno(s, n < 0 ? errno : EPIPE);
        return;
    }
    if (buffered(s) == 0) {
        if (s->out_capacity > DEFAULT_HIGH_WATER)
            drop_output(s); /* a large body went out: do not keep its buffer */
        s->out_start = s->out_end = 0;
    }
    if (s->paused_writing && buffered(s) <= s->low_water) {
        s->paused_writing = 0;
        if (call_protocol(s, name_resume_writing, "protocol.resume_writing() failed") < 0)
            return;
        if (s->state != OPEN)
            return;
    }
    if (buffered(s) == 0) {
        if (s->eof_pending) {
            s->eof_pending = 0;
            if (shutdown(s->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
                fatal_errno(s, errno);
                return;
            }
        }
        if (s->closing)
            finish_close(s);
    }
}

static PyObject *Stream_write(StreamObject *s, PyObject *data) {
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (s->closing || s->state == CLOSED || view.len == 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    const char *p = view.buf;
    size_t size = (size_t)view.len;
    if (s->state == OPEN && buffered(s) == 0) {
        ssize_t n;
        do {
            n = send(s->fd, p, size, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyBuffer_Release(&view);
                fatal_errno(s, errno);
                Py_RETURN_NONE;
            }
            n = 0;
        }
        p += n;
        size -= (size_t)n;
    }
    int kept = keep_output(s, p, size);
    PyBuffer_Release(&view);
    if (kept < 0)
        return NULL;
    maybe_pause_protocol(s);
    Py_RETURN_NONE;
}

static PyObject *Stream_writelines(StreamObject *s, PyObject *lines) {
    PyObject *seq = PySequence_Fast(lines, "writelines() takes a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (s->closing || s->state == CLOSED || count == 0) {
        Py_DECREF(seq);
        Py_RETURN_NONE;
    }
    Py_buffer views[MAX_IOV];
    Py_ssize_t done = 0; /* items handled */
    int failed = 0;
    while (done < count && !failed) {
        Py_ssize_t batch = count - done < MAX_IOV ? count - done : MAX_IOV;
        struct iovec iov[MAX_IOV];
        Py_ssize_t got = 0;
        size_t total = 0;
        for (; got < batch; got++) {
            if (PyObject_GetBuffer(items[done + got], &views[got], PyBUF_SIMPLE) < 0) {
                failed = 1;
                break;
            }
            iov[got].iov_base = views[got].buf;
            iov[got].iov_len = (size_t)views[got].len;
            total += (size_t)views[got].len;
        }
        size_t sent = 0;
        if (!failed && s->state == OPEN && buffered(s) == 0 && total > 0) {
            struct msghdr message = {0};
            message.msg_iov = iov;
            message.msg_iovlen = (size_t)got;
            ssize_t n;
            do {
                n = sendmsg(s->fd, &message, MSG_NOSIGNAL);
            } while (n < 0 && errno == EINTR);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                int err = errno;
                for (Py_ssize_t i = 0; i < got; i++)
                    PyBuffer_Release(&views[i]);
                Py_DECREF(seq);
                fatal_errno(s, err);
                Py_RETURN_NONE;
            }
            sent = n > 0 ? (size_t)n : 0;
        }
        for (Py_ssize_t i = 0; i < got; i++) {
            size_t len = iov[i].iov_len;
            if (!failed) {
                if (sent >= len) {
                    sent -= len;
                } else if (keep_output(s, (const char *)iov[i].iov_base + sent, len - sent) <
                           0) {
                    failed = 1;
                } else {
                    sent = 0;
                }
            }
            PyBuffer_Release(&views[i]);
        }
        done += got;
    }
    Py_DECREF(seq);
    if (failed)
        return NULL;
    maybe_pause_protocol(s);
    Py_RETURN_NONE;
}

/* --- reading --- */

static PyObject *schedule_method(StreamObject *s, PyObject *name) {
    PyObject *method = PyObject_GetAttr((PyObject *)s, name);
    if (method == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(s->poller->call_soon, method);
    Py_DECREF(method);
    return r;
}

/* Read until the socket is drained (edge-triggered: no second notice comes otherwise),
 * handing each piece to data_received; EOF goes to eof_received. */
static void read_ready(StreamObject *s) {
    char *buffer = s->poller->read_buffer;
    s->read_pending = 0;
    for (int reads = 0;; reads++) {
        if (s->state != OPEN || s->closing || s->read_closed)
            return;
        if (s->paused_reading) {
            s->read_pending = 1;
            return;
        }
        if (reads == READS_PER_EVENT) {
            s->read_pending = 1; /* the rest a loop iteration later, after other work */
            PyObject *r = schedule_method(s, name_read_now);
            if (r == NULL)
                report_error(s, "cannot schedule a read");
            Py_XDECREF(r);
            return;
        }
        ssize_t n = recv(s->fd, buffer, READ_SIZE, 0);
        if (n > 0) {
            PyObject *data = PyBytes_FromStringAndSize(buffer, n);
            if (data == NULL) {
                report_error(s, "out of memory reading a response");
                return;
            }
            PyObject *r = PyObject_CallMethodOneArg(s->protocol, name_data_received, data);
            Py_DECREF(data);
            if (r == NULL) {
                report_error(s, "protocol.data_received() failed");
                return;
            }
            Py_DECREF(r);
            if ((size_t)n < READ_SIZE && !s->hangup)
                return; /* drained: the next bytes raise a new edge */
            continue;
        }
        if (n == 0) {
            s->read_closed = 1;
            PyObject *r = PyObject_CallMethodNoArgs(s->protocol, name_eof_received);
            if (r == NULL) {
                report_error(s, "protocol.eof_received() failed");
                return;
            }
            int keep_open = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (keep_open <= 0 && !s->closing && s->state == OPEN) {
                s->closing = 1;
                if (buffered(s) == 0)
                    finish_close(s);
            }
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        fatal_errno(s, errno);
        return;
    }
}

static void connected(StreamObject *s, uint32_t events) {
    int err = 0;
    if (events & (EPOLLERR | EPOLLHUP)) {
        socklen_t len = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0)
            err = ECONNREFUSED; /* a hang-up with no error recorded */
    }
    PyObject *on_connect = s->on_connect;
    s->on_connect = NULL;
    if (err == 0) {
        s->state = OPEN;
        s->made = 1;
        if (buffered(s) > 0)
            flush(s);
    } else {
        force_close(s, NULL);
    }
    if (on_connect == NULL)
        return;
    PyObject *code = PyLong_FromLong(err);
    PyObject *r = code ? PyObject_CallOneArg(on_connect, code) : NULL;
    Py_XDECREF(code);
    Py_DECREF(on_connect);
    if (r == NULL) {
        if (s->state == CLOSED)
            PyErr_WriteUnraisable((PyObject *)s);
        else
            report_error(s, "the connect callback failed");
        return;
    }
    Py_DECREF(r);
}

static void handle_event(StreamObject *s, uint32_t events) {
    if (s->state == CLOSED)
        return;
    if (s->state == CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        connected(s, events);
    } else if ((events & EPOLLOUT) && buffered(s) > 0) {
        flush(s);
    }
    if (s->state != OPEN)
        return;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->hangup = 1;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        read_ready(s);
}

/* --- Stream methods --- */

static PyObject *Stream_connection_lost(StreamObject *s, PyObject *exc) {
    PyObject *protocol = s->protocol;
    if (protocol == NULL)
        Py_RETURN_NONE;
    s->protocol = NULL; /* the cycle stream <-> protocol ends here */
    PyObject *r = PyObject_CallMethodOneArg(protocol, name_connection_lost, exc);
    Py_DECREF(protocol);
    return r;
}

static PyObject *Stream_read_now(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    if (s->read_pending && !s->paused_reading)
        read_ready(s);
    Py_RETURN_NONE;
}

static PyObject *Stream_pause_reading(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    s->paused_reading = 1;
    Py_RETURN_NONE;
}

static PyObject *Stream_resume_reading(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    if (!s->paused_reading)
        Py_RETURN_NONE;
    s->paused_reading = 0;
    if (s->read_pending && s->state == OPEN && !s->closing)
        return schedule_method(s, name_read_now);
    Py_RETURN_NONE;
}

static PyObject *Stream_is_reading(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    return PyBool_FromLong(s->state != CLOSED && !s->closing && !s->paused_reading);
}

static PyObject *Stream_close(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    if (s->closing || s->state == CLOSED)
        Py_RETURN_NONE;
    s->closing = 1;
    if (s->state == CONNECTING || buffered(s) == 0)
        force_close(s, NULL);
    Py_RETURN_NONE; /* else the last flush closes */
}

static PyObject *Stream_abort(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    force_close(s, NULL);
    Py_RETURN_NONE;
}

/* abort() for a protocol that ends its side itself: no connection_lost (a Handle and a
 * call a loop iteration later, for every connection behind gunicorn's sync workers). */
static PyObject *Stream_discard(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    s->made = 0;
    force_close(s, NULL);
    Py_CLEAR(s->protocol);
    Py_RETURN_NONE;
}

static PyObject *Stream_is_closing(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    return PyBool_FromLong(s->closing || s->state == CLOSED);
}

static PyObject *Stream_write_eof(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    if (s->closing || s->state == CLOSED)
        Py_RETURN_NONE;
    if (s->state == OPEN && buffered(s) == 0) {
        if (shutdown(s->fd, SHUT_WR) < 0 && errno != ENOTCONN)
            fatal_errno(s, errno);
    } else {
        s->eof_pending = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *Stream_can_write_eof(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    Py_RETURN_TRUE;
}

static PyObject *Stream_get_write_buffer_size(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSize_t(buffered(s));
}

static PyObject *Stream_set_write_buffer_limits(StreamObject *s, PyObject *args,
                                                PyObject *kwargs) {
    static char *names[] = {"high", "low", NULL};
    PyObject *high_arg = Py_None, *low_arg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO", names, &high_arg, &low_arg))
        return NULL;
    Py_ssize_t high, low;
    if (high_arg == Py_None) {
        high = low_arg == Py_None ? DEFAULT_HIGH_WATER : 4 * PyLong_AsSsize_t(low_arg);
    } else {
        high = PyLong_AsSsize_t(high_arg);
    }
    low = low_arg == Py_None ? high / 4 : PyLong_AsSsize_t(low_arg);
    if (PyErr_Occurred())
        return NULL;
    if (!(high >= low && low >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", high,
                     low);
        return NULL;
    }
    s->high_water = (size_t)high;
    s->low_water = (size_t)low;
    maybe_pause_protocol(s);
    Py_RETURN_NONE;
}

static PyObject *Stream_get_write_buffer_limits(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("(nn)", (Py_ssize_t)s->low_water, (Py_ssize_t)s->high_water);
}

static PyObject *Stream_set_protocol(StreamObject *s, PyObject *protocol) {
    Py_INCREF(protocol);
    Py_XSETREF(s->protocol, protocol);
    Py_RETURN_NONE;
}

static PyObject *Stream_get_protocol(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    PyObject *protocol = s->protocol ? s->protocol : Py_None;
    Py_INCREF(protocol);
    return protocol;
}

static PyObject *address_tuple(const struct sockaddr_storage *address) {
    char text[INET6_ADDRSTRLEN];
    if (address->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)address;
        inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
        return Py_BuildValue("(si)", text, ntohs(v4->sin_port));
    }
    if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)address;
        inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
        return Py_BuildValue("(siIk)", text, ntohs(v6->sin6_port), ntohl(v6->sin6_flowinfo),
                             (unsigned long)v6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static PyObject *Stream_get_extra_info(StreamObject *s, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"name", "default", NULL};
    const char *name;
    PyObject *fallback = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|O", names, &name, &fallback))
        return NULL;
    if (s->fd >= 0 && strcmp(name, "socket") == 0) {
        Py_INCREF(s); /* the stream answers a socket's family, fileno() and setsockopt() */
        return (PyObject *)s;
    }
    int peer = strcmp(name, "peername") == 0;
    if (s->fd >= 0 && (peer || strcmp(name, "sockname") == 0)) {
        struct sockaddr_storage address;
        socklen_t len = sizeof(address);
        int rc = peer ? getpeername(s->fd, (struct sockaddr *)&address, &len)
                      : getsockname(s->fd, (struct sockaddr *)&address, &len);
        if (rc == 0)
            return address_tuple(&address);
    }
    Py_INCREF(fallback);
    return fallback;
}

static PyObject *Stream_fileno(StreamObject *s, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(s->fd);
}

static PyObject *Stream_setsockopt(StreamObject *s, PyObject *args) {
    int level, option;
    PyObject *value;
    if (!PyArg_ParseTuple(args, "iiO:setsockopt", &level, &option, &value))
        return NULL;
    if (s->fd < 0) {
        errno = EBADF;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int rc;
    if (PyLong_Check(value)) {
        int number = (int)PyLong_AsLong(value);
        if (number == -1 && PyErr_Occurred())
            return NULL;
        rc = setsockopt(s->fd, level, option, &number, sizeof(number));
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(value, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        rc = setsockopt(s->fd, level, option, view.buf, (socklen_t)view.len);
        PyBuffer_Release(&view);
    }
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static int Stream_traverse(StreamObject *s, visitproc visit, void *arg) {
    Py_VISIT(s->poller);
    Py_VISIT(s->protocol);
    Py_VISIT(s->on_connect);
    return 0;
}

static int Stream_clear(StreamObject *s) {
    Py_CLEAR(s->protocol);
    Py_CLEAR(s->on_connect);
    return 0;
}

static void Stream_dealloc(StreamObject *s) {
    PyObject_GC_UnTrack(s);
    if (s->fd >= 0) /* cannot happen: the Poller holds every open stream */
        close(s->fd);
    Stream_clear(s);
    Py_CLEAR(s->poller);
    PyMem_Free(s->out);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef Stream_methods[] = {
    {"write", (PyCFunction)Stream_write, METH_O, "Send bytes, or keep them until the socket takes them."},
    {"writelines", (PyCFunction)Stream_writelines, METH_O, "write() each piece, in one system call."},
    {"pause_reading", (PyCFunction)Stream_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)Stream_resume_reading, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)Stream_is_reading, METH_NOARGS, NULL},
    {"close", (PyCFunction)Stream_close, METH_NOARGS, "Close once what is buffered is written."},
    {"abort", (PyCFunction)Stream_abort, METH_NOARGS, "Close at once; buffered bytes are lost."},
    {"discard", (PyCFunction)Stream_discard, METH_NOARGS,
     "abort() without connection_lost: the protocol has ended its side itself."},
    {"is_closing", (PyCFunction)Stream_is_closing, METH_NOARGS, NULL},
    {"write_eof", (PyCFunction)Stream_write_eof, METH_NOARGS, NULL},
    {"can_write_eof", (PyCFunction)Stream_can_write_eof, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)Stream_get_write_buffer_size, METH_NOARGS, NULL},
    {"set_write_buffer_limits", (PyCFunction)(void (*)(void))Stream_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"get_write_buffer_limits", (PyCFunction)Stream_get_write_buffer_limits, METH_NOARGS, NULL},
    {"set_protocol", (PyCFunction)Stream_set_protocol, METH_O, NULL},
    {"get_protocol", (PyCFunction)Stream_get_protocol, METH_NOARGS, NULL},
    {"get_extra_info", (PyCFunction)(void (*)(void))Stream_get_extra_info,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"fileno", (PyCFunction)Stream_fileno, METH_NOARGS, NULL},
    {"setsockopt", (PyCFunction)Stream_setsockopt, METH_VARARGS, NULL},
    {"_connection_lost", (PyCFunction)Stream_connection_lost, METH_O, NULL},
    {"_read_now", (PyCFunction)Stream_read_now, METH_NOARGS, NULL},
    {NULL},
};

static PyMemberDef Stream_members[] = {
    {"family", T_INT, offsetof(StreamObject, family), READONLY, NULL},
    {NULL},
};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgeproxy.upstream._stream.Stream",
    .tp_doc = "An upstream TCP connection's transport (made by Poller.connect).",
    .tp_basicsize = sizeof(StreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)Stream_dealloc,
    .tp_traverse = (traverseproc)Stream_traverse,
    .tp_clear = (inquiry)Stream_clear,
    .tp_methods = Stream_methods,
    .tp_members = Stream_members,
};

/* --- Poller --- */

static int Poller_init(PollerObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"loop", NULL};
    PyObject *loop;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", names, &loop))
        return -1;
    if (self->epfd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Poller initialised twice");
        return -1;
    }
    PyObject *call_soon = PyObject_GetAttrString(loop, "call_soon");
    if (call_soon == NULL)
        return -1;
    self->read_buffer = PyMem_Malloc(READ_SIZE);
    if (self->read_buffer == NULL) {
        Py_DECREF(call_soon);
        PyErr_NoMemory();
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        Py_DECREF(call_soon);
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Py_INCREF(loop);
    self->loop = loop;
    self->call_soon = call_soon;
    return 0;
}

static PyObject *Poller_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PollerObject *self = (PollerObject *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->epfd = -1;
    return (PyObject *)self;
}

static int fill_address(int family, const char *host, int port,
                        struct sockaddr_storage *address, socklen_t *len) {
    memset(address, 0, sizeof(*address));
    if (family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)address;
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof(*v4);
        return inet_pton(AF_INET, host, &v4->sin_addr) == 1 ? 0 : -1;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)address;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*v6);
        return inet_pton(AF_INET6, host, &v6->sin6_addr) == 1 ? 0 : -1;
    }
    return -1;
}

static PyObject *Poller_connect(PollerObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "connect(family, host, port, on_connect)");
        return NULL;
    }
    int family = (int)PyLong_AsLong(args[0]);
    const char *host = PyUnicode_AsUTF8(args[1]);
    int port = (int)PyLong_AsLong(args[2]);
    PyObject *on_connect = args[3];
    if (PyErr_Occurred())
        return NULL;
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the Poller is closed");
        return NULL;
    }
    struct sockaddr_storage address;
    socklen_t address_len;
    if (fill_address(family, host, port, &address, &address_len) < 0) {
        PyErr_Format(PyExc_ValueError, "not an IP address of family %d: %s", family, host);
        return NULL;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    StreamObject *s = PyObject_GC_New(StreamObject, &StreamType);
    if (s == NULL) {
        close(fd);
        return NULL;
    }
    Py_INCREF(self);
    s->poller = self;
    Py_INCREF(Py_None);
    s->protocol = Py_None;
    Py_INCREF(on_connect);
    s->on_connect = on_connect;
    s->fd = fd;
    s->family = family;
    s->state = CONNECTING;
    s->closing = s->made = s->paused_reading = s->read_pending = 0;
    s->read_closed = s->hangup = s->paused_writing = s->eof_pending = 0;
    s->out = NULL;
    s->out_start = s->out_end = s->out_capacity = 0;
    s->high_water = DEFAULT_HIGH_WATER;
    s->low_water = DEFAULT_HIGH_WATER / 4;
    PyObject_GC_Track(s);
    /* From here the Poller's reference (dropped by close_descriptor) is this one. */
    self->open_streams++;
    struct epoll_event event;
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    event.data.ptr = s;
    int err = 0;
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &event) < 0)
        err = errno;
    else if (connect(fd, (struct sockaddr *)&address, address_len) < 0 && errno != EINPROGRESS)
        err = errno;
    if (err != 0) {
        s->state = CLOSED;
        Py_CLEAR(s->on_connect);
        Py_INCREF(s);         /* ours, past close_descriptor */
        close_descriptor(s);
        Py_DECREF(s);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_INCREF(s); /* the caller's */
    return (PyObject *)s;
}

static PyObject *Poller_dispatch(PollerObject *self, PyObject *Py_UNUSED(ignored)) {
    struct epoll_event events[MAX_EVENTS];
    if (self->epfd < 0)
        Py_RETURN_NONE;
    int n = epoll_wait(self->epfd, events, MAX_EVENTS, 0);
    if (n < 0) {
        if (errno == EINTR)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (int i = 0; i < n; i++)
        Py_INCREF((PyObject *)events[i].data.ptr);
    for (int i = 0; i < n; i++) {
        StreamObject *s = events[i].data.ptr;
        handle_event(s, events[i].events);
        if (PyErr_Occurred()) /* (every callback's error is reported where it happens) */
            PyErr_WriteUnraisable((PyObject *)s);
    }
    for (int i = 0; i < n; i++)
        Py_DECREF((PyObject *)events[i].data.ptr);
    Py_RETURN_NONE;
}

static PyObject *Poller_fileno(PollerObject *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(self->epfd);
}

static PyObject *Poller_close(PollerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *Poller_get_open_streams(PollerObject *self, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(self->open_streams);
}

static int Poller_traverse(PollerObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->loop);
    Py_VISIT(self->call_soon);
    return 0;
}

static int Poller_clear(PollerObject *self) {
    Py_CLEAR(self->loop);
    Py_CLEAR(self->call_soon);
    return 0;
}

static void Poller_dealloc(PollerObject *self) {
    PyObject_GC_UnTrack(self);
    if (self->epfd >= 0)
        close(self->epfd);
    Poller_clear(self);
    PyMem_Free(self->read_buffer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Poller_methods[] = {
    {"connect", (PyCFunction)(void (*)(void))Poller_connect, METH_FASTCALL,
     "connect(family, host, port, on_connect) -> Stream: on_connect(errno) follows."},
    {"dispatch", (PyCFunction)Poller_dispatch, METH_NOARGS,
     "Handle the ready events (the loop's reader callback for fileno())."},
    {"fileno", (PyCFunction)Poller_fileno, METH_NOARGS, NULL},
    {"close", (PyCFunction)Poller_close, METH_NOARGS, NULL},
    {NULL},
};

static PyGetSetDef Poller_getset[] = {
    {"open_streams", (getter)Poller_get_open_streams, NULL, "streams with an open socket", NULL},
    {NULL},
};

static PyTypeObject PollerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgeproxy.upstream._stream.Poller",
    .tp_doc = "One epoll instance for a worker's upstream connections (see the module).",
    .tp_basicsize = sizeof(PollerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Poller_new,
    .tp_init = (initproc)Poller_init,
    .tp_dealloc = (destructor)Poller_dealloc,
    .tp_traverse = (traverseproc)Poller_traverse,
    .tp_clear = (inquiry)Poller_clear,
    .tp_methods = Poller_methods,
    .tp_getset = Poller_getset,
};

static struct PyModuleDef stream_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgeproxy.upstream._stream",
    .m_doc = "Upstream TCP connections on a private edge-triggered epoll.",
    .m_size = -1,
};

static int intern_names(void) {
    return (name_data_received = PyUnicode_InternFromString("data_received")) &&
                   (name_eof_received = PyUnicode_InternFromString("eof_received")) &&
                   (name_connection_lost = PyUnicode_InternFromString("connection_lost")) &&
                   (name_pause_writing = PyUnicode_InternFromString("pause_writing")) &&
                   (name_resume_writing = PyUnicode_InternFromString("resume_writing")) &&
                   (name_connection_lost_method =
                        PyUnicode_InternFromString("_connection_lost")) &&
                   (name_read_now = PyUnicode_InternFromString("_read_now"))
               ? 0
               : -1;
}

PyMODINIT_FUNC PyInit__stream(void) {
    if (intern_names() < 0 || PyType_Ready(&PollerType) < 0 || PyType_Ready(&StreamType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&stream_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&PollerType);
    if (PyModule_AddObject(module, "Poller", (PyObject *)&PollerType) < 0) {
        Py_DECREF(&PollerType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&StreamType);
    if (PyModule_AddObject(module, "Stream", (PyObject *)&StreamType) < 0) {
        Py_DECREF(&StreamType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
