"""The command lines: one module per script, each with ``build_parser()`` and ``main(argv=None)``, over what they
share (:mod:`.common`: logging, error exits, the JSON last line, flags rendered from parameters).

* :mod:`.extract`, :mod:`.classify`, :mod:`.finetune`: the three jobs.
* :mod:`.predict`, :mod:`.export`, :mod:`.ensemble`: what is done with their runs.
* :mod:`.report`, :mod:`.audit`: RESULTS.md from the results table; the photos' audit from a cache.
* :mod:`.app`: the local web app over the runs and the audit.
* :mod:`.best`: the best classifier a time budget allows (:mod:`features.budget`).

The top-level ``extract.py`` and the others, and the installed ``tl-extract`` and the others, call these.
"""
