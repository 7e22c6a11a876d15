"""The command lines: one module per script (``extract``, ``classify``, ``finetune``, ``predict``, ``export``,
``ensemble``, ``report``), each with ``build_parser()`` and ``main(argv=None)``, over what they share
(:mod:`features.cli.common`: logging, error exits, the JSON last line, flags rendered from parameters).

The top-level ``extract.py`` and the others, and the installed ``tl-extract`` and the others, call these.
"""
