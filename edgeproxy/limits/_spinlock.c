/* An owner-pid spin lock in shared memory: the lock of a zone's table without a system
 * call when nobody else holds it (see edgeproxy/limits/locks.py for why and when).
 *
 * The lock is one 64-bit word of a MAP_SHARED mapping: 0 when free, else the pid of the
 * process holding it. Acquire is a compare-and-swap 0 -> own pid. A waiter spins a little
 * (the holder's critical section is a few field writes), then yields the CPU; after each
 * round of spinning it asks the kernel whether the owner still exists (kill(pid, 0)), and
 * takes over the lock of a dead owner with a compare-and-swap owner -> own pid, as nginx's
 * ngx_shmtx does after a worker crash. A dead owner is gone for kill() once its parent
 * has reaped it; the master also force-releases a reaped worker's locks (force_release).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

/* Busy-wait rounds of doubling length (1, 2, 4 ... pauses) before yielding the CPU. */
#define SPIN_ROUNDS 8

/* This process's pid: getpid() is a system call in current glibc, so it is read once and
 * renewed in a child after fork (pthread_atfork). */
static int64_t own_pid;

static void renew_own_pid(void) { own_pid = (int64_t)getpid(); }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

typedef struct {
    PyObject_HEAD
    Py_buffer view; /* holds the mapping's buffer, so the word stays mapped */
    int64_t *word;  /* the owner's pid; 0: free */
} SpinLock;

static inline int try_take(int64_t *word, int64_t expected, int64_t pid) {
    return __atomic_compare_exchange_n(word, &expected, pid, 0, __ATOMIC_ACQUIRE,
                                       __ATOMIC_RELAXED);
}

static inline int owner_is_dead(int64_t owner) {
    /* EPERM: the pid exists (another user's process took it over): not dead. */
    return owner > 0 && kill((pid_t)owner, 0) == -1 && errno == ESRCH;
}

static int SpinLock_init(SpinLock *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"buffer", "offset", NULL};
    PyObject *buffer;
    Py_ssize_t offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On", kwlist, &buffer, &offset))
        return -1;
    if (self->word != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SpinLock is already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    if (offset < 0 || offset % 8 != 0 || offset + 8 > self->view.len ||
        ((uintptr_t)self->view.buf + (uintptr_t)offset) % 8 != 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError,
                        "offset must be an 8-aligned position of a word inside the buffer");
        return -1;
    }
    self->word = (int64_t *)((char *)self->view.buf + offset);
    return 0;
}

static void SpinLock_dealloc(SpinLock *self) {
    if (self->word != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_ready(SpinLock *self) {
    if (self->word == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SpinLock is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *SpinLock_acquire(SpinLock *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(self))
        return NULL;
    int64_t *word = self->word;
    int64_t pid = own_pid;
    if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0 && try_take(word, 0, pid))
        Py_RETURN_NONE;
    for (;;) {
        for (int round = 0; round < SPIN_ROUNDS; round++) {
            for (int i = 0; i < (1 << round); i++)
                cpu_relax();
            if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0 && try_take(word, 0, pid))
                Py_RETURN_NONE;
        }
        int64_t owner = __atomic_load_n(word, __ATOMIC_RELAXED);
        if (owner == 0)
            continue;
        if (owner != pid && owner_is_dead(owner) && try_take(word, owner, pid))
            Py_RETURN_NONE;
        /* The GIL is let go while yielding: another thread of this process may hold it. */
        Py_BEGIN_ALLOW_THREADS
        sched_yield();
        Py_END_ALLOW_THREADS
    }
}

static PyObject *SpinLock_release(SpinLock *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(self))
        return NULL;
    /* Only this process's hold: a lock forced away from it is not someone else's to drop. */
    int64_t pid = own_pid;
    __atomic_compare_exchange_n(self->word, &pid, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyObject *SpinLock_try_acquire(SpinLock *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(self))
        return NULL;
    return PyBool_FromLong(try_take(self->word, 0, own_pid));
}

static PyObject *SpinLock_force_release(SpinLock *self, PyObject *arg) {
    if (!check_ready(self))
        return NULL;
    long long pid = PyLong_AsLongLong(arg);
    if (pid == -1 && PyErr_Occurred())
        return NULL;
    int64_t expected = (int64_t)pid;
    return PyBool_FromLong(pid > 0 && __atomic_compare_exchange_n(self->word, &expected, 0, 0,
                                                                  __ATOMIC_RELEASE,
                                                                  __ATOMIC_RELAXED));
}

static PyObject *SpinLock_owner(SpinLock *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_ready(self))
        return NULL;
    return PyLong_FromLongLong((long long)__atomic_load_n(self->word, __ATOMIC_ACQUIRE));
}

static PyMethodDef SpinLock_methods[] = {
    {"acquire", (PyCFunction)SpinLock_acquire, METH_NOARGS,
     "Take the lock: spin, then yield, taking it over from a dead owner."},
    {"release", (PyCFunction)SpinLock_release, METH_NOARGS,
     "Give the lock back (only if this process holds it)."},
    {"try_acquire", (PyCFunction)SpinLock_try_acquire, METH_NOARGS,
     "Take the lock if it is free, without waiting: whether it was taken."},
    {"force_release", (PyCFunction)SpinLock_force_release, METH_O,
     "Free the lock if process `pid` holds it (the master, for a reaped worker): whether "
     "it did."},
    {"owner", (PyCFunction)SpinLock_owner, METH_NOARGS,
     "The pid of the process holding the lock, 0 when free."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SpinLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeproxy.limits._spinlock.SpinLock",
    .tp_doc = PyDoc_STR("SpinLock(buffer, offset): an owner-pid spin lock on the 8-byte "
                        "word at `offset` of a writable shared buffer (an mmap)."),
    .tp_basicsize = sizeof(SpinLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SpinLock_init,
    .tp_dealloc = (destructor)SpinLock_dealloc,
    .tp_methods = SpinLock_methods,
};

static struct PyModuleDef spinlock_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgeproxy.limits._spinlock",
    .m_doc = "An owner-pid spin lock in shared memory that survives a killed holder.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__spinlock(void) {
    if (PyType_Ready(&SpinLockType) < 0)
        return NULL;
    renew_own_pid();
    if (pthread_atfork(NULL, NULL, renew_own_pid) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    PyObject *module = PyModule_Create(&spinlock_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&SpinLockType);
    if (PyModule_AddObject(module, "SpinLock", (PyObject *)&SpinLockType) < 0) {
        Py_DECREF(&SpinLockType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
