"""The columns of an archive's rows, without pyarrow: a Ray actor that makes rows never loads it
(about 40 MB of a worker's memory); the parts' Arrow schema is built from these (``parts``)."""

# One row per input file, the same for both engines: (column, Arrow type). Never pixels, never
# DICOM patient tags; the path column is what --path-column makes of the file's path
# (core.serving.archive.listing). What site calibration needs is kept too: the image file's sha256
# and the model's raw output (before calibration) with how it was made (Predictor.raw_recipe), with the clinic's diagnosis and patient columns
# left empty (core.analysis.site_calibration); --rethreshold rescores rows from raw_output alone.
FIELDS = (("path", "string"), ("input_kind", "string"), ("probability", "double"), ("label", "string"),
          ("operating_point", "string"), ("threshold", "double"), ("model", "string"), ("model_sha256", "string"),
          ("site", "string"), ("warnings", "string"), ("error", "string"), ("image_sha256", "string"),
          ("raw_output", "double"), ("raw_recipe", "string"), ("diagnosis", "string"), ("patient", "string"))
COLUMNS = tuple(name for name, _ in FIELDS)
