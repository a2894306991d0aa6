# cython: language_level=3, boundscheck=False, wraparound=False
"""The compiled twin of gateway/wire.py's `scan_infer_reference`: the same function, the same
answers (tests/unit/test_wire.py holds them to it)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE


cdef inline Py_ssize_t _varint(const unsigned char* p, Py_ssize_t i, Py_ssize_t end,
                               unsigned long long* out) noexcept:
    """Read a varint at p[i]; the index after it, or -1 when it is cut short or over 10 bytes."""
    cdef unsigned long long value = 0
    cdef int shift = 0
    cdef unsigned char byte
    while i < end and shift < 70:
        byte = p[i]
        i += 1
        value |= <unsigned long long>(byte & 0x7F) << shift
        if byte < 0x80:
            out[0] = value
            return i
        shift += 7
    return -1


def scan_infer(bytes body):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(body)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t name_at = 0, name_end = 0, version_at = 0, version_end = 0, id_at = 0, id_end = 0
    cdef unsigned long long key = 0, size = 0
    cdef unsigned long long field
    headers = []
    contents = []
    while i < end:
        i = _varint(p, i, end, &key)
        if i < 0 or key & 7 != 2:  # every field this form holds is length-delimited
            return None
        i = _varint(p, i, end, &size)
        if i < 0 or size > <unsigned long long>(end - i):
            return None
        field = key >> 3
        if field == 1:
            name_at, name_end = i, i + <Py_ssize_t>size
        elif field == 2:
            version_at, version_end = i, i + <Py_ssize_t>size
        elif field == 3:
            id_at, id_end = i, i + <Py_ssize_t>size
        elif field == 5:
            headers.append(body[i:i + <Py_ssize_t>size])
        elif field == 7:
            contents.append(body[i:i + <Py_ssize_t>size])
        else:  # parameters, outputs, or a field this protocol does not have
            return None
        i += <Py_ssize_t>size
    try:
        return (
            body[name_at:name_end].decode(),
            body[version_at:version_end].decode(),
            body[id_at:id_end].decode(),
            headers,
            contents,
        )
    except UnicodeDecodeError:
        return None
