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
 * Returns:
 *   n > 0       n bytes were read and all of them sent back;
 *   0           the peer closed its sending side (EOF);
 *   -1          nothing to read now (EAGAIN, EINTR);
 *   -2          the read failed (the connection is lost);
 *   (n, tail)   n bytes were read, and tail (bytes) is what could not be
 *               sent now: the caller queues it (Twisted's buffered path, which
 *               also meets any send error and disconnects).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
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

static PyMethodDef inplace_methods[] = {
    {"echo", inplace_echo, METH_O,
     "echo(fd) -> int | (int, bytes): read what the socket has and send it back."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef inplace_module = {
    PyModuleDef_HEAD_INIT,
    "echod.server._inplace",
    "The in-place echo of echod's fast TCP transport, in C.",
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
    if (PyModule_AddIntConstant(module, "READ_SIZE", READ_SIZE) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
