"""The track index: one Milvus collection per model version behind the alias ``tracks``.

``milvus`` is the small service over pymilvus, ``lite_server`` runs Milvus Lite as a server so several
processes can share one data folder, ``models`` resolves which embedder made (and must query) a
collection, and ``refresh`` is the blue/green refresh step.
"""
