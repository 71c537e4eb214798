"""The update pipeline: ordered stages between what a hospital trained and what the strategy
aggregates (clipping now; DP noise, compression and secure-aggregation masks are further stages).
See fedsim.pipeline.base."""

from fedsim.pipeline.base import STAGES, HospitalContext, Pipeline, StageConfig, UpdateStage, build_pipeline

__all__ = ["STAGES", "HospitalContext", "Pipeline", "StageConfig", "UpdateStage", "build_pipeline"]
