"""`with comm.group(): ...`: point-to-point calls inside the block are
collected and started together when it exits (NCCL's group, torch's
batch_isend_irecv), each returning a Work bound then."""


class Group:
    """The ops of a `with comm.group():` block, posted together at its end."""

    def __init__(self, comm):
        self.comm = comm
        self.ops = []
        self.works = []

    def __enter__(self):
        self.comm._enter_group(self)
        return self

    def __exit__(self, exc_type, *exc):
        # Posted only when the block ran to its end; each Work is bound then.
        for w, real in zip(self.works, self.comm._exit_group(self, post=exc_type is None)):
            w._bind(real)
        return False

    def add(self, op):
        """Collects one op (the tuple the native core posts); its Work."""
        w = _GroupWork()
        self.ops.append(op)
        self.works.append(w)
        return w


class _GroupWork:
    """A Work for an op inside a group: bound to the native Work when the
    block exits (waiting before then is an error)."""

    def __init__(self):
        self._w = None

    def _bind(self, w):
        self._w = w

    def _native(self):
        if self._w is None:
            raise ValueError("the op's group block has not exited yet: its ops start when it does")
        return self._w

    def wait(self, timeout=None):
        return self._native().wait(timeout)

    def is_completed(self):
        return self._native().is_completed()

    def exception(self):
        return self._native().exception()

    @property
    def source(self):
        return self._native().source

    @property
    def count(self):
        return self._native().count

