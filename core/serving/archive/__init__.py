"""Screening an archive: one row per file, on this machine or on a Ray cluster, resumable.

A job reads every image file under a source folder (or those a manifest lists), screens each as
``Predictor.screen`` does, and writes one row per file into part files under an output folder,
one job at a time (``store``). Each run of a job writes into its own ``run-…`` folder; ``resume``
continues only the same job (``job.IDENTITY``: the same files, model file, site profile, operating
point, format and path column) and screens only the files that no counted part holds, so that no
file is ever skipped, mixed with another job's rows, or counted twice.

Modules: ``rows`` (the columns), ``parts`` (their Arrow schema and files), ``listing`` (the files
and their rows' keys), ``store`` (the output folder's lock, runs and markers), ``screener`` (files to
rows, with the driver's model), ``local`` and ``cluster`` (the engines), ``job`` (the checks and the
run), ``rethreshold`` (a job's rows at a site profile's points, without a forward pass).
"""
import importlib

# Public names and their modules, imported on first use (PEP 562): a Ray actor imports only the
# screener, so it never loads pyarrow, which the parts and the job need.
_EXPORTS = {"BATCH_SIZE": "job", "ENGINES": "job", "JobSummary": "job", "screen_archive": "job",
            "PATH_COLUMNS": "listing", "RowKeys": "listing", "Source": "listing", "list_sources": "listing",
            "FORMATS": "parts", "SCHEMA": "parts", "COLUMNS": "rows",
            "ArchiveScreener": "screener", "JobSpec": "screener",
            "COMPLETE": "store", "SEALED": "store", "SET_ASIDE": "store", "read_results": "store", "runs": "store",
            "JobError": "core.serving.errors", "local": "local", "store": "store"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name] if "." in _EXPORTS[name] else f"{__name__}.{_EXPORTS[name]}")
    return module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
