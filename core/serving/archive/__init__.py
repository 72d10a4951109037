"""Screening an archive: one row per file, on this machine or on a Ray cluster, resumable.

A job reads every image file under a source folder (or those a manifest lists), screens each as
``Predictor.screen`` does, and writes one row per file into part files under an output folder,
one job at a time (``store``). Each run of a job writes into its own ``run-…`` folder; ``resume``
continues only the same job (``job.IDENTITY``: the same files, model file, site profile, operating
point, format and path column) and screens only the files that no counted part holds, so that no
file is ever skipped, mixed with another job's rows, or counted twice.

Modules: ``parts`` (the rows' schema and files), ``listing`` (the files and their rows' keys),
``store`` (the output folder's lock, runs and markers), ``screener`` (files to rows, with the
driver's model), ``local`` and ``cluster`` (the engines), ``job`` (the checks and the run).
"""
from core.serving.archive import local, store
from core.serving.archive.job import BATCH_SIZE, ENGINES, JobSummary, screen_archive
from core.serving.archive.listing import PATH_COLUMNS, RowKeys, Source, list_sources
from core.serving.archive.parts import COLUMNS, FORMATS, SCHEMA
from core.serving.archive.screener import ArchiveScreener, JobSpec
from core.serving.archive.store import COMPLETE, SEALED, SET_ASIDE, read_results, runs
from core.serving.errors import JobError

__all__ = [
           "BATCH_SIZE",
           "COLUMNS",
           "COMPLETE",
           "ENGINES",
           "FORMATS",
           "PATH_COLUMNS",
           "SCHEMA",
           "SEALED",
           "SET_ASIDE",
           "ArchiveScreener",
           "JobError",
           "JobSpec",
           "JobSummary",
           "RowKeys",
           "Source",
           "list_sources",
           "local",
           "read_results",
           "runs",
           "screen_archive",
           "store",
]
