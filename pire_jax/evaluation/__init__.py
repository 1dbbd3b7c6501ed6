"""Retrieval quality (mAP, mP@k) and image quality (SSIM, PSNR, L-infinity)."""

from pire_jax.evaluation.image_quality import linf_grey_levels, psnr, ssim
from pire_jax.evaluation.mean_average_precision import (
    DEFAULT_KAPPAS,
    MapResult,
    average_precision,
    compute_map,
    evaluate_ranks,
)
