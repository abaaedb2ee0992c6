"""The data assets musicrec's DAGs produce and consume, defined once so producers and consumers agree.

A DAG that writes one lists it in a task's ``outlets``; a DAG that should run after it is scheduled on it
(``schedule=[FEATURES]``). The URIs name logical datasets; where they live is in the settings.
"""

from __future__ import annotations

from airflow.sdk import Asset

# The catalogue manifest (Parquet): one row per track, written by catalogue imports.
MANIFEST = Asset(name="musicrec_manifest", uri="musicrec://catalogue/manifest")

# The feature store (Parquet, one folder per feature version), written by `build_features`.
# Each event's ``extra`` says which version changed and how many rows it holds.
FEATURES = Asset(name="musicrec_features", uri="musicrec://features")
CHAMPION = Asset(name="musicrec_champion", uri="musicrec://model/champion")  # new champion (train_triplet_model)

# The collection behind the alias ``tracks`` (Milvus), announced by `refresh_index` after every switch.
TRACK_INDEX = Asset(name="musicrec_track_index", uri="musicrec://index/tracks")
