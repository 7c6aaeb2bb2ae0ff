"""Reading and writing results files: BOP19 pose CSV, BOP22 COCO JSON, category JSON, timings CSV.

Writers validate first and write atomically; readers are strict and report problems as
:class:`~repro.errors.DataFormatError` with the file and the line (CSV) or ``[i].field`` (JSON).
"""

from repro.results.bop_csv import (
    BOP_CSV_HEADER,
    BopResultArrays,
    BopResultRow,
    bop_rows_from_estimates,
    read_bop_csv,
    read_bop_csv_arrays,
    write_bop_csv,
)
from repro.results.category import (
    CATEGORY_FORMAT,
    CategoryImageResult,
    category_image_from_estimates,
    read_category_results,
    write_category_results,
)
from repro.results.coco import (
    CocoResult,
    coco_result_from_estimate,
    coco_results_from_estimates,
    mask_bbox,
    mask_to_rle,
    read_coco_results,
    rle_to_mask,
    write_coco_results,
)
from repro.results.timings import (
    TIMINGS_CSV_HEADER,
    TimingRow,
    read_timings_csv,
    timing_rows,
    timings_by_image,
    write_timings_csv,
)

__all__ = [
    "BOP_CSV_HEADER",
    "CATEGORY_FORMAT",
    "TIMINGS_CSV_HEADER",
    "BopResultArrays",
    "BopResultRow",
    "CategoryImageResult",
    "CocoResult",
    "TimingRow",
    "bop_rows_from_estimates",
    "category_image_from_estimates",
    "coco_result_from_estimate",
    "coco_results_from_estimates",
    "mask_bbox",
    "mask_to_rle",
    "read_bop_csv",
    "read_bop_csv_arrays",
    "read_category_results",
    "read_coco_results",
    "read_timings_csv",
    "rle_to_mask",
    "timing_rows",
    "timings_by_image",
    "write_bop_csv",
    "write_category_results",
    "write_coco_results",
    "write_timings_csv",
]
