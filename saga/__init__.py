"""SAGA: a program-level scheduler for agentic LLM inference on SGLang GPU clusters.

One namespace maps the project's top-level folders: ``saga.scheduler`` (``scheduler/``),
``saga.graphs`` (``graphs/``) and ``saga.operator`` (``operator/``) are symlinked into
``saga/`` so that no top-level package shadows the standard library's ``operator``.
"""

__version__ = "0.1.0"
