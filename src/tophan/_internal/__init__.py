"""Private helpers under every package: raw syscalls (``libc``), ``key=value`` meta files
(``meta``), name rules (``names``), compressed streams (``compression``), files and locks
(``fs``) and the store's disk (``root``: ``StoreRoot``, the paths, the writer lock, staging).

Not public API: names here change without notice.
"""
