"""tophan.build.containerfile: Docker's Containerfile syntax and variable substitution.

Expected values follow BuildKit (moby/buildkit frontend/dockerfile: parser/, instructions/,
shell/lex.go and its tests) and the Dockerfile reference; each table says where it comes from.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tophan.build.containerfile import (
    Heredoc,
    arguments,
    duration_ns,
    expand,
    expand_heredoc,
    expand_words,
    from_parts,
    healthcheck_test,
    is_git_url,
    key_values,
    parse,
    shell_or_exec,
)
from tophan.errors import UsageError

SH = ["/bin/sh", "-c"]


def stage0(text: str) -> list:
    return parse(text, "Cf").stages[0].instructions


def one(text: str):
    """The single instruction after a FROM line."""
    (inst,) = stage0("FROM scratch\n" + text)
    return inst


def error(text: str) -> str:
    with pytest.raises(UsageError) as e:
        parse(text, "Cf")
    message = str(e.value)
    assert "\n" not in message
    return message


# --- Instructions and their forms --------------------------------------------------------------


def test_every_instruction():
    cf = parse(
        "FROM --platform=linux/amd64 debian:12 AS Base\n"
        "ARG A=1 B\n"
        "ENV K=v\n"
        "LABEL a=b\n"
        "MAINTAINER Jane <jane@example.com>\n"
        "WORKDIR /app\n"
        "USER 1000:1000\n"
        "RUN make\n"
        'CMD ["run"]\n'
        "ENTRYPOINT /bin/entry --x\n"
        'SHELL ["/bin/bash", "-c"]\n'
        "EXPOSE 80/tcp 443\n"
        "VOLUME /data /logs\n"
        "STOPSIGNAL SIGINT\n"
        "HEALTHCHECK --interval=5s --retries=3 CMD true\n"
        "COPY --from=base --chown=1:2 --chmod=0644 a b /dst/\n"
        "ADD --checksum=sha256:00 https://example.com/x.tar /x\n",
        "Cf",
    )
    (stage,) = cf.stages
    assert (stage.index, stage.name, stage.base, stage.platform, stage.line) == (
        0,
        "base",
        "debian:12",
        "linux/amd64",
        1,
    )
    assert stage.source.keyword == "FROM"
    got = [(i.keyword, i.flags, i.rest, i.json, i.line) for i in stage.instructions]
    assert got == [
        ("ARG", [], "A=1 B", None, 2),
        ("ENV", [], "K=v", None, 3),
        ("LABEL", [], "a=b", None, 4),
        ("MAINTAINER", [], "Jane <jane@example.com>", None, 5),
        ("WORKDIR", [], "/app", None, 6),
        ("USER", [], "1000:1000", None, 7),
        ("RUN", [], "make", None, 8),
        ("CMD", [], '["run"]', ["run"], 9),
        ("ENTRYPOINT", [], "/bin/entry --x", None, 10),
        ("SHELL", [], '["/bin/bash", "-c"]', ["/bin/bash", "-c"], 11),
        ("EXPOSE", [], "80/tcp 443", None, 12),
        ("VOLUME", [], "/data /logs", None, 13),
        ("STOPSIGNAL", [], "SIGINT", None, 14),
        ("HEALTHCHECK", [("interval", "5s"), ("retries", "3")], "CMD true", None, 15),
        ("COPY", [("from", "base"), ("chown", "1:2"), ("chmod", "0644")], "a b /dst/", None, 16),
        ("ADD", [("checksum", "sha256:00")], "https://example.com/x.tar /x", None, 17),
    ]
    assert all(i.path == "Cf" for i in stage.instructions)


def test_keywords_any_case_and_leading_blanks():
    cf = parse("from scratch\n   rUn  echo  hi  \n\t  copy a b\n", "Cf")
    insts = cf.stages[0].instructions
    assert [(i.keyword, i.rest) for i in insts] == [("RUN", "echo  hi"), ("COPY", "a b")]


def test_where_flag_text():
    inst = one("COPY --from=a --chown=x a /b\n")
    assert inst.where() == "Cf:2"
    assert inst.flag("from") == "a"
    assert inst.flag("chmod") is None
    assert inst.text() == "COPY --from=a --chown=x a /b"
    assert one("RUN  echo   a\n").text() == "RUN echo   a"


def test_flag_words_quotes_and_double_dash():
    # BuildKit's extractBuilderFlags: quotes and backslashes inside a flag word; "--" ends flags.
    inst = one('COPY --chown="a b" --from=x\\ y -- --weird /dst\n')
    assert inst.flags == [("chown", "a b"), ("from", "x y")]
    assert inst.rest == "--weird /dst"
    assert one("COPY   --from=x   a b\n").rest == "a b"


def test_json_and_shell_forms():
    # parseMaybeJSON: only a JSON array of strings is the exec form; anything else that is not
    # valid JSON is the shell form.
    assert one('CMD [ "a" , "b c" ]\n').json == ["a", "b c"]
    assert one('RUN ["echo", "\\u00e9\\n"]\n').json == ["echo", "é\n"]
    assert one("CMD [a, b]\n").json is None
    assert one('CMD ["a", "b"] extra\n').json is None
    assert one('CMD ["a", NaN]\n').json is None
    assert one("CMD ['a']\n").json is None
    assert one('CMD ["unterminated\n').json is None
    assert one("CMD []\n").json == []
    assert one("CMD\n").rest == ""
    assert one('ENTRYPOINT ["\\ud800"]\n').json == ["\ufffd"]  # as Go decodes a lone surrogate
    assert one('ENV a=["x"]\n').json is None  # ENV has no exec form
    assert one('VOLUME ["/a b", "/c"]\n').json == ["/a b", "/c"]
    assert one('COPY ["a b", "/dst/"]\n').json == ["a b", "/dst/"]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('CMD ["a", 1]', "array of strings"),
        ('RUN ["a", ["b"]]', "array of strings"),
        ('CMD ["a\\u0000b"]', "NUL"),
    ],
)
def test_json_form_errors(line, fragment):
    message = error(f"FROM scratch\n{line}\n")
    assert message.startswith("Cf:2: ")
    assert fragment in message


def test_arguments():
    assert arguments(one("COPY a  b\t/c\n")) == ["a", "b", "/c"]
    assert arguments(one('COPY "a b" /c\n')) == ['"a', 'b"', "/c"]  # Docker: quotes do not group
    assert arguments(one('COPY ["a b", "/c"]\n')) == ["a b", "/c"]
    assert arguments(one("EXPOSE 80 443/udp\n")) == ["80", "443/udp"]
    assert arguments(one("WORKDIR /a b\n")) == ["/a b"]
    assert arguments(one("CMD\n")) == []


def test_from_parts():
    cf = parse("FROM a\nFROM b as B2\nFROM c AS x.y-z_1\n", "Cf")
    assert [from_parts(s.source) for s in cf.stages] == [
        ("a", None),
        ("b", "b2"),
        ("c", "x.y-z_1"),
    ]


# --- Continuations, comments, directives ----------------------------------------------------


def test_continuations_backslash():
    # "RUN echo hello \" + "world": the escape goes, the whitespace stays (the reference's
    # "Note on whitespace"); comment lines and empty lines inside are dropped.
    insts = stage0(
        "FROM scratch\n"
        "RUN echo hello \\\n"
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        "  world \\  \t\n"
        "again\n"
        "RUN next\n"
    )
    assert [(i.rest, i.line) for i in insts] == [("echo hello   world again", 2), ("next", 8)]


def test_continuations_backtick():
    cf = parse("# escape=`\nFROM scratch\nRUN dir c:\\ `\n  && echo `\n done\nCOPY a c:\\\n", "Cf")
    assert cf.escape == "`"
    insts = cf.stages[0].instructions
    assert [(i.rest, i.line) for i in insts] == [("dir c:\\   && echo  done", 3), ("a c:\\", 6)]


def test_escaped_escape_is_not_a_continuation():
    insts = stage0("FROM scratch\nRUN echo a\\\\\nRUN b\n")
    assert [i.rest for i in insts] == ["echo a\\\\", "b"]


def test_continuation_at_end_of_file():
    assert [i.rest for i in stage0("FROM scratch\nRUN echo a \\\n")] == ["echo a"]


def test_hash_inside_a_line_is_an_argument():
    assert one("RUN echo 'we are running some # of cool things'\n").rest.endswith("things'")


def test_crlf_lines():
    insts = stage0("FROM scratch\r\nRUN a \\\r\n b\r\nENV x=1\r\n")
    assert [i.rest for i in insts] == ["a  b", "x=1"]


def test_bom_is_dropped():
    assert parse("\ufeffFROM scratch\n", "Cf").stages[0].base == "scratch"


def test_directives():
    # Accepted anywhere in the leading comments, any case, blanks around '='; syntax and check
    # are ignored.
    cf = parse("#  Syntax = docker/dockerfile:1\n# check=skip=all\n#ESCAPE=`\nFROM x\n", "Cf")
    assert cf.escape == "`"
    # After a plain comment, a blank line or an instruction, a directive is a comment.
    assert parse("# hello\n# escape=`\nFROM x\n", "Cf").escape == "\\"
    assert parse("\n# escape=`\nFROM x\n", "Cf").escape == "\\"
    assert parse("FROM x\n# escape=`\n", "Cf").escape == "\\"
    assert parse("# unknown=1\n# escape=`\nFROM x\n", "Cf").escape == "\\"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("# escape=`\n# escape=\\\nFROM x\n", 2, "second 'escape'"),
        ("# syntax=a\n# SYNTAX=b\nFROM x\n", 2, "second 'syntax'"),
        ("# escape=x\nFROM x\n", 1, "invalid escape"),
    ],
)
def test_directive_errors(text, line, fragment):
    message = error(text)
    assert message.startswith(f"Cf:{line}: ")
    assert fragment in message


# --- Heredocs -------------------------------------------------------------------------------


def test_heredoc_run_alone():
    inst = one("RUN <<EOF\nset -e\n# not a comment \\\n\n  echo $HOME\nEOF\n")
    assert inst.rest == "<<EOF"
    assert inst.heredocs == [
        Heredoc("EOF", "set -e\n# not a comment \\\n\n  echo $HOME\n", True, False)
    ]


def test_heredoc_several_on_a_line():
    # From the reference: RUN <<FILE1 cat > file1 && <<FILE2 cat > file2
    insts = stage0(
        "FROM x\nRUN <<FILE1 cat > file1 && <<FILE2 cat > file2\n"
        "I am\nfirst\nFILE1\nI am\nsecond\nFILE2\nRUN b\n"
    )
    assert [h.name for h in insts[0].heredocs] == ["FILE1", "FILE2"]
    assert [h.content for h in insts[0].heredocs] == ["I am\nfirst\n", "I am\nsecond\n"]
    assert insts[1].rest == "b" and insts[1].line == 9


def test_heredoc_chomp_and_quotes():
    inst = one(
        "RUN <<-A cat && cat <<'B' && cat <<\"C\" && cat <<D'D'\n\t\tx\n\tA\n\ty\nB\n$z\nC\nw\nDD\n"
    )
    got = [(h.name, h.content, h.expand, h.chomp) for h in inst.heredocs]
    assert got == [
        ("A", "x\n", True, True),
        ("B", "\ty\n", False, False),
        ("C", "$z\n", False, False),
        ("DD", "w\n", False, False),
    ]


def test_heredoc_not_recognised():
    # Quoted, glued to a word, a herestring, JSON form, or an instruction without heredocs.
    for line in ['RUN echo "<<EOF"', "RUN cat<<EOF", "RUN cat <<<EOF", 'RUN ["cat", "<<EOF"]']:
        assert one(line + "\n").heredocs == []
    insts = stage0("FROM x\nCMD cat <<EOF\nRUN a\n")
    assert [i.keyword for i in insts] == ["CMD", "RUN"]


def test_heredoc_after_continuation_and_with_fd():
    inst = one("RUN cat 3<<EOF \\\n  > /out\nbody\nEOF\n")
    assert inst.rest == "cat 3<<EOF   > /out"
    assert inst.heredocs[0].content == "body\n"


def test_heredoc_crlf_terminator():
    inst = one("RUN <<EOF\r\na\r\nEOF\r\n")
    assert inst.heredocs[0].content == "a\r\n"


def test_copy_heredoc_source():
    inst = one("COPY <<EOF <<-'X' /dst/\nhello\nEOF\n\tworld\n\tX\n")
    assert arguments(inst) == ["<<EOF", "<<-'X'", "/dst/"]
    assert inst.heredoc("<<EOF") == Heredoc("EOF", "hello\n", True, False)
    assert inst.heredoc("<<-'X'") == Heredoc("X", "world\n", False, True)
    assert inst.heredoc("/dst/") is None


def test_heredoc_unterminated():
    message = error("FROM x\nRUN a\nRUN <<EOF\nline\nEOF \n")
    assert message.startswith("Cf:3: ")
    assert "<<EOF" in message


# parser_heredoc_test.go TestParseExtractsHeredoc (without its RUN --mount and USER lines):
# BuildKit keeps a <<- body's tabs until later; here they are gone already.
BUILDKIT_HEREDOCS = """FROM alpine:3.6

ENV NAME=me

RUN ls

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN "<<NOHEREDOC"

RUN <<INDENT
\tfoo
\tbar
INDENT

RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT

RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2

RUN <<-EXPAND
\texpand $NAME
EXPAND

RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND

RUN <<COPY
echo hello world
echo foo bar
COPY

RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<EOF /quotes
"foo"
'bar'
EOF

COPY <<X <<Y /dest
Y
X
X
Y

RUN <<COMPLEX python3
print('hello world')
COMPLEX

COPY <<file.txt /dest
hello world
file.txt

RUN <<eo'f'
echo foo
eof

RUN <<eo\\'f
echo foo
eo'f

RUN <<'e'o\\'f
echo foo
eo'f

RUN <<'one two'
echo bar
one two

RUN <<$EOF
$EOF

RUN <<  EOF
EOF

RUN <<  EOF  > foo
EOF
"""
BUILDKIT_HEREDOCS_EXPECTED = [
    [],
    [],
    [("EMPTY", "", True, False)],
    [("EMPTY2", "", True, False)],
    [],
    [("INDENT", "\tfoo\n\tbar\n", True, False)],
    [("UNINDENT", "baz\nquux\n", True, True)],
    [("UNINDENT2", "baz\nquux\n", True, True)],
    [("EXPAND", "expand $NAME\n", True, True)],
    [("NOEXPAND", "don't expand $NAME\n", False, True)],
    [("COPY", "echo hello world\necho foo bar\n", True, False)],
    [("COMMENT", "# internal comment\necho hello world\necho foo bar # trailing comment\n",
      True, False)],
    [("FILE1", "content 1\n", True, False), ("FILE2", "content 2\n", True, False)],
    [("EOF", "\"foo\"\n'bar'\n", True, False)],
    [("X", "Y\n", True, False), ("Y", "X\n", True, False)],
    [("COMPLEX", "print('hello world')\n", True, False)],
    [("file.txt", "hello world\n", True, False)],
    [("eof", "echo foo\n", False, False)],
    [("eo'f", "echo foo\n", True, False)],
    [("eo'f", "echo foo\n", False, False)],
    [("one two", "echo bar\n", False, False)],
    [("$EOF", "", True, False)],
    [("EOF", "", True, False)],
    [("EOF", "", True, False)],
]  # fmt: skip


def test_buildkit_heredoc_table():
    insts = parse(BUILDKIT_HEREDOCS, "Cf").stages[0].instructions
    got = [[(h.name, h.content, h.expand, h.chomp) for h in i.heredocs] for i in insts]
    assert got == BUILDKIT_HEREDOCS_EXPECTED


@pytest.mark.parametrize(
    ("rest", "names"),
    [
        # parser_heredoc_test.go TestParseHeredocHelpers and TestHeredocsFromLine.
        ("<<EOF", ["EOF"]),
        ("<<'EOF'", ["EOF"]),
        ('<<"EOF"', ["EOF"]),
        ("<<-EOF", ["EOF"]),
        ("<<-'EOF'", ["EOF"]),
        ('<<-"EOF"', ["EOF"]),
        ('<<EO"F"', ["EOF"]),
        ("<< EOF", ["EOF"]),
        ("<<- EOF", ["EOF"]),
        ("<< -EOF", ["-EOF"]),
        ("4<<EOF", ["EOF"]),
        ("<<EOF <<EOF2", ["EOF", "EOF2"]),
        ("'<<EOF'", []),
        ('"<<EOF"', []),
        ("EOF", []),
        ("<<", []),
        ("<<-", []),
        ("<EOF", []),
        ("<<<EOF", []),
        ("<<EOF sh", ["EOF"]),
        ("<<'EOF", []),  # quotes that do not close: no heredoc on the line at all
        ("<<EOF echo 'x", []),
    ],
)
def test_heredoc_words(rest, names):
    from tophan.build.containerfile import _heredoc_specs

    assert [spec[0] for spec in _heredoc_specs(rest)] == names


def test_run_heredoc_spaced_delimiter():
    inst = one("RUN <<  EOF\necho spaced\nEOF\n")
    assert shell_or_exec(inst, SH) == [*SH, "echo spaced\n"]
    inst = one("RUN cat << EOF\n$HOME\nEOF\n")
    assert run(shell_or_exec(inst, SH), {"HOME": "/h"}) == "/h\n"


# --- Stages ---------------------------------------------------------------------------------


def test_meta_args_and_stage_lookup():
    cf = parse(
        "ARG BASE=debian\nARG V\nFROM ${BASE}:$V AS Builder\nRUN a\n"
        "FROM builder\nFROM x AS final\n",
        "Cf",
    )
    assert [a.rest for a in cf.meta_args] == ["BASE=debian", "V"]
    assert [(s.index, s.name, s.base) for s in cf.stages] == [
        (0, "builder", "${BASE}:$V"),
        (1, None, "builder"),
        (2, "final", "x"),
    ]
    assert cf.stage("BUILDER") is cf.stages[0]
    assert cf.stage("final") is cf.stages[2]
    assert cf.stage("1") is cf.stages[1]
    assert cf.stage("3") is None
    assert cf.stage("nope") is None
    assert cf.stages[0].instructions[0].rest == "a"
    assert cf.stages[1].instructions == []


# --- Refusals and mistakes: one line, naming file:line ----------------------------------------

REFUSALS = [
    ("FROM x\nONBUILD RUN a\n", 2, "ONBUILD is not supported"),
    ("FROM x\nRUN --mount=type=cache,target=/c make\n", 2, "RUN --mount is not supported"),
    ("FROM x\nRUN --network=none make\n", 2, "RUN --network"),
    ("FROM x\nRUN --security=insecure make\n", 2, "RUN --security"),
    ("FROM x\nCOPY --link a b\n", 2, "COPY --link"),
    ("FROM x\nCOPY --parents a/b c\n", 2, "COPY --parents"),
    ("FROM x\nADD --keep-git-dir=true https://x/r.git /r\n", 2, "ADD --keep-git-dir"),
    ("FROM x\nADD https://github.com/moby/buildkit.git#v0.10 /src\n", 2, "git repository"),
    ("FROM x\nADD git@github.com:moby/buildkit.git /src\n", 2, "git repository"),
    ("FROM x\nCOPY --frm=a b c\n", 2, "unknown flag --frm for COPY"),
    ("FROM x\nWORKDIR --x=1 /a\n", 2, "unknown flag --x for WORKDIR"),
    ("FROM --plat=x y\n", 1, "unknown flag --plat"),
    ("FROM x\nHEALTHCHECK --foo=1 CMD a\n", 2, "unknown flag --foo"),
    ("FROM x\nCMD --help\n", 2, "unknown flag --help for CMD"),  # as in Docker: JSON form
    ("FROM x\nCOPY --from a b\n", 2, "--from needs a value"),
    ("FROM x\nCOPY --from=a --from=b c d\n", 2, "given twice"),
    ("FROM x\n\n  FORM y\n", 3, "unknown instruction 'FORM'"),
    ("FROM x\nRUN apt-get update\n  apt-get install -y x\n", 3, "unknown instruction 'apt-get'"),
    ("FROM\n", 1, "FROM needs an image"),
    ("FROM --platform=x\n", 1, "FROM needs an image"),
    ("FROM x AS\n", 1, "needs a stage name"),
    ("FROM x AS 1st\n", 1, "invalid stage name '1st'"),
    ("FROM x AS a/b\n", 1, "invalid stage name"),
    ("FROM x y\n", 1, "FROM takes"),
    ("FROM x AS a\nFROM y AS A\n", 2, "second stage named 'a' (the first is at line 1)"),
    ("", 1, "no FROM instruction"),
    ("# only a comment\n\n", 1, "no FROM instruction"),
    ("ARG A\nARG B\n", 2, "no FROM instruction"),
    ("ENV A=1\nFROM x\n", 1, "ENV before the first FROM"),
    ("FROM x\nCOPY onlyone\n", 2, "COPY needs a source and a destination"),
    ("FROM x\nADD\n", 2, "ADD needs a source"),
    ("FROM x\nCOPY a <<EOF\nx\nEOF\n", 2, "cannot be the destination"),
    ("FROM x\nENV\n", 2, "ENV needs a name=value"),
    ("FROM x\nENV lonely\n", 2, "ENV 'lonely' needs a value"),
    ("FROM x\nENV a=1 b\n", 2, "'b' has no '='"),
    ("FROM x\nENV =1\n", 2, "a name is empty"),
    ("FROM x\nLABEL\n", 2, "LABEL needs"),
    ("FROM x\nARG\n", 2, "ARG needs a name"),
    ("FROM x\nARG =v\n", 2, "has no name"),
    ("FROM x\nWORKDIR\n", 2, "WORKDIR needs an argument"),
    ("FROM x\nUSER\n", 2, "USER needs"),
    ("FROM x\nEXPOSE\n", 2, "EXPOSE needs"),
    ("FROM x\nSTOPSIGNAL\n", 2, "STOPSIGNAL needs"),
    ("FROM x\nMAINTAINER\n", 2, "MAINTAINER needs"),
    ("FROM x\nRUN\n", 2, "RUN needs a command"),
    ("FROM x\nRUN []\n", 2, "RUN needs a command"),
    ("FROM x\nVOLUME\n", 2, "VOLUME needs a path"),
    ('FROM x\nVOLUME ["/a", " "]\n', 2, "empty string"),
    ("FROM x\nSHELL /bin/bash -c\n", 2, "SHELL takes the JSON form"),
    ("FROM x\nSHELL []\n", 2, "SHELL takes the JSON form"),
    ("FROM x\nHEALTHCHECK\n", 2, "CMD or NONE"),
    ("FROM x\nHEALTHCHECK NONE x\n", 2, "NONE takes no arguments"),
    ("FROM x\nHEALTHCHECK RUN x\n", 2, "unknown HEALTHCHECK type 'RUN'"),
    ("FROM x\nHEALTHCHECK CMD\n", 2, "CMD needs a command"),
    ("FROM x\nHEALTHCHECK --interval=5 CMD a\n", 2, "--interval: invalid duration '5'"),
    ("FROM x\nHEALTHCHECK --timeout=0s CMD a\n", 2, "shorter than 1ms"),
    ("FROM x\nHEALTHCHECK --retries=0 CMD a\n", 2, "--retries='0'"),
    ("FROM x\nHEALTHCHECK --retries=x CMD a\n", 2, "--retries='x'"),
    ("FROM x\nRUN a\0b\n", 2, "NUL byte"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), REFUSALS)
def test_refusals(text, line, fragment):
    message = error(text)
    assert message.startswith(f"Cf:{line}: "), message
    assert fragment in message, message


def test_refusal_hint_says_what_to_do():
    with pytest.raises(UsageError) as e:
        parse("FROM x\nRUN --mount=type=bind,target=/x a\n", "Cf")
    assert e.value.hint and "COPY" in e.value.hint


def test_maintainer_is_accepted():
    inst = one("MAINTAINER Jane Doe <jd@example.com>\n")
    assert key_values(inst, {}) == [("maintainer", "Jane Doe <jd@example.com>")]


def test_is_git_url():
    for url in ["git@github.com:a/b.git", "git://h/r", "ssh://git@h/r", "github.com/a/b",
                "https://h/r.git", "https://h/r.git#main", "http://h/r.git?x"]:  # fmt: skip
        assert is_git_url(url), url
    for src in ["https://h/r.tar.gz", "./x.git/y", "src", "https://h/x.gitignore"]:
        assert not is_git_url(src), src


def test_healthcheck():
    inst = one("HEALTHCHECK --interval=1m30s --timeout=500ms CMD curl -f http://x/ || exit 1\n")
    assert healthcheck_test(inst) == ["CMD-SHELL", "curl -f http://x/ || exit 1"]
    assert duration_ns(inst.flag("interval") or "") == 90 * 10**9
    assert duration_ns(inst.flag("timeout") or "") == 5 * 10**8
    assert healthcheck_test(one('HEALTHCHECK CMD ["/bin/check", "-q"]\n')) == [
        "CMD",
        "/bin/check",
        "-q",
    ]
    assert healthcheck_test(one("HEALTHCHECK none\n")) == ["NONE"]
    assert one('HEALTHCHECK CMD ["a"]\n').json == ["a"]


# --- Substitution -------------------------------------------------------------------------------

# BuildKit's shell/envVarTest (ProcessWord), with its environment.
ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}
PROCESS_WORD = [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("he\\'llo", "he'llo"),
    ("abc\\tdef", "abctdef"),
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ("'abc\\tdef'", "abc\\tdef"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ('"hel\'lo"', "hel'lo"),
    ("'hello\\'", "hello\\"),
    ("'hello\\\\there'", "hello\\\\there"),
    ("\"''\"", "''"),
    ("$.", "$."),
    ("he$1x", "hex"),
    ("he$.x", "he$.x"),
    ("he$pwd.", "he."),
    ("he$PWD", "he/home"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    ('"he\\$PWD"', "he$PWD"),
    ('"he\\\\$PWD"', "he\\/home"),
    ("\\${}", "${}"),
    ("\\${}aaa", "${}aaa"),
    ("he\\${}xx", "he${}xx"),
    ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"),
    ("he${XXX:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${XXX:-$PWD}xx", "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${PWD?}", "he/home"),
    ("he${PWD:?}", "he/home"),
    ("he${NULL?}", "he"),
    ("he${XXX:+${PWD}}xx", "hexx"),
    ("he${PWD:+${XXX}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${XXX:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("'he${XX}'", "he${XX}"),
    ('"he${PWD}"', "he/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ('"$PWD"', "/home"),
    ("'$PWD'", "$PWD"),
    ("'\\$PWD'", "\\$PWD"),
    ("'\"hello\"'", '"hello"'),
    ("he${PWD:+${PWD}:}xx", "he/home:xx"),
    ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
    ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"),
    ("안'녕'하세요", "안녕하세요"),
    ("안녕$KOREAN", "안녕한국어"),
    ("${aaa}}", "}"),
    ("${aaa}}}", "}}"),
    # The Dockerfile reference: ${variable-word}, ${variable+word} keep an empty value set.
    ("${NULL-word}", ""),
    ("${NULL:-word}", "word"),
    ("${NULL+word}", "word"),
    ("${NULL:+word}", ""),
    ("${XXX-word}", "word"),
    ("${XXX+word}", ""),
    # Quotes and escapes inside the word of a modifier (lex.go processes it like a word).
    ('${XXX:-"a b"}', "a b"),
    ("${XXX:-'$PWD'}", "$PWD"),
    ("${XXX:-a\\}b}", "a}b"),
]
PROCESS_WORD_ERRORS = [
    "he'llo",
    "he\\\\'llo",
    '"hello',
    '"hello\\"',
    "'hello",
    "${}",
    "${}aaa",
    "he${}xx",
    "he${.}",
    "he${XXX:YYY}",
    "he${XXX?}",
    "he${XXX:?}",
    "he${NULL:?}",
    "he${PWD",
    "he${PWD:=000}xx",
    "${{aaa}",
    "${aaa",
    "${{aaa",
    "${FOO=aaa}",
    "${FOO=:aaa}",
    "${FOO=}",
    "${XXX:-${PWD}",
]


@pytest.mark.parametrize(("word", "expected"), PROCESS_WORD)
def test_expand(word, expected):
    assert expand(word, ENV) == expected


@pytest.mark.parametrize("word", PROCESS_WORD_ERRORS)
def test_expand_errors(word):
    with pytest.raises(UsageError) as e:
        expand(word, ENV, where="Cf:7")
    assert str(e.value).startswith("Cf:7: ")
    assert "\n" not in str(e.value)


def test_required_variable_message():
    # lex_test.go TestShellParserMandatoryEnvVars: the message is substituted too.
    with pytest.raises(UsageError) as e:
        expand("${VAR:?message here$ARG}", {"VAR": "", "ARG": "x"}, where="Cf:3")
    assert str(e.value).startswith("Cf:3: ")
    assert "VAR: message herex" in str(e.value)
    assert expand("${VAR?message}", {"VAR": ""}) == ""


# lex_test.go TestProcessWithMatches: the pattern modifiers.
PATTERNS = [
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    (
        "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
        {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
        "/foo.*/*.txt - /foo..*.txt",
    ),
    (
        "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
        {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
        "/tmp/bar.txt - /bar.txt",
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
        {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"},
        "/foo/b/c.txt - /foo/c.txt",
    ),
    (
        "${FOO/$NEEDLE/$REPLACEMENT}",
        {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
        "https://google.de",
    ),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO///}", {}, ""),
    # The reference's examples.
    ("${str#f*b}", {"str": "foobarbaz"}, "arbaz"),
    ("${str##f*b}", {"str": "foobarbaz"}, "az"),
    ("${string%b*}", {"string": "foobarbaz"}, "foobar"),
    ("${string%%b*}", {"string": "foobarbaz"}, "foo"),
    ("${string/ba/fo}", {"string": "foobarbaz"}, "fooforbaz"),
    ("${string//ba/fo}", {"string": "foobarbaz"}, "fooforfoz"),
    # lex_test.go TestProcessWithMatchesPlatform.
    (
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
        {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"},
        "something-v1.2.3.linux-arm-v7.tar.gz",
    ),
    ("${V//*/x}", {"V": "abc"}, "x"),
    ("${V///-}", {"V": "ab"}, "-a-b-"),
    ("${V/a*c/-}", {"V": "xabcabcx"}, "x-x"),
    ("${V%a?c}", {"V": "abcabc"}, "abc"),
]


@pytest.mark.parametrize(("word", "env", "expected"), PATTERNS)
def test_pattern_modifiers(word, env, expected):
    assert expand(word, env) == expected


@pytest.mark.parametrize("word", ["${FOO//ww}", "${FOO//}", "${FOO#\\x}", "${FOO#a\\}"])
def test_pattern_errors(word):
    with pytest.raises(UsageError):
        expand(word, {"FOO": "xxyy"})


def test_reference_examples():
    # Dockerfile reference, "Environment replacement".
    env = {"FOO": "/bar"}
    assert expand("${FOO}", env) == "/bar"
    assert expand_words(". $FOO", env) == [".", "/bar"]
    assert expand_words("\\$FOO /quux", env) == ["$FOO", "/quux"]
    assert expand("${foo}_bar", {"foo": "x"}) == "x_bar"


def test_backtick_escape():
    assert expand("`$FOO a`\\b", {"FOO": "x"}, "`") == "$FOO a\\b"
    assert expand('"`"`$"', {}, "`") == '"$'
    assert expand_words("a` b c", {}, "`") == ["a b", "c"]


# BuildKit's shell/wordsTest (ProcessWords).
WORDS_ENV = {"hi": "hi", "space": "abc  def", "leading": "  ab c", "trailing": "ab c   ", "e": ""}
PROCESS_WORDS = [
    ("hello", ["hello"]),
    ("hello${hi}bye", ["hellohibye"]),
    ("hello${space}bye", ["helloabc", "defbye"]),
    ('hello"${space}"bye', ["helloabc  defbye"]),
    ('hello "${space}"bye', ["hello", "abc  defbye"]),
    ("hello${leading}def", ["hello", "ab", "cdef"]),
    ('hello"${leading}" def', ["hello  ab c", "def"]),
    ("hello${leading}", ["hello", "ab", "c"]),
    ("hello${trailing}", ["helloab", "c"]),
    ("hello${trailing}d", ["helloab", "c", "d"]),
    ('hello"${trailing}"d', ["helloab c   d"]),
    ("  a   b  ", ["a", "b"]),
    ("a\\ b c", ["a b", "c"]),
    ("'a  b' c", ["a  b", "c"]),
    ("$e a $e", ["a"]),  # an unquoted empty variable leaves no word
    ('"" a', ["a"]),  # nor does an empty quoted word, in BuildKit
    ("x${e}y", ["xy"]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), PROCESS_WORDS)
def test_expand_words(text, expected):
    assert expand_words(text, WORDS_ENV) == expected


def test_expand_heredoc_keeps_quotes():
    body = "name='$NAME' \"${NAME}\" \\$x \\\\\n"
    assert expand_heredoc(body, {"NAME": "n"}) == "name='n' \"n\" $x \\\n"


# --- key_values -----------------------------------------------------------------------------


def kv(line: str, env: dict[str, str] | None = None):
    return key_values(one(line + "\n"), env or {})


def test_key_values_modern_and_legacy():
    assert kv("ENV a=1 b=\"x y\" c='$z' d=$z e=\\$z f=", {"z": "Z"}) == [
        ("a", "1"),
        ("b", "x y"),
        ("c", "$z"),
        ("d", "Z"),
        ("e", "$z"),
        ("f", ""),
    ]
    # Legacy: the value is the rest of the line, substituted as one word.
    assert kv("ENV a  b c  $z", {"z": "Z"}) == [("a", "b c  Z")]
    assert kv('ENV a "b c" d') == [("a", "b c d")]
    assert kv("LABEL version 1.0") == [("version", "1.0")]
    assert kv('LABEL "com.example.vendor"="ACME Inc" multi.label="a b"') == [
        ("com.example.vendor", "ACME Inc"),
        ("multi.label", "a b"),
    ]
    assert kv("ENV ${K}=v", {"K": "key"}) == [("key", "v")]


def test_key_values_continuation():
    (inst,) = stage0(
        'FROM x\nLABEL description="This text illustrates \\\n'
        'that label-values can span multiple lines."\n'
    )
    assert key_values(inst, {}) == [
        ("description", "This text illustrates that label-values can span multiple lines.")
    ]


def test_key_values_sees_env_before_the_instruction():
    # The reference: ENV abc=hello / ENV abc=bye def=$abc / ENV ghi=$abc.
    insts = stage0("FROM x\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n")
    env: dict[str, str] = {}
    for inst in insts:
        for k, v in key_values(inst, env):
            assert v is not None
            env = {**env, k: v}
    assert env == {"abc": "bye", "def": "hello", "ghi": "bye"}


def test_key_values_arg():
    assert kv("ARG name") == [("name", None)]
    assert kv("ARG a=1 b c=$a", {"a": "A"}) == [("a", "1"), ("b", None), ("c", "A")]
    assert kv('ARG msg="hello world" empty=') == [("msg", "hello world"), ("empty", "")]
    assert kv("ARG ${N}=1", {"N": "n"}) == [("n", "1")]


def test_key_values_backtick_escape():
    cf = parse("# escape=`\nFROM x\nENV a=`$b c=d` e\n", "Cf")
    assert key_values(cf.stages[0].instructions[0], {"b": "B"}, cf.escape) == [
        ("a", "$b"),
        ("c", "d e"),
    ]


@pytest.mark.parametrize(
    ("line", "env", "fragment"),
    [
        ("ENV ${E}=1", {}, "invalid ENV name ''"),
        ("ARG ${E}", {}, "invalid ARG name ''"),
        ("ENV ${K}=1", {"K": "a=b"}, "invalid ENV name 'a=b'"),
        ('ENV a="${X:?set X}"', {}, "X: set X"),
        ("ARG a='unterminated", {}, "cannot substitute"),
    ],
)
def test_key_values_errors(line, env, fragment):
    with pytest.raises(UsageError) as e:
        kv(line, env)
    assert str(e.value).startswith("Cf:2: ")
    assert fragment in str(e.value)


# --- Commands, run by a real /bin/sh ---------------------------------------------------------


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, env={"PATH": os.environ["PATH"], **(env or {})},
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_shell_and_exec_forms():
    assert shell_or_exec(one("RUN echo $HOME\n"), SH) == [*SH, "echo $HOME"]
    assert shell_or_exec(one('CMD ["a", "b"]\n'), SH) == ["a", "b"]
    assert shell_or_exec(one("ENTRYPOINT exec top -b\n"), ["/bin/bash", "-c"]) == [
        "/bin/bash",
        "-c",
        "exec top -b",
    ]
    assert run(shell_or_exec(one("RUN echo $HOME\n"), SH), {"HOME": "/h"}) == "/h\n"


def test_run_heredoc_alone_is_the_script():
    inst = one('RUN <<EOF\nset -e\nx=1\necho "$x $HOME"\nEOF\n')
    argv = shell_or_exec(inst, SH)
    assert argv == [*SH, 'set -e\nx=1\necho "$x $HOME"\n']
    assert run(argv, {"HOME": "/h"}) == "1 /h\n"


def test_run_heredoc_with_command():
    inst = one("RUN cat <<EOF\n$HOME 'q' \\$x\nEOF\n")
    assert run(shell_or_exec(inst, SH), {"HOME": "/h"}) == "/h 'q' $x\n"
    inst = one("RUN cat <<'EOF'\n$HOME\nEOF\n")
    assert run(shell_or_exec(inst, SH), {"HOME": "/h"}) == "$HOME\n"
    inst = one('RUN python3 <<"EOF"\nprint(6 * 7)\nEOF\n')
    assert run(shell_or_exec(inst, SH)) == "42\n"


def test_run_several_heredocs(tmp_path):
    inst = one(
        f"RUN <<FILE1 cat > {tmp_path}/f1 && <<-FILE2 cat > {tmp_path}/f2\n"
        "I am\nfirst\nFILE1\n\tI am\n\tsecond\n\tFILE2\n"
    )
    run(shell_or_exec(inst, SH))
    assert (tmp_path / "f1").read_text() == "I am\nfirst\n"
    assert (tmp_path / "f2").read_text() == "I am\nsecond\n"


def test_run_heredoc_shebang():
    inst = one('RUN <<EOF\n#!/usr/bin/env python3\nimport sys\nprint("py", sys.argv[1:])\nEOF\n')
    assert run(shell_or_exec(inst, SH)) == "py []\n"
    inst = one("RUN <<'EOF'\n#!/bin/sh -e\necho \"$0\" $-\nfalse\necho not reached\nEOF\n")
    result = subprocess.run(shell_or_exec(inst, SH), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stdout.startswith("/dev/fd/3 ")
    assert "e" in result.stdout.split()[1]


# --- Hostile input: a clear error, quickly ---------------------------------------------------


def timed(fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        assert time.monotonic() - start < 2.0


def test_hostile_ten_megabyte_line():
    with pytest.raises(UsageError) as e:
        timed(parse, "FROM x\nRUN " + "a" * (10 << 20) + "\n", "Cf")
    assert str(e.value).startswith("Cf:1: ") and "larger than 4 MiB" in str(e.value)
    with pytest.raises(UsageError) as e:
        timed(parse, "FROM x\n\nRUN " + "a" * (3 << 20) + "\n", "Cf")
    assert str(e.value).startswith("Cf:3: ") and "longer than 1 MiB" in str(e.value)


def test_hostile_line_counts():
    assert timed(parse, "#\n" * 1_000_000 + "\n" * 1_000_000 + "FROM x\n", "Cf").stages
    with pytest.raises(UsageError) as e:
        timed(parse, "FROM x\n" + "RUN a\n" * 20_000, "Cf")
    assert str(e.value).startswith("Cf:10001: ") and "more than 10000 instructions" in str(e.value)


def test_hostile_many_continuations():
    text = "FROM x\nRUN echo \\\n" + "a \\\n" * 100_000 + "end\n"
    (inst,) = timed(parse, text, "Cf").stages[0].instructions
    assert inst.rest.endswith("a a end") and inst.line == 2
    with pytest.raises(UsageError) as e:
        timed(parse, "FROM x\nRUN \\\n" + "aaaaaaaaaaaaaaaaaaa \\\n" * 100_000, "Cf")
    assert str(e.value).startswith("Cf:2: ")


def test_hostile_deep_nesting():
    deep = "${A:-" * 100_000 + "x" + "}" * 100_000
    with pytest.raises(UsageError) as e:
        timed(expand, deep, {}, where="Cf:9")
    assert str(e.value).startswith("Cf:9: ") and "nested more than 64 deep" in str(e.value)
    quoted = '${A:-"' * 100_000 + "x" + '"}' * 100_000
    with pytest.raises(UsageError):
        timed(expand, quoted, {})
    assert expand("${A:-" * 60 + "x" + "}" * 60, {}) == "x"


def test_hostile_deep_json():
    assert timed(one, "CMD " + "[" * 100_000 + "\n").json is None
    assert timed(one, "CMD " + "[" * 50_000 + "]" * 50_000 + "\n").json is None


def test_hostile_huge_heredoc():
    body = ("x" * 100 + "\n") * 35_000
    inst = timed(one, "RUN <<EOF\n" + body + "EOF\n")
    assert inst.heredocs[0].content == body
    with pytest.raises(UsageError) as e:
        timed(parse, "FROM x\nRUN <<EOF\n" + body, "Cf")
    assert str(e.value).startswith("Cf:2: ")


def test_hostile_substitution_sizes():
    big = "a" * (1 << 20)
    assert timed(expand, big + "$X", {"X": "b"}) == big + "b"
    assert timed(expand, "$$" * 200_000, {}) == ""
    assert len(timed(expand_words, "a " * 300_000, {})) == 300_000
    # Globs are placed segment by segment: no backtracking blow-up.
    env = {"V": "a" * 100_000}
    assert timed(expand, "${V#*a*a*a*a*a*a*a*a*a*a*c}", env) == env["V"]
    assert timed(expand, "${V%%a*a*a*a*a*a*b}", env) == env["V"]
    assert timed(expand, "${V//a?a/b}", env) == "b" * 33_333 + "a"
