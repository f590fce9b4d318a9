"""The data layer: corpus registry and downloads, tokenisation, cached preparation, batching.

Modules: :mod:`~lineage.data.sources` (registry, verified downloads),
:mod:`~lineage.data.tokenizers`, :mod:`~lineage.data.prepare` (cached token ids and vocabulary),
:mod:`~lineage.data.windows` (:class:`~lineage.interface.TokenBatch` batching),
:mod:`~lineage.data.corpus` (the Lightning data module) and :mod:`~lineage.data.cli` (the
``lineage-data`` command). Heavy imports (torch, Lightning) stay in the submodules that need them.
"""
