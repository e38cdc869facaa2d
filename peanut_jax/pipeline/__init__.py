"""Stage runners (jitted window functions + host-side streaming) and the end-to-end orchestrator.

Each stage module exposes ``register_cli(subparsers)`` so that ``infer.py`` can offer it as a
sub-command; see ``infer.py``.
"""
