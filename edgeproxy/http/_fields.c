/* A response head that llhttp has accepted, taken apart in one call.
 *
 * httptools hands fields over one Python call at a time (two bytes objects and a call per
 * field); done here, the whole head costs one call. llhttp's checks come first and make
 * this simple: CRLF line ends, no folded lines, no control characters, a ':' in every
 * field line. Still, nothing here trusts its input beyond the bounds it is given: a line
 * without a ':' is refused with ValueError.
 *
 * The pure-Python fallback with the same results is `split_head` in
 * edgeproxy/http/httptools_response.py; tests/unit/test_response_parser.py runs both.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* The first CRLF in [from, end), or end. */
static const char *line_end(const char *from, const char *end) {
    const char *p = from;
    while (p < end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (cr == NULL || cr + 1 >= end)
            return end;
        if (cr[1] == '\n')
            return cr;
        p = cr + 1;
    }
    return end;
}

/* Field names as peers usually spell them, each with its shared lowercase object (the
 * table of edgeproxy.http.headers, given once by `set_names`): a name found here costs no
 * new objects, and the shared objects' hashes are computed once for every later lookup.
 * Entries are sorted by length; by_length[n] is the first of those of length n. */
#define MAX_NAMES 256
#define MAX_NAME_LENGTH 48
static PyObject *spelled_names[MAX_NAMES];
static PyObject *lower_names[MAX_NAMES];
static Py_ssize_t name_count = 0;
static Py_ssize_t by_length[MAX_NAME_LENGTH + 2];

static Py_ssize_t known(PyObject *const *table, const char *name, Py_ssize_t size) {
    if (size > MAX_NAME_LENGTH)
        return -1;
    for (Py_ssize_t i = by_length[size]; i < by_length[size + 1]; i++) {
        if (memcmp(PyBytes_AS_STRING(table[i]), name, (size_t)size) == 0)
            return i;
    }
    return -1;
}

static PyObject *lowercase(const char *name, Py_ssize_t size) {
    PyObject *lower = PyBytes_FromStringAndSize(NULL, size);
    if (lower == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(lower);
    for (Py_ssize_t i = 0; i < size; i++) {
        char c = name[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
    }
    return lower;
}

/* (a, b), taking the caller's references (NULL if either is NULL or on failure). */
static PyObject *pair(PyObject *a, PyObject *b) {
    PyObject *tuple = (a != NULL && b != NULL) ? PyTuple_New(2) : NULL;
    if (tuple == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(tuple, 0, a);
    PyTuple_SET_ITEM(tuple, 1, b);
    return tuple;
}

/* One field line [line, stop): (lowercased name, value) to headers[index], (name, value)
 * to spelled[index]; the value without the spaces and tabs around it. */
static int set_field(const char *line, const char *stop, PyObject *headers, PyObject *spelled,
                     Py_ssize_t index) {
    const char *colon = memchr(line, ':', (size_t)(stop - line));
    if (colon == NULL) {
        PyErr_SetString(PyExc_ValueError, "a field line without ':'");
        return -1;
    }
    const char *value = colon + 1;
    const char *value_end = stop;
    while (value < value_end && (*value == ' ' || *value == '\t'))
        value++;
    while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
        value_end--;
    Py_ssize_t size = colon - line;
    PyObject *name_obj, *lower;
    Py_ssize_t found = known(spelled_names, line, size);
    if (found >= 0) {
        name_obj = Py_NewRef(spelled_names[found]);
        lower = Py_NewRef(lower_names[found]);
    } else {
        name_obj = PyBytes_FromStringAndSize(line, size);
        lower = lowercase(line, size);
        if (lower != NULL) {
            found = known(lower_names, PyBytes_AS_STRING(lower), size);
            if (found >= 0)
                Py_SETREF(lower, Py_NewRef(lower_names[found]));
        }
    }
    PyObject *value_obj = PyBytes_FromStringAndSize(value, value_end - value);
    Py_XINCREF(value_obj);
    PyObject *item = pair(lower, value_obj);
    PyObject *spelled_item = pair(name_obj, value_obj);
    if (item == NULL || spelled_item == NULL) {
        Py_XDECREF(item);
        Py_XDECREF(spelled_item);
        return -1;
    }
    PyList_SET_ITEM(headers, index, item);
    PyList_SET_ITEM(spelled, index, spelled_item);
    return 0;
}

PyDoc_STRVAR(split_head_doc,
             "split_head(data, start, end) -> (status_line, headers, spelled)\n\n"
             "The head data[start:end] (without its blank line): its first line, and its\n"
             "fields as (lowercased name, value) and (name as sent, value) pairs.");

static PyObject *split_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "split_head takes data, start and end");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "split_head: data must be bytes");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || end < start || end > PyBytes_GET_SIZE(data)) {
        PyErr_SetString(PyExc_ValueError, "split_head: start and end out of range");
        return NULL;
    }
    const char *base = PyBytes_AS_STRING(data);
    const char *p = base + start;
    const char *stop = base + end;
    const char *first_end = line_end(p, stop);
    /* The field lines: as many as CRLFs after the first line (lists made to size). */
    Py_ssize_t count = 0;
    for (const char *q = first_end; q < stop; q = line_end(q + 2, stop))
        count++;
    PyObject *status_line = PyBytes_FromStringAndSize(p, first_end - p);
    PyObject *headers = PyList_New(count);
    PyObject *spelled = PyList_New(count);
    if (status_line == NULL || headers == NULL || spelled == NULL)
        goto fail;
    p = first_end;
    for (Py_ssize_t index = 0; index < count; index++) {
        p += 2; /* the CRLF that ended the previous line */
        const char *e = line_end(p, stop);
        if (set_field(p, e, headers, spelled, index) < 0)
            goto fail;
        p = e;
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL)
        goto fail;
    PyTuple_SET_ITEM(result, 0, status_line);
    PyTuple_SET_ITEM(result, 1, headers);
    PyTuple_SET_ITEM(result, 2, spelled);
    return result;
fail:
    Py_XDECREF(status_line);
    Py_XDECREF(headers);
    Py_XDECREF(spelled);
    return NULL;
}

PyDoc_STRVAR(set_names_doc,
             "set_names(spellings) -> None\n\n"
             "The usual spellings of field names, each mapped to its shared lowercase\n"
             "name (bytes to bytes; the lowercase names map to themselves).");

static PyObject *set_names(PyObject *module, PyObject *spellings) {
    (void)module;
    if (!PyDict_Check(spellings)) {
        PyErr_SetString(PyExc_TypeError, "set_names takes a dict");
        return NULL;
    }
    PyObject *items = PyDict_Items(spellings);
    if (items == NULL)
        return NULL;
    Py_ssize_t count = 0;
    PyObject *new_spelled[MAX_NAMES], *new_lower[MAX_NAMES];
    /* By length: a counting pass per length keeps this simple for a small table. */
    for (Py_ssize_t length = 0; length <= MAX_NAME_LENGTH; length++) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
            PyObject *item = PyList_GET_ITEM(items, i);
            PyObject *spelled = PyTuple_GET_ITEM(item, 0);
            PyObject *lower = PyTuple_GET_ITEM(item, 1);
            if (!PyBytes_Check(spelled) || !PyBytes_Check(lower) ||
                PyBytes_GET_SIZE(spelled) != PyBytes_GET_SIZE(lower) ||
                PyBytes_GET_SIZE(spelled) > MAX_NAME_LENGTH || count >= MAX_NAMES) {
                for (Py_ssize_t j = 0; j < count; j++) {
                    Py_DECREF(new_spelled[j]);
                    Py_DECREF(new_lower[j]);
                }
                Py_DECREF(items);
                PyErr_SetString(PyExc_ValueError, "set_names: bytes names of equal length, "
                                                  "at most 48 bytes, at most 256 of them");
                return NULL;
            }
            if (PyBytes_GET_SIZE(spelled) == length) {
                new_spelled[count] = Py_NewRef(spelled);
                new_lower[count] = Py_NewRef(lower);
                count++;
            }
        }
    }
    Py_DECREF(items);
    for (Py_ssize_t j = 0; j < name_count; j++) {
        Py_DECREF(spelled_names[j]);
        Py_DECREF(lower_names[j]);
    }
    Py_ssize_t next = 0;
    for (Py_ssize_t length = 0; length <= MAX_NAME_LENGTH + 1; length++) {
        while (next < count && PyBytes_GET_SIZE(new_spelled[next]) < length)
            next++;
        by_length[length] = next;
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        spelled_names[j] = new_spelled[j];
        lower_names[j] = new_lower[j];
    }
    name_count = count;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_names", (PyCFunction)set_names, METH_O, set_names_doc},
    {"split_head", (PyCFunction)(void (*)(void))split_head, METH_FASTCALL, split_head_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edgeproxy.http._fields",
    .m_doc = "A response head llhttp accepted, split into its status line and fields.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fields(void) { return PyModule_Create(&module_def); }
