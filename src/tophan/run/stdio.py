"""The caller's end of a container's stdio (``run``, ``exec_in``): our terminal never goes in.

A process that holds a terminal can type into it (``ioctl(fd, TIOCSTI)``): what a container
typed into the caller's terminal would be read by the caller's shell, and run as the caller,
once the container exits. So a container gets our stdio only where they are not terminals
(files, pipes: handed in as they are, nothing copied); a terminal of ours is proxied through a
pipe; and with ``tty`` the container has a pseudo-terminal of its own (opened in its devpts)
whose master we keep and copy to and from ours, in raw mode and at our window size, as docker
does. Without ``interactive`` its stdin is /dev/null.

The plain case (no terminal anywhere, no ``tty``) needs none of this module: ``container.run``
hands the fds in and only forwards signals.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import termios

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan.run.container import Child, Spec

_QUIET = 0.1  # after the command exits: output that others still hold the pipe/pty of
_CHUNK = 65536


class _Flow:
    """Bytes from ``src`` to ``dst``. Our own ends (pipes, the pty master) are non-blocking
    and buffered; the caller's fds are left as they are (their flags are shared with whoever
    else holds them) and written in full."""

    def __init__(self, src: int, dst: int, *, output: bool, ours: int = -1) -> None:
        self.src = src
        self.dst = dst
        self.output = output  # from the container to us
        self.ours = ours  # our fd among src/dst, closed at the end
        self.buf = b""
        self.eof = False  # src is done
        self.done = False  # and everything went out (or cannot)
        self.last = b"\n"
        self.eof_bytes = b""  # to write after the data at EOF (a terminal's EOF character)

    def want(self) -> int:
        if self.done:
            return 0
        ev = 0
        if not self.eof and len(self.buf) < _CHUNK:
            ev |= select.POLLIN
        if self.buf:
            ev |= select.POLLOUT
        return ev

    def read(self) -> None:
        try:
            data = os.read(self.src, _CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:  # EIO: the pty's last slave is closed
                raise
            data = b""
        if data:
            self.buf += data
            self.last = data[-1:]
        else:
            self.eof = True
            if self.eof_bytes and self.last != b"\n":
                self.eof_bytes *= 2  # the first one only ends the unfinished line
            self.buf += self.eof_bytes
            self._check_done()

    def write(self) -> None:
        try:
            n = os.write(self.dst, self.buf)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.EIO):
                raise
            n = len(self.buf)  # nobody reads on: drop it, keep draining the source
        self.buf = self.buf[n:]
        self._check_done()

    def _check_done(self) -> None:
        if self.eof and not self.buf:
            self.done = True
            if not self.output and self.ours >= 0:
                os.close(self.ours)  # the container's stdin pipe: EOF for it
                self.ours = -1


class Stdio:
    """Plan the container's stdio, then proxy them while it runs. ``child`` is what it gets
    (``spec.tty``: /dev/null until its own terminal replaces them)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.flows: list[_Flow] = []
        self.theirs: list[int] = []  # the container's ends: closed here once it has them
        self.term = next((fd for fd in (1, 0, 2) if os.isatty(fd)), -1)
        self.raw_fd = -1
        self.saved: list[Any] | None = None
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.theirs.append(null)
        if spec.tty:
            if self.term >= 0:
                spec.tty_size = window_size(self.term)
            self.child = (null, null, null)
            return
        fds = [null, 1, 2]
        if spec.interactive:
            fds[0] = self._pipe(0, into=True) if os.isatty(0) else 0
        for fd in (1, 2):
            if os.isatty(fd):
                fds[fd] = self._pipe(fd, into=False)
        self.child = (fds[0], fds[1], fds[2])

    def _pipe(self, ours: int, *, into: bool) -> int:
        r, w = os.pipe2(os.O_CLOEXEC)
        if into:
            os.set_blocking(w, False)
            self.flows.append(_Flow(ours, w, output=False, ours=w))
            self.theirs.append(r)
            return r
        os.set_blocking(r, False)
        self.flows.append(_Flow(r, ours, output=True, ours=r))
        self.theirs.append(w)
        return w

    def started(self, child: Child) -> None:
        """The container has its ends: close ours of them; take its terminal's master."""
        for fd in self.theirs:
            os.close(fd)
        self.theirs.clear()
        if child.pty is None:
            return
        master = child.pty
        os.set_blocking(master, False)
        self.flows.append(_Flow(master, 1, output=True))
        if self.spec.interactive:
            flow = _Flow(0, master, output=False)
            flow.eof_bytes = bytes([termios.tcgetattr(master)[6][termios.VEOF][0]])
            self.flows.append(flow)
            if os.isatty(0):
                import tty

                self.saved = termios.tcgetattr(0)
                self.raw_fd = 0
                tty.setraw(0, termios.TCSANOW)

    def close(self) -> None:
        """Give our terminal back as it was; close our ends."""
        if self.saved is not None:
            try:
                termios.tcsetattr(self.raw_fd, termios.TCSADRAIN, self.saved)
            except termios.error:
                pass
            self.saved = None
        for fd in self.theirs:
            os.close(fd)
        self.theirs.clear()
        for flow in self.flows:
            if flow.ours >= 0:
                os.close(flow.ours)
                flow.ours = -1

    def wait(self, child: Child, *, signals: bool) -> int:
        """Copy until ``child`` exits, forwarding signals (with ``signals``: we are the main
        thread, with ``FORWARDED`` and SIGCHLD blocked); return its exit code."""
        from tophan.run.container import FORWARDED

        wanted = {*FORWARDED, signal.SIGCHLD}
        pending: list[int] = []
        if not signals:
            return self._loop(child, pending, -1)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old = {sig: signal.signal(sig, lambda signo, _f: pending.append(signo)) for sig in wanted}
        old_wake = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted)
            return self._loop(child, pending, wake_r)
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
            signal.set_wakeup_fd(old_wake)
            for sig, handler in old.items():
                if handler is not None:
                    signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)

    def _loop(self, child: Child, pending: list[int], wake: int) -> int:
        code = None
        while code is None:
            while pending:
                self._signal(child, pending.pop(0))
            code = child.poll()
            if code is None:
                self._step(wake, None if wake >= 0 else _QUIET)
        # What it wrote before it exited; a process it left behind (exec in an app) may keep
        # the pipe or terminal open: stop once nothing more comes.
        while any(f.output and not f.done for f in self.flows):
            if not self._step(-1, _QUIET, outputs_only=True):
                break
        return code

    def _signal(self, child: Child, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return
        if sig == signal.SIGWINCH and child.pty is not None:
            # Our terminal changed size: its does too (the kernel tells its foreground group).
            if self.term >= 0:
                rows, cols = window_size(self.term)
                packed = struct.pack("HHHH", rows, cols, 0, 0)
                fcntl.ioctl(child.pty, termios.TIOCSWINSZ, packed)
            return
        child.signal(sig)

    def _step(self, wake: int, timeout: float | None, *, outputs_only: bool = False) -> bool:
        """One poll; False if it timed out with nothing to do."""
        p = select.poll()
        if wake >= 0:
            p.register(wake, select.POLLIN)
        watched: dict[int, list[tuple[_Flow, int]]] = {}
        for flow in self.flows:
            if outputs_only and not flow.output:
                continue
            ev = flow.want()
            if ev & select.POLLIN:
                watched.setdefault(flow.src, []).append((flow, select.POLLIN))
            if ev & select.POLLOUT:
                watched.setdefault(flow.dst, []).append((flow, select.POLLOUT))
        for fd, items in watched.items():
            mask = 0
            for _, ev in items:
                mask |= ev
            p.register(fd, mask)
        events = p.poll(None if timeout is None else int(timeout * 1000))
        if not events:
            return False
        for fd, ev in events:
            if fd == wake:
                _drain(wake)
                continue
            for flow, want in watched.get(fd, []):
                if want == select.POLLIN and ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    flow.read()
                elif want == select.POLLOUT and ev & (select.POLLOUT | select.POLLERR):
                    flow.write()
        for flow in self.flows:
            if flow.buf and flow.dst in (1, 2):
                flow.write()  # the caller's fds: written in full, blocking
        return True


def window_size(fd: int) -> tuple[int, int]:
    """Rows and columns of the terminal ``fd``."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
