"""The command line: parse, call the library, print. Nothing outside this package imports it
(tests/test_layering.py); ``bin/tophan`` and ``python -m tophan`` start it through
``tophan.cli.main.launch``, ``bin/overlayd`` through ``overlayd_main``.

Modules: ``main`` (dispatch, shared option parsing, store/layer/ws commands), ``run``
(``tophan run``), ``app`` (``tophan app``, ``tophan volume``), ``image`` (``tophan image``,
``push``, ``pull``). Not an API: import the library instead.
"""
