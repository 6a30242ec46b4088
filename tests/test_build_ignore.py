"""tophan.build.ignore: Docker's .dockerignore rules, and which ignore file a build uses.

The tables come from moby/patternmatcher's patternmatcher_test.go (TestMatches, matchTests),
BuildKit's dockerignore tests, and the examples of Docker's "Build context" documentation.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tophan.build.ignore import Ignore, clean
from tophan.errors import UsageError


def ignored(patterns: list[str], path: str) -> bool:
    return Ignore.from_patterns(patterns).ignored(path)


# patternmatcher_test.go TestMatches, through MatchesOrParentMatches: (pattern, path, matches).
# Its cases with the path "/" are left out: a context-relative path is never the root.
MATCHES = [
    ("**", "file", True),
    ("**", "file/", True),
    ("**/", "file", True),
    ("**/", "file/", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**", "dir/file/", True),
    ("**/", "dir/file/", True),
    ("**/**", "dir/file", True),
    ("**/**", "dir/file/", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/file/", True),
    ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dir/dir2/file/", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file/", True),
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\\\", "a\\", True),
    ("a\\*b", "a*b", True),
    # matchTests, Go's filepath.Match cases as patternmatcher runs them.
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", True),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "path", "expected"), MATCHES)
def test_matches(pattern, path, expected):
    assert ignored([pattern], path) is expected


# patternmatcher_test.go multiPatternTests and the single-purpose tests before them.
MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["*.go"], "fileutils.go", True),
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["docs", "  !docs/README.md  "], "docs/README.md", False),
    ([], "any/path/there", False),
]  # fmt: skip


@pytest.mark.parametrize(("patterns", "path", "expected"), MULTI)
def test_multiple_patterns(patterns, path, expected):
    assert ignored(patterns, path) is expected


# Docker's documentation, "Build context" / ".dockerignore files".
DOCS = [
    (["*/temp*"], {"somedir/temporary.txt": True, "somedir/temp": True, "temp": False,
                   "somedir/sub/temp": False}),
    (["*/*/temp*"], {"somedir/subdir/temporary.txt": True, "somedir/temp": False}),
    (["temp?"], {"tempa": True, "tempb": True, "temp": False, "tempab": False, "x/tempa": False}),
    (["**/*.go"], {"main.go": True, "a/b/c.go": True, "a/b/c.go2": False}),
    (["*.md", "!README.md"], {"a.md": True, "README.md": False, "x/a.md": False}),
    (["*.md", "!README*.md", "README-secret.md"],
     {"a.md": True, "README.md": False, "README-x.md": False, "README-secret.md": True}),
    (["*.md", "README-secret.md", "!README*.md"],
     {"a.md": True, "README-secret.md": False}),
    (["/foo/bar"], {"foo/bar": True, "foo/bar/baz": True, "foo": False, "x/foo/bar": False}),
    (["foo/bar"], {"foo/bar": True}),
    (["*", "!src", "!Containerfile"],
     {"build": True, "build/x": True, "src": False, "src/main.c": False, "Containerfile": False}),
    (["node_modules/"], {"node_modules": True, "node_modules/a/b": True, "x/node_modules": False}),
    (["  # not a comment"], {"# not a comment": True}),
    (["# a comment", "", "   ", "a/../b/./c//"], {"b/c": True, "a": False, "# a comment": False}),
]  # fmt: skip


@pytest.mark.parametrize(("patterns", "cases"), DOCS)
def test_documented_examples(patterns, cases):
    ig = Ignore.from_patterns(patterns)
    assert {path: ig.ignored(path) for path in cases} == cases


def test_path_forms():
    ig = Ignore.from_patterns(["a/b"])
    assert ig.ignored("./a/b/c") and ig.ignored("/a/b") and ig.ignored("a//b/")
    assert not ig.ignored("") and not ig.ignored(".")


@pytest.mark.parametrize(
    "pattern",
    ["[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[z-a]", "!"],
)
def test_bad_patterns(pattern):
    with pytest.raises(UsageError):
        Ignore.from_patterns([pattern])


def test_clean_is_go_filepath_clean():
    cases = {"": ".", "//a": "/a", "a/../..": "..", "/..": "/", "a/./b/": "a/b", "../a/": "../a"}
    assert {path: clean(path) for path in cases} == cases


def test_empty():
    assert Ignore.from_patterns([]).empty
    assert Ignore.from_patterns(["# only a comment", ""]).empty
    assert not Ignore.from_patterns(["x"]).empty


# --- Pruning directories ----------------------------------------------------------------------


def test_may_include_under():
    ig = Ignore.from_patterns(["docs", "!docs/README.md", "node_modules", "*.tmp"])
    assert ig.may_include_under("docs")  # docs/README.md comes back
    assert not ig.may_include_under("docs/sub")
    assert not ig.may_include_under("node_modules")
    assert ig.may_include_under("src")  # not ignored at all
    ig = Ignore.from_patterns(["*", "!src", "!**/*.keep"])
    assert ig.may_include_under("build")  # a *.keep may be anywhere
    ig = Ignore.from_patterns(["*", "!src/**", "!x*/y"])
    assert not ig.may_include_under("build")
    assert ig.may_include_under("xa")
    assert not Ignore.from_patterns(["!keep", "build"]).may_include_under("build")


COMPONENT = st.sampled_from(["a", "b", "ab", "*", "?", "**", "a*", "[ab]", "[^a]", "\\a", "b?"])
PATTERN = st.builds(
    lambda neg, parts: ("!" if neg else "") + "/".join(parts),
    st.booleans(),
    st.lists(COMPONENT, min_size=1, max_size=4),
)
PATH = st.lists(st.sampled_from(["a", "b", "ab", "ba", "aa"]), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=5), st.lists(PATH, min_size=1, max_size=20))
def test_pruning_is_sound(patterns, paths):
    """A directory the walker may skip holds nothing that is not ignored."""
    ig = Ignore.from_patterns(patterns)
    tree = {"/".join(p[:k]) for p in paths for k in range(1, len(p) + 1)}
    for directory in tree:
        if ig.ignored(directory) and not ig.may_include_under(directory):
            below = [p for p in tree if p.startswith(directory + "/")]
            assert all(ig.ignored(p) for p in below), (directory, below)


@settings(max_examples=300, deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=5), PATH)
def test_matching_is_docker_loop(patterns, path):
    """ignored() is patternmatcher's MatchesOrParentMatches: every parent tried, last match wins.

    (ignored() tries only the parent a pattern can match; this checks that shortcut.)
    """
    ig = Ignore.from_patterns(patterns)
    text = "/".join(path)
    candidates = ["/".join(path[:k]) for k in range(1, len(path) + 1)]
    matched = False
    for pattern in ig.patterns:
        if pattern.exclusion == matched and any(pattern.match(c) for c in candidates):
            matched = not pattern.exclusion
    assert ig.ignored(text) is matched


# --- Which file a build uses ------------------------------------------------------------------


def write(path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)


def test_load_none(tmp_path):
    ig = Ignore.load(str(tmp_path))
    assert ig.empty and ig.source is None and not ig.ignored("x")


def test_load_precedence(tmp_path):
    ctx, cf = tmp_path / "ctx", tmp_path / "files" / "App.Containerfile"
    write(ctx / ".dockerignore", "from-dockerignore\n")
    assert Ignore.load(str(ctx), str(cf)).ignored("from-dockerignore")
    write(ctx / ".containerignore", "from-containerignore\n")
    ig = Ignore.load(str(ctx), str(cf))
    assert ig.source == str(ctx / ".containerignore")
    assert ig.ignored("from-containerignore") and not ig.ignored("from-dockerignore")
    # A file next to the Containerfile, named after it, wins (Docker: Dockerfile.dockerignore).
    write(tmp_path / "files" / "App.Containerfile.dockerignore", "per-file-docker\n")
    assert Ignore.load(str(ctx), str(cf)).ignored("per-file-docker")
    write(tmp_path / "files" / "App.Containerfile.containerignore", "per-file\n")
    ig = Ignore.load(str(ctx), str(cf))
    assert ig.source == str(cf) + ".containerignore"
    assert ig.ignored("per-file") and not ig.ignored("per-file-docker")
    # Without a Containerfile path, only the context's files count.
    assert Ignore.load(str(ctx)).ignored("from-containerignore")


def test_load_file_format(tmp_path):
    write(tmp_path / ".dockerignore", b"\xef\xbb\xbfa\r\n# c\r\n  !a/keep  \r\n\r\nb\xff\n")
    ig = Ignore.load(str(tmp_path))
    assert ig.ignored("a/x") and not ig.ignored("a/keep")
    assert ig.ignored(os.fsdecode(b"b\xff"))  # undecodable bytes match as os.fsdecode gives them


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"ok\n[oops\n", ".dockerignore:2: invalid ignore pattern '[oops'"),
        (b"ok\n!\n", ".dockerignore:2: a '!' without a pattern"),
        (b"ok\nx\0y\n", ".dockerignore:2: a NUL byte"),
        (b"x" * ((1 << 20) + 1), "larger than 1 MiB"),
    ],
)
def test_load_refuses(tmp_path, content, fragment):
    write(tmp_path / ".dockerignore", content)
    with pytest.raises(UsageError) as e:
        Ignore.load(str(tmp_path))
    assert fragment in str(e.value)
    assert str(e.value).startswith(str(tmp_path))


def test_load_refuses_non_files(tmp_path):
    (tmp_path / ".containerignore").mkdir()
    with pytest.raises(UsageError, match="not a regular file"):
        Ignore.load(str(tmp_path))
    os.rmdir(tmp_path / ".containerignore")
    os.mkfifo(tmp_path / ".containerignore")
    start = time.monotonic()
    with pytest.raises(UsageError, match="not a regular file"):
        Ignore.load(str(tmp_path))
    assert time.monotonic() - start < 2
    os.unlink(tmp_path / ".containerignore")
    os.symlink("missing", tmp_path / ".containerignore")
    with pytest.raises(UsageError, match="cannot read"):
        Ignore.load(str(tmp_path))


def test_many_patterns_and_deep_paths_are_quick():
    patterns = [f"dir{n}/*.tmp" for n in range(2000)] + [f"**/x{n}" for n in range(100)]
    ig = Ignore.from_patterns([*patterns, "!keep"])
    deep = "/".join(["d"] * 200) + "/x.tmp"
    start = time.monotonic()
    for _ in range(10):
        assert not ig.ignored(deep)
    assert time.monotonic() - start < 2
