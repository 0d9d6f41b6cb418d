/*
 * echod.server._inplace: the in-place echo of echod.server.fastpath.EchoTCPServer, in C.
 *
 * echo(fd) reads what a non-blocking stream socket has (up to 256 KiB) into
 * a buffer of this module and sends it straight back: one call from Python
 * per message, no bytes object when the whole echo was sent, no argument
 * tuples.  What Python's socket.recv and socket.send would cost around the
 * same two system calls is half of echod's own CPU time per small message.
 *
 * The GIL is held throughout: both calls are non-blocking, and holding it is
 * what makes one static buffer safe (no other thread can enter meanwhile).
 *
 * echo() returns:
 *   n > 0       n bytes were read and all of them sent back;
 *   0           the peer closed its sending side (EOF);
 *   -1          nothing to read now (EAGAIN, EINTR);
 *   -2          the read failed (the connection is lost);
 *   (n, tail)   n bytes were read, and tail (bytes) is what could not be
 *               sent now: the caller queues it (Twisted's buffered path, which
 *               also meets any send error and disconnects).
 *
 * DatagramBatch(fd, capacity) is the batched UDP echo of
 * echod.server.datagram: receive() takes up to capacity datagrams with one
 * recvmmsg into buffers of its own and returns (host, port, size) for each;
 * the caller decides which get their echo (the guards are Python's, stated
 * once in echod.server.limits); send(verdicts) sends those back, whole, to
 * their senders with sendmmsg, from the same buffers.  The datagrams never
 * become Python objects.  Nothing blocks: a send the kernel refuses (full
 * send buffer, or any other error) is reported, and the datagram dropped.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define READ_SIZE (256 * 1024)

static char buffer[READ_SIZE];

static PyObject *
inplace_echo(PyObject *module, PyObject *arg)
{
    (void)module;
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return NULL;
    }
    ssize_t got = recv((int)fd, buffer, READ_SIZE, 0);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return PyLong_FromLong(-1);
        }
        return PyLong_FromLong(-2);
    }
    if (got == 0) {
        return PyLong_FromLong(0);
    }
    ssize_t sent = send((int)fd, buffer, (size_t)got, MSG_NOSIGNAL);
    if (sent == got) {
        return PyLong_FromSsize_t(got);
    }
    if (sent < 0) {
        /* EAGAIN: all of it waits; any other error: Twisted's path meets it
         * again when it sends, and disconnects the way it always does. */
        sent = 0;
    }
    return Py_BuildValue("(ny#)", (Py_ssize_t)got, buffer + sent, (Py_ssize_t)(got - sent));
}


/* --- DatagramBatch ------------------------------------------------------- */

/* Room for the largest UDP payload (65,527 bytes over IPv6): never truncated. */
#define DATAGRAM_ROOM 65536
#define MAX_CAPACITY 1024

typedef struct {
    PyObject_HEAD
    int fd;
    unsigned int capacity;
    unsigned int count;             /* datagrams held since the last receive() */
    char *buffers;                  /* capacity * DATAGRAM_ROOM, touched as used */
    struct mmsghdr *incoming;
    struct iovec *incomingIov;
    struct sockaddr_storage *names;
    struct mmsghdr *outgoing;
    struct iovec *outgoingIov;
    unsigned int *outgoingIndex;    /* which datagram each outgoing message is */
    /* The last source address turned into a string: floods come from few. */
    unsigned char lastAddress[16];
    int lastFamily;
    PyObject *lastHost;
} DatagramBatch;

static void
batch_free(DatagramBatch *self)
{
    free(self->buffers);
    free(self->incoming);
    free(self->incomingIov);
    free(self->names);
    free(self->outgoing);
    free(self->outgoingIov);
    free(self->outgoingIndex);
    self->buffers = NULL;
    self->incoming = self->outgoing = NULL;
    self->incomingIov = self->outgoingIov = NULL;
    self->names = NULL;
    self->outgoingIndex = NULL;
}

static void
batch_dealloc(DatagramBatch *self)
{
    batch_free(self);
    Py_CLEAR(self->lastHost);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
batch_init(DatagramBatch *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "capacity", NULL};
    int fd;
    unsigned int capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iI", keywords, &fd, &capacity)) {
        return -1;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return -1;
    }
    if (capacity < 1 || capacity > MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError, "capacity must be 1 to %d", MAX_CAPACITY);
        return -1;
    }
    batch_free(self);
    self->fd = fd;
    self->capacity = capacity;
    self->count = 0;
    /* calloc'd buffers are backed by pages only where a datagram was written. */
    self->buffers = calloc(capacity, DATAGRAM_ROOM);
    self->incoming = calloc(capacity, sizeof(struct mmsghdr));
    self->incomingIov = calloc(capacity, sizeof(struct iovec));
    self->names = calloc(capacity, sizeof(struct sockaddr_storage));
    self->outgoing = calloc(capacity, sizeof(struct mmsghdr));
    self->outgoingIov = calloc(capacity, sizeof(struct iovec));
    self->outgoingIndex = calloc(capacity, sizeof(unsigned int));
    if (!self->buffers || !self->incoming || !self->incomingIov || !self->names ||
        !self->outgoing || !self->outgoingIov || !self->outgoingIndex) {
        batch_free(self);
        PyErr_NoMemory();
        return -1;
    }
    for (unsigned int i = 0; i < capacity; i++) {
        self->incomingIov[i].iov_base = self->buffers + (size_t)i * DATAGRAM_ROOM;
        self->incomingIov[i].iov_len = DATAGRAM_ROOM;
        self->incoming[i].msg_hdr.msg_iov = &self->incomingIov[i];
        self->incoming[i].msg_hdr.msg_iovlen = 1;
        self->incoming[i].msg_hdr.msg_name = &self->names[i];
    }
    return 0;
}

/* The source of datagram i as a str, as Python's recvfrom spells it. */
static PyObject *
batch_host(DatagramBatch *self, unsigned int i, int *port)
{
    struct sockaddr_storage *name = &self->names[i];
    const void *address;
    size_t length;
    if (name->ss_family == AF_INET6) {
        struct sockaddr_in6 *six = (struct sockaddr_in6 *)name;
        address = &six->sin6_addr;
        length = 16;
        *port = ntohs(six->sin6_port);
    } else if (name->ss_family == AF_INET) {
        struct sockaddr_in *four = (struct sockaddr_in *)name;
        address = &four->sin_addr;
        length = 4;
        *port = ntohs(four->sin_port);
    } else {
        *port = 0;
        return PyUnicode_FromString("");
    }
    if (self->lastHost != NULL && self->lastFamily == name->ss_family &&
        memcmp(self->lastAddress, address, length) == 0) {
        Py_INCREF(self->lastHost);
        return self->lastHost;
    }
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(name->ss_family, address, text, sizeof(text)) == NULL) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *host = PyUnicode_FromString(text);
    if (host == NULL) {
        return NULL;
    }
    Py_XSETREF(self->lastHost, Py_NewRef(host));
    self->lastFamily = name->ss_family;
    memcpy(self->lastAddress, address, length);
    return host;
}

static PyObject *
batch_receive(DatagramBatch *self, PyObject *Py_UNUSED(ignored))
{
    if (self->buffers == NULL) {
        PyErr_SetString(PyExc_ValueError, "DatagramBatch was not initialised");
        return NULL;
    }
    self->count = 0;
    for (unsigned int i = 0; i < self->capacity; i++) {
        self->incoming[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        self->incoming[i].msg_hdr.msg_controllen = 0;
        self->incoming[i].msg_hdr.msg_flags = 0;
    }
    int got;
    do {
        got = recvmmsg(self->fd, self->incoming, self->capacity, MSG_DONTWAIT, NULL);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return PyList_New(0);
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *sources = PyList_New(got);
    if (sources == NULL) {
        return NULL;
    }
    for (int i = 0; i < got; i++) {
        int port;
        PyObject *host = batch_host(self, (unsigned int)i, &port);
        if (host == NULL) {
            Py_DECREF(sources);
            return NULL;
        }
        PyObject *source = Py_BuildValue("(Nii)", host, port, (int)self->incoming[i].msg_len);
        if (source == NULL) {
            Py_DECREF(sources);
            return NULL;
        }
        PyList_SET_ITEM(sources, i, source);
    }
    self->count = (unsigned int)got;
    return sources;
}

static PyObject *
batch_send(DatagramBatch *self, PyObject *arg)
{
    Py_buffer verdicts;
    if (PyObject_GetBuffer(arg, &verdicts, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if ((size_t)verdicts.len < self->count) {
        PyBuffer_Release(&verdicts);
        PyErr_SetString(PyExc_ValueError, "fewer verdicts than datagrams");
        return NULL;
    }
    const unsigned char *verdict = verdicts.buf;
    unsigned int outgoing = 0;
    for (unsigned int i = 0; i < self->count; i++) {
        if (verdict[i] != 0) {
            continue;
        }
        struct mmsghdr *message = &self->outgoing[outgoing];
        memset(&message->msg_hdr, 0, sizeof(message->msg_hdr));
        self->outgoingIov[outgoing].iov_base = self->incomingIov[i].iov_base;
        self->outgoingIov[outgoing].iov_len = self->incoming[i].msg_len;
        message->msg_hdr.msg_iov = &self->outgoingIov[outgoing];
        message->msg_hdr.msg_iovlen = 1;
        message->msg_hdr.msg_name = &self->names[i];
        message->msg_hdr.msg_namelen = self->incoming[i].msg_hdr.msg_namelen;
        self->outgoingIndex[outgoing] = i;
        outgoing++;
    }
    PyBuffer_Release(&verdicts);
    self->count = 0;
    /* A message the kernel refuses is skipped (sendmmsg stops there and
     * reports it on the next call); the rest are sent on. */
    PyObject *failures = NULL;
    unsigned int start = 0;
    while (start < outgoing) {
        int sent = sendmmsg(self->fd, self->outgoing + start, outgoing - start,
                            MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent > 0) {
            start += (unsigned int)sent;
            continue;
        }
        if (sent < 0 && errno == EINTR) {
            continue;
        }
        int error = sent < 0 ? errno : EAGAIN;
        if (failures == NULL && (failures = PyList_New(0)) == NULL) {
            return NULL;
        }
        PyObject *failure = Py_BuildValue("(Ii)", self->outgoingIndex[start], error);
        if (failure == NULL || PyList_Append(failures, failure) < 0) {
            Py_XDECREF(failure);
            Py_DECREF(failures);
            return NULL;
        }
        Py_DECREF(failure);
        start++;
    }
    if (failures == NULL) {
        return PyTuple_New(0);
    }
    return failures;
}

static PyMethodDef batch_methods[] = {
    {"receive", (PyCFunction)batch_receive, METH_NOARGS,
     "receive() -> list[(host, port, size)]: the datagrams waiting now, up to capacity."},
    {"send", (PyCFunction)batch_send, METH_O,
     "send(verdicts) -> [(index, errno)]: echo datagram i where verdicts[i] == 0."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DatagramBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "echod.server._inplace.DatagramBatch",
    .tp_doc = "Datagrams received and echoed in batches (recvmmsg, sendmmsg).",
    .tp_basicsize = sizeof(DatagramBatch),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)batch_init,
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_methods = batch_methods,
};

static PyMethodDef inplace_methods[] = {
    {"echo", inplace_echo, METH_O,
     "echo(fd) -> int | (int, bytes): read what the socket has and send it back."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef inplace_module = {
    PyModuleDef_HEAD_INIT,
    "echod.server._inplace",
    "The in-place echo of echod's fast TCP transport and the batched UDP echo, in C.",
    -1,
    inplace_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__inplace(void)
{
    PyObject *module = PyModule_Create(&inplace_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "READ_SIZE", READ_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_CAPACITY", MAX_CAPACITY) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyType_Ready(&DatagramBatchType) < 0 ||
        PyModule_AddObjectRef(module, "DatagramBatch", (PyObject *)&DatagramBatchType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
