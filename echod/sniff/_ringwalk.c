/*
 * echod.sniff._ringwalk: walks the frames of a TPACKET_V3 ring block in C.
 *
 * The Python walker of echod.sniff.linux spends about a microsecond per frame
 * in struct.unpack_from, slicing and packing, several times what tcpdump
 * spends.  Here the same walk happens in C, once per batch of frames:
 *
 * records(ring, offset, end, count, snaplen, divisor, cooked, room)
 *     writes the pcap records (16-byte header + data) of up to count frames
 *     starting at offset into one bytes object, and returns
 *     (records, taken, offset after them).  It stops before the first record
 *     that would take the bytes written past room (room < 0: no limit), so
 *     that the caller rotates its files at record boundaries, exactly where
 *     it would have one record at a time.
 *
 * frames(ring, offset, end, count, snaplen, cooked, deliver)
 *     calls deliver(seconds, nanoseconds, data, wireLength, ifindex, pkttype)
 *     for up to count frames, and returns (taken, offset after them, error):
 *     error is None, or the exception deliver raised (the walk stops after
 *     that frame, so that the caller can report it and go on).
 *
 * What a frame becomes is what the Python walker makes of it, byte for byte:
 * a VLAN tag the kernel stripped (TP_STATUS_VLAN_VALID) goes back after the
 * Ethernet addresses, or after the LINUX_SLL2 header built for a cooked
 * socket; a frame so lengthened, and every cooked one, is cut to snaplen.
 *
 * The ring is the kernel's, shared: every offset and length read from it is
 * checked against the block's end (end, itself within the mapping), and an
 * inconsistent frame raises ValueError instead of reading past it.  The GIL
 * is held throughout; the buffer export keeps the mapping from being closed
 * meanwhile.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* <linux/if_packet.h> */
#define TP_STATUS_VLAN_VALID 0x10
#define TP_STATUS_VLAN_TPID_VALID 0x40
#define ETH_P_8021Q 0x8100
/* struct tpacket3_hdr (48 bytes) followed by struct sockaddr_ll (20). */
#define FRAME_HEADER 68
#define PCAP_RECORD 16
#define SLL2_HEADER 20
#define VLAN_TAG 4
#define ETHER_ADDRESSES 12

typedef struct {
    uint32_t step, seconds, nanoseconds, caplen, length, status;
    uint16_t tci, tpid;
    int32_t ifindex;
    uint16_t hatype;
    uint8_t pkttype, halen;
    const uint8_t *protocol; /* 2 bytes, network order */
    const uint8_t *address;  /* 8 bytes */
    const uint8_t *data;     /* caplen bytes */
} Frame;

static uint32_t
load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint16_t
load16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void
storeLE32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void
storeBE16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Read the frame at offset (within [0, end)); -1 with ValueError set if its
 * header or data would lie outside. */
static int
readFrame(const uint8_t *ring, Py_ssize_t offset, Py_ssize_t end, Frame *f)
{
    if (offset < 0 || offset > end - FRAME_HEADER) {
        PyErr_Format(PyExc_ValueError,
                     "a frame header at offset %zd lies outside its block (which ends at %zd)",
                     offset, end);
        return -1;
    }
    const uint8_t *h = ring + offset;
    f->step = load32(h);
    f->seconds = load32(h + 4);
    f->nanoseconds = load32(h + 8);
    f->caplen = load32(h + 12);
    f->length = load32(h + 16);
    f->status = load32(h + 20);
    uint16_t mac = load16(h + 24);
    f->tci = (uint16_t)load32(h + 32);
    f->tpid = load16(h + 36);
    f->protocol = h + 50;
    f->ifindex = (int32_t)load32(h + 52);
    f->hatype = load16(h + 56);
    f->pkttype = h[58];
    f->halen = h[59];
    f->address = h + 60;
    if ((Py_ssize_t)f->caplen > end - offset - mac) {
        PyErr_Format(PyExc_ValueError,
                     "the %u bytes of the frame at offset %zd (data at +%u) lie outside its "
                     "block (which ends at %zd)",
                     f->caplen, offset, (unsigned)mac, end);
        return -1;
    }
    f->data = h + mac;
    return 0;
}

/* The size of what the frame becomes (before any cut to snaplen), and the
 * wire length to record. */
static Py_ssize_t
frameSize(const Frame *f, int cooked, uint32_t *wire)
{
    Py_ssize_t size = f->caplen;
    uint32_t length = f->length;
    if (f->status & TP_STATUS_VLAN_VALID) {
        size += VLAN_TAG;
        length += VLAN_TAG;
    }
    if (cooked) {
        size += SLL2_HEADER;
        length += SLL2_HEADER;
    }
    *wire = length;
    return size;
}

/* How many bytes of the frame are kept: the Python walker cuts a frame to
 * snaplen only where it rebuilt it. */
static Py_ssize_t
keptSize(const Frame *f, int cooked, Py_ssize_t snaplen, uint32_t *wire)
{
    Py_ssize_t size = frameSize(f, cooked, wire);
    if ((cooked || f->status & TP_STATUS_VLAN_VALID) && size > snaplen) {
        size = snaplen;
    }
    return size;
}

/* Copy up to n bytes of src to *out, within what *left allows. */
static void
put(uint8_t **out, Py_ssize_t *left, const uint8_t *src, Py_ssize_t n)
{
    if (n > *left) {
        n = *left;
    }
    if (n > 0) {
        memcpy(*out, src, (size_t)n);
        *out += n;
        *left -= n;
    }
}

/* Write the first `kept` bytes of what the frame becomes. */
static void
writeFrame(uint8_t *out, const Frame *f, int cooked, Py_ssize_t kept)
{
    Py_ssize_t left = kept;
    int tagged = (f->status & TP_STATUS_VLAN_VALID) != 0;
    uint16_t tpid = (f->status & TP_STATUS_VLAN_TPID_VALID) ? f->tpid : ETH_P_8021Q;
    if (cooked) {
        uint8_t header[SLL2_HEADER];
        if (tagged) {
            storeBE16(header, tpid);
        } else {
            memcpy(header, f->protocol, 2);
        }
        header[2] = header[3] = 0;
        uint32_t index = (uint32_t)f->ifindex;
        header[4] = (uint8_t)(index >> 24);
        header[5] = (uint8_t)(index >> 16);
        header[6] = (uint8_t)(index >> 8);
        header[7] = (uint8_t)index;
        storeBE16(header + 8, f->hatype);
        header[10] = f->pkttype;
        header[11] = f->halen;
        memcpy(header + 12, f->address, 8);
        put(&out, &left, header, SLL2_HEADER);
        if (tagged) {
            uint8_t tag[VLAN_TAG];
            storeBE16(tag, f->tci);
            memcpy(tag + 2, f->protocol, 2);
            put(&out, &left, tag, VLAN_TAG);
        }
        put(&out, &left, f->data, f->caplen);
    } else if (tagged) {
        Py_ssize_t before = f->caplen < ETHER_ADDRESSES ? f->caplen : ETHER_ADDRESSES;
        uint8_t tag[VLAN_TAG];
        storeBE16(tag, tpid);
        storeBE16(tag + 2, f->tci);
        put(&out, &left, f->data, before);
        put(&out, &left, tag, VLAN_TAG);
        put(&out, &left, f->data + before, (Py_ssize_t)f->caplen - before);
    } else {
        put(&out, &left, f->data, f->caplen);
    }
}

/* The ring as a buffer, and the block's end checked against its size. */
static int
openRing(PyObject *ring, Py_buffer *view, Py_ssize_t end)
{
    if (PyObject_GetBuffer(ring, view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (end < 0 || end > view->len) {
        PyErr_Format(PyExc_ValueError, "a block ending at %zd lies outside the %zd-byte ring",
                     end, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
ringwalk_records(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *ring;
    Py_ssize_t offset, end, count, snaplen, divisor, room;
    int cooked;
    if (!PyArg_ParseTuple(args, "Onnnnnpn:records", &ring, &offset, &end, &count, &snaplen,
                          &divisor, &cooked, &room)) {
        return NULL;
    }
    if (divisor <= 0 || snaplen < 0) {
        PyErr_SetString(PyExc_ValueError, "divisor must be positive and snaplen not negative");
        return NULL;
    }
    Py_buffer view;
    if (openRing(ring, &view, end) < 0) {
        return NULL;
    }
    const uint8_t *base = view.buf;
    /* First pass: check the frames, and size what fits. */
    Py_ssize_t total = 0, taken = 0, at = offset;
    Frame f;
    uint32_t wire;
    while (taken < count) {
        if (readFrame(base, at, end, &f) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_ssize_t size = PCAP_RECORD + keptSize(&f, cooked, snaplen, &wire);
        if (room >= 0 && total + size > room) {
            break;
        }
        total += size;
        taken++;
        at += f.step;
    }
    PyObject *records = PyBytes_FromStringAndSize(NULL, total);
    if (records == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* Second pass: write them (the frames were checked above). */
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(records);
    at = offset;
    for (Py_ssize_t i = 0; i < taken; i++) {
        readFrame(base, at, end, &f);
        Py_ssize_t kept = keptSize(&f, cooked, snaplen, &wire);
        storeLE32(out, f.seconds);
        storeLE32(out + 4, (uint32_t)(f.nanoseconds / (uint32_t)divisor));
        storeLE32(out + 8, (uint32_t)kept);
        storeLE32(out + 12, wire);
        writeFrame(out + PCAP_RECORD, &f, cooked, kept);
        out += PCAP_RECORD + kept;
        at += f.step;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nnn)", records, taken, at);
}

static PyObject *
ringwalk_frames(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *ring, *deliver;
    Py_ssize_t offset, end, count, snaplen;
    int cooked;
    if (!PyArg_ParseTuple(args, "OnnnnpO:frames", &ring, &offset, &end, &count, &snaplen,
                          &cooked, &deliver)) {
        return NULL;
    }
    if (snaplen < 0) {
        PyErr_SetString(PyExc_ValueError, "snaplen must not be negative");
        return NULL;
    }
    Py_buffer view;
    if (openRing(ring, &view, end) < 0) {
        return NULL;
    }
    const uint8_t *base = view.buf;
    Py_ssize_t taken = 0, at = offset;
    PyObject *error = NULL;
    Frame f;
    uint32_t wire;
    while (taken < count) {
        if (readFrame(base, at, end, &f) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_ssize_t kept = keptSize(&f, cooked, snaplen, &wire);
        PyObject *data = PyBytes_FromStringAndSize(NULL, kept);
        if (data == NULL) {
            PyBuffer_Release(&view);
            return NULL;
        }
        writeFrame((uint8_t *)PyBytes_AS_STRING(data), &f, cooked, kept);
        PyObject *call[6] = {
            PyLong_FromUnsignedLong(f.seconds), PyLong_FromUnsignedLong(f.nanoseconds), data,
            PyLong_FromUnsignedLong(wire),      PyLong_FromLong(f.ifindex),
            PyLong_FromLong(f.pkttype),
        };
        PyObject *result = NULL;
        if (call[0] && call[1] && call[3] && call[4] && call[5]) {
            result = PyObject_Vectorcall(deliver, call, 6, NULL);
        }
        for (int i = 0; i < 6; i++) {
            Py_XDECREF(call[i]);
        }
        taken++;
        at += f.step;
        if (result != NULL) {
            Py_DECREF(result);
            continue;
        }
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            PyBuffer_Release(&view);
            return NULL;
        }
        PyObject *type, *traceback;
        PyErr_Fetch(&type, &error, &traceback);
        PyErr_NormalizeException(&type, &error, &traceback);
        if (traceback != NULL) {
            PyException_SetTraceback(error, traceback);
        }
        Py_XDECREF(type);
        Py_XDECREF(traceback);
        break;
    }
    PyBuffer_Release(&view);
    if (error == NULL) {
        return Py_BuildValue("(nnO)", taken, at, Py_None);
    }
    return Py_BuildValue("(nnN)", taken, at, error);
}

static PyMethodDef ringwalk_methods[] = {
    {"records", ringwalk_records, METH_VARARGS,
     "records(ring, offset, end, count, snaplen, divisor, cooked, room) -> "
     "(bytes, taken, offset): the pcap records of up to count frames."},
    {"frames", ringwalk_frames, METH_VARARGS,
     "frames(ring, offset, end, count, snaplen, cooked, deliver) -> (taken, offset, error): "
     "deliver up to count frames."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ringwalk_module = {
    PyModuleDef_HEAD_INIT,
    "echod.sniff._ringwalk",
    "The frames of a TPACKET_V3 ring block, walked in C: as pcap records, or delivered.",
    -1,
    ringwalk_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__ringwalk(void)
{
    return PyModule_Create(&ringwalk_module);
}
