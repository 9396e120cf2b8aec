/* The request path's metrics recorders in C: one call per event (a request finished, a
 * peer attempted or responded, bytes received), each adding its counts straight into the
 * worker's row of the shared metrics mapping (see edgeproxy/metrics/store.py).
 *
 * A worker is the only writer of its row, so an add is a plain read and an aligned 8-byte
 * store: no lock, no shadow copy, and every count is in shared memory the moment it is
 * made (a worker killed with SIGKILL loses nothing it counted). The clock is read here
 * too: CLOCK_REALTIME as time.time() for request times (a request's start is wall clock,
 * for the access log), CLOCK_MONOTONIC as time.monotonic() for an upstream attempt's
 * times (the access log's upstream times take the same readings).
 *
 * The pure-Python fallback with the same behaviour is in edgeproxy/metrics/recorder.py;
 * tests/unit/test_metrics_recorders.py runs both.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <time.h>

/* Histogram slots: the bucket counts, +Inf, then the sum. The bounds (seconds) are
 * recorder.py's BUCKETS; a unit test checks that both agree. */
#define BUCKET_COUNT 11
#define INF_SLOT BUCKET_COUNT
#define SUM_SLOT (BUCKET_COUNT + 1)
#define HISTOGRAM_SLOTS (SUM_SLOT + 1)

static const double bounds[BUCKET_COUNT] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                            0.5,   1.0,  2.5,   5.0,  10.0};

static inline Py_ssize_t bucket_of(double seconds) {
    Py_ssize_t i = 0;
    while (i < BUCKET_COUNT && !(seconds <= bounds[i]))
        i++;
    return i; /* INF_SLOT when beyond the last bound (or NaN) */
}

static inline double clock_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One slot += amount: the worker's own row, so a plain read; the store is one aligned
 * 8-byte write, which a scrape in another process never sees half done. */
static inline void add(double *slot, double amount) {
    double value = *slot + amount;
    __atomic_store(slot, &value, __ATOMIC_RELAXED);
}

/* What every recorder holds: the row's buffer (kept, so the mapping stays alive) and its
 * slots as doubles. */
#define ROW_HEAD                                                                             \
    PyObject_HEAD Py_buffer view;                                                           \
    double *slots;                                                                           \
    Py_ssize_t base;

typedef struct {
    ROW_HEAD
} RowObject;

/* Take `row`'s buffer: writable, contiguous doubles, with `needed` slots from `base`. */
static int take_row(RowObject *self, PyObject *row, Py_ssize_t base, Py_ssize_t needed) {
    if (self->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the recorder is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(row, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (self->view.len % 8 != 0 || (uintptr_t)self->view.buf % 8 != 0 || base < 0 ||
        needed > self->view.len / 8 || base > self->view.len / 8 - needed) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError,
                        "the row must be aligned float64 slots holding the recorder's block");
        return -1;
    }
    self->slots = (double *)self->view.buf;
    self->base = base;
    return 0;
}

static void Row_dealloc(RowObject *self) {
    if (self->slots != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(void *self) {
    if (((RowObject *)self)->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the recorder is not initialised");
        return 0;
    }
    return 1;
}

/* Arguments: C calls (METH_FASTCALL) with positional arguments only. */
static int check_nargs(Py_ssize_t nargs, Py_ssize_t expected, const char *name) {
    if (nargs == expected)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd argument(s) (%zd given)", name, expected,
                 nargs);
    return 0;
}

static inline int as_double(PyObject *arg, double *out) {
    *out = PyFloat_CheckExact(arg) ? PyFloat_AS_DOUBLE(arg) : PyFloat_AsDouble(arg);
    return !(*out == -1.0 && PyErr_Occurred());
}

static inline int as_long(PyObject *arg, long long *out) {
    *out = PyLong_AsLongLong(arg);
    return !(*out == -1 && PyErr_Occurred());
}

static PyMemberDef Row_members[] = {
    {"base", T_PYSSIZET, offsetof(RowObject, base), READONLY,
     "the first slot of the recorder's block"},
    {NULL, 0, 0, 0, NULL},
};

/* --- Traffic: bytes read from clients (base), response body bytes (base + 1) --- */

/* TrafficCounter(row, base) and ZoneCounter(row, base): a block of two slots. */
static int two_slots_init(RowObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"row", "base", NULL};
    PyObject *row;
    Py_ssize_t base;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On", kwlist, &row, &base))
        return -1;
    return take_row(self, row, base, 2);
}

static PyObject *Traffic_received(RowObject *self, PyObject *arg) {
    long long size;
    if (!ready(self) || !as_long(arg, &size))
        return NULL;
    add(&self->slots[self->base], (double)size);
    Py_RETURN_NONE;
}

static PyMethodDef Traffic_methods[] = {
    {"received", (PyCFunction)Traffic_received, METH_O, "received(size): bytes read"},
    {NULL, NULL, 0, NULL},
};

/* --- RequestStats: a route's status classes (base: 1xx .. 5xx), its server's request
 * time histogram, and the body bytes sent (the traffic block's second slot) --- */

typedef struct {
    ROW_HEAD
    Py_ssize_t time;
    Py_ssize_t sent;
} RequestObject;

static int Request_init(RequestObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"row", "status", "time_base", "traffic", NULL};
    PyObject *row;
    Py_ssize_t status, time_base, traffic;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onnn", kwlist, &row, &status, &time_base,
                                     &traffic))
        return -1;
    if (take_row((RowObject *)self, row, status, 5) < 0)
        return -1;
    Py_ssize_t slots = self->view.len / 8;
    if (time_base < 0 || time_base > slots - HISTOGRAM_SLOTS || traffic < 0 ||
        traffic > slots - 2) {
        PyBuffer_Release(&self->view);
        self->slots = NULL;
        PyErr_SetString(PyExc_ValueError, "a block lies outside the row");
        return -1;
    }
    self->time = time_base;
    self->sent = traffic + 1;
    return 0;
}

static PyObject *Request_finished(RequestObject *self, PyObject *const *args,
                                  Py_ssize_t nargs) {
    long long status, body_bytes;
    double started;
    if (!ready(self) || !check_nargs(nargs, 3, "finished") || !as_long(args[0], &status) ||
        !as_double(args[1], &started) || !as_long(args[2], &body_bytes))
        return NULL;
    long long klass = status / 100;
    if (klass < 1 || klass > 5)
        klass = 5;
    double *slots = self->slots;
    add(&slots[self->base + klass - 1], 1.0);
    double seconds = clock_seconds(CLOCK_REALTIME) - started;
    add(&slots[self->time + bucket_of(seconds)], 1.0);
    add(&slots[self->time + SUM_SLOT], seconds);
    add(&slots[self->sent], (double)body_bytes);
    Py_RETURN_NONE;
}

static PyMethodDef Request_methods[] = {
    {"finished", (PyCFunction)(void (*)(void))Request_finished, METH_FASTCALL,
     "finished(status, started, body_bytes): a request answered; `started` is its wall "
     "clock start (time.time())"},
    {NULL, NULL, 0, NULL},
};

/* --- PeerStats: a peer's requests (base), failures (+1), retries (+2), in flight (+3);
 * its pool's upstream response time histogram --- */

typedef struct {
    ROW_HEAD
    Py_ssize_t time;
} PeerObject;

static int Peer_init(PeerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"row", "base", "time_base", NULL};
    PyObject *row;
    Py_ssize_t base, time_base;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onn", kwlist, &row, &base, &time_base))
        return -1;
    if (take_row((RowObject *)self, row, base, 4) < 0)
        return -1;
    if (time_base < 0 || time_base > self->view.len / 8 - HISTOGRAM_SLOTS) {
        PyBuffer_Release(&self->view);
        self->slots = NULL;
        PyErr_SetString(PyExc_ValueError, "a block lies outside the row");
        return -1;
    }
    self->time = time_base;
    return 0;
}

static PyObject *Peer_attempt(PeerObject *self, PyObject *arg) {
    if (!ready(self))
        return NULL;
    int retry = PyObject_IsTrue(arg);
    if (retry < 0)
        return NULL;
    add(&self->slots[self->base], 1.0);
    if (retry)
        add(&self->slots[self->base + 2], 1.0);
    return PyFloat_FromDouble(clock_seconds(CLOCK_MONOTONIC));
}

static PyObject *Peer_failed(PeerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!ready(self))
        return NULL;
    add(&self->slots[self->base + 1], 1.0);
    Py_RETURN_NONE;
}

static PyObject *Peer_responded(PeerObject *self, PyObject *arg) {
    double started;
    if (!ready(self) || !as_double(arg, &started))
        return NULL;
    double now = clock_seconds(CLOCK_MONOTONIC);
    double seconds = now - started;
    add(&self->slots[self->time + bucket_of(seconds)], 1.0);
    add(&self->slots[self->time + SUM_SLOT], seconds);
    return PyFloat_FromDouble(now);
}

static PyObject *Peer_in_flight(PeerObject *self, PyObject *arg) {
    long long active;
    if (!ready(self) || !as_long(arg, &active))
        return NULL;
    double value = (double)active;
    __atomic_store(&self->slots[self->base + 3], &value, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyMethodDef Peer_methods[] = {
    {"attempt", (PyCFunction)Peer_attempt, METH_O,
     "attempt(retry): a request goes to the peer; returns time.monotonic() now"},
    {"failed", (PyCFunction)Peer_failed, METH_NOARGS, "failed(): an attempt failed"},
    {"responded", (PyCFunction)Peer_responded, METH_O,
     "responded(started): the response is complete (`started`: what attempt returned); "
     "returns time.monotonic() now"},
    {"in_flight", (PyCFunction)Peer_in_flight, METH_O,
     "in_flight(active): the requests in flight to the peer (a gauge)"},
    {NULL, NULL, 0, NULL},
};

/* --- ZoneStats: a limit zone's refusals (base) and delays (+1) --- */

static PyObject *Zone_rejected(RowObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!ready(self))
        return NULL;
    add(&self->slots[self->base], 1.0);
    Py_RETURN_NONE;
}

static PyObject *Zone_delayed(RowObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!ready(self))
        return NULL;
    add(&self->slots[self->base + 1], 1.0);
    Py_RETURN_NONE;
}

static PyMethodDef Zone_methods[] = {
    {"rejected", (PyCFunction)Zone_rejected, METH_NOARGS, "rejected(): a request refused"},
    {"delayed", (PyCFunction)Zone_delayed, METH_NOARGS, "delayed(): a request delayed"},
    {NULL, NULL, 0, NULL},
};

/* --- the module --- */

static PyObject *module_bucket(PyObject *Py_UNUSED(module), PyObject *arg) {
    double seconds;
    if (!as_double(arg, &seconds))
        return NULL;
    return PyLong_FromSsize_t(bucket_of(seconds));
}

static PyMethodDef module_methods[] = {
    {"bucket", (PyCFunction)module_bucket, METH_O,
     "bucket(seconds): the histogram slot the recorders count an observation in"},
    {NULL, NULL, 0, NULL},
};

#define RECORDER_TYPE(cname, pyname, object, doc)                                            \
    static PyTypeObject cname = {                                                            \
        PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgeproxy.metrics._rowstats." pyname,      \
        .tp_doc = PyDoc_STR(doc),                                                            \
        .tp_basicsize = sizeof(object),                                                      \
        .tp_flags = Py_TPFLAGS_DEFAULT,                                                      \
        .tp_new = PyType_GenericNew,                                                         \
        .tp_dealloc = (destructor)Row_dealloc,                                               \
        .tp_members = Row_members,                                                           \
    }

RECORDER_TYPE(TrafficType, "TrafficCounter", RowObject,
              "TrafficCounter(row, base): bytes received and sent, in a worker's row");
RECORDER_TYPE(RequestType, "RequestCounter", RequestObject,
              "RequestCounter(row, status, time_base, traffic): a route's requests");
RECORDER_TYPE(PeerType, "PeerCounter", PeerObject,
              "PeerCounter(row, base, time_base): an upstream peer's requests and times");
RECORDER_TYPE(ZoneType, "ZoneCounter", RowObject,
              "ZoneCounter(row, base): a limit zone's refusals and delays");

static struct PyModuleDef rowstats_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgeproxy.metrics._rowstats",
    .m_doc = "Metrics recorders that add each event's counts into a shared row at once.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int add_type(PyObject *module, PyTypeObject *type, const char *name, initproc init,
                    PyMethodDef *methods) {
    type->tp_init = init;
    type->tp_methods = methods;
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__rowstats(void) {
    PyObject *module = PyModule_Create(&rowstats_module);
    if (module == NULL)
        return NULL;
    if (add_type(module, &TrafficType, "TrafficCounter", (initproc)two_slots_init,
                 Traffic_methods) < 0 ||
        add_type(module, &RequestType, "RequestCounter", (initproc)Request_init,
                 Request_methods) < 0 ||
        add_type(module, &PeerType, "PeerCounter", (initproc)Peer_init, Peer_methods) < 0 ||
        add_type(module, &ZoneType, "ZoneCounter", (initproc)two_slots_init, Zone_methods) < 0 ||
        PyModule_AddIntConstant(module, "SUM_SLOT", SUM_SLOT) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
