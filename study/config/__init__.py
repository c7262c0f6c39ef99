"""What to run: the run config, the study file, grid expansion and the search space."""

from study.config.expand import PlannedRun, expand, parse_overrides, plan
from study.config.run_config import HASH_EXCLUDED_KEYS, RunConfig, config_keys, flatten, make_config
from study.config.search_space import SearchSpec
from study.config.study_file import StudySpec, list_presets, list_studies, load_preset, load_study

__all__ = [
    "HASH_EXCLUDED_KEYS", "PlannedRun", "RunConfig", "SearchSpec", "StudySpec", "config_keys", "expand",
    "flatten", "list_presets", "list_studies", "load_preset", "load_study", "make_config", "parse_overrides",
    "plan",
]
